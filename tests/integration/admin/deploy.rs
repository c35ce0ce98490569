//! The deployment files: Grafana JSON, configurations that pass check-config, promtool on the
//! alerting rules, and metric names that exist and are documented.

use serde_json::Value;

/// The repository root.
fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Every `meridian_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meridian_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Alerts and the Grafana dashboard only use metrics a live Meridian exports, and docs/metrics.md
/// documents every family it exports.
pub fn check_names_against(scrape: &str) {
    let exported: std::collections::BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/meridian.json",
    ] {
        let text = std::fs::read_to_string(repo(file)).expect("read");
        for name in metric_names(&text) {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which Meridian does not export"
            );
        }
    }
    let docs = std::fs::read_to_string(repo("docs/metrics.md")).expect("docs/metrics.md");
    for line in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let family = line.split(' ').next().unwrap_or_default();
        assert!(
            docs.contains(&format!("`{family}`")),
            "docs/metrics.md lacks {family}"
        );
    }
}

#[test]
fn deploy_files_check_out() {
    let grafana = std::fs::read_to_string(repo("deploy/grafana/meridian.json")).expect("read");
    let dash: Value = serde_json::from_str(&grafana).expect("grafana dashboard is JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() > 10));

    // The configurations shipped for compose and Kubernetes pass check-config.
    let k8s = std::fs::read_to_string(repo("deploy/kubernetes/sidecar.yaml")).expect("read");
    let embedded: String = k8s
        .lines()
        .skip_while(|l| !l.contains("meridian.toml: |"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = std::env::temp_dir().join(format!("meridian-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let k8s_toml = dir.join("sidecar.toml");
    std::fs::write(&k8s_toml, embedded).expect("write");
    for path in [repo("deploy/docker/meridian.toml"), k8s_toml] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("check-config")
            .arg(&path)
            .env("APP_PASSWORD", "x")
            .env("MERIDIAN_MONITOR_PASSWORD", "x")
            .env("MERIDIAN_ADMIN_TOKEN", "x")
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    let prometheus = repo("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let Ok(out) = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&prometheus)
            .output()
        else {
            eprintln!(
                "notice: promtool is not installed; skipping `promtool {}`",
                args.join(" ")
            );
            return;
        };
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

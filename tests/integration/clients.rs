//! Real command-line clients through Meridian: psql and pgbench.

use std::process::Command;

use meridian_testkit::creds;

use crate::support::Env;

fn bin(env: &Env, name: &str) -> std::path::PathBuf {
    env.cluster.bin().path(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_queries_and_reports_errors() {
    let env = Env::start(1).await;
    let out = Command::new(bin(&env, "psql"))
        .arg(env.url())
        .args([
            "-X",
            "-At",
            "-c",
            "SELECT 40 + 2",
            "-c",
            "SELECT current_user",
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\napp\n");

    let out = Command::new(bin(&env, "psql"))
        .arg(env.url())
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=0"])
        .args(["-c", "SELECT 1/0", "-c", "SELECT 'after'"])
        .output()
        .expect("psql runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");

    // md5 to Meridian, as configured for this user.
    let out = Command::new(bin(&env, "psql"))
        .arg(env.url_for(creds::MD5_USER, creds::MD5_PASSWORD))
        .args(["-X", "-At", "-c", "SELECT current_user"])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app_md5\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initializes_and_runs_without_errors() {
    let env = Env::start(1).await;
    let pgbench = |args: &[&str]| env.pgbench(args);
    pgbench(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let text = pgbench(&["-c", "4", "-j", "2", "-t", "200", "-M", mode]);
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of transactions actually processed: 800/800"),
            "{text}"
        );
    }
    // Rows written through Meridian are really on the primary (pgbench truncates the history
    // table before each run, so this is the last run's 800).
    let count = env.primary_sql("SELECT count(*) FROM pgbench_history");
    assert_eq!(count, "800");
    let text = pgbench(&["-S", "-c", "4", "-t", "500", "-M", "prepared"]);
    assert!(text.contains("2000/2000"), "{text}");
}

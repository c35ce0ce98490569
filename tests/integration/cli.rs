//! The `meridian` command line.

use std::process::Command;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

#[test]
fn check_config_accepts_the_example_with_its_env_vars() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/meridian.example.toml"
    );
    let out = meridian()
        .args(["check-config", example])
        .env("REPORTING_DB_PASSWORD", "x")
        .env("MERIDIAN_MONITOR_PASSWORD", "y")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_the_offending_key() {
    let dir = tempfile_dir();
    let cases = [
        ("[proxy]\nlisten = \"nowhere\"\n", "proxy.listen"),
        ("[proxy]\nlsten = \"127.0.0.1:1\"\n", "lsten"),
        (
            "[proxy]\nmax_message_bytes = \"big\"\n",
            "max_message_bytes",
        ),
    ];
    for (i, (bad, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        let text = format!(
            "{bad}\n[[users]]\nname = \"app\"\npassword = \"x\"\n\n[monitor]\nuser = \"postgres\"\npassword = \"x\"\n\n[[nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n"
        );
        std::fs::write(&path, text).expect("write");
        let out = meridian()
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{bad} should be rejected");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key),
            "error for {bad:?} should name {key}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

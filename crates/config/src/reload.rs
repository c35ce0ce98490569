//! Live configuration: a shared handle the running proxy reads through (lock-free), and the
//! comparison of two configuration files that tells a reload which keys changed and which of
//! those only take effect after a restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Config;

/// The configuration in force, shared by every part of the proxy. A reload swaps in a new
/// `Config` as a whole; readers take a snapshot with `load` and never see half of a reload.
#[derive(Clone)]
pub struct ConfigHandle(Arc<ArcSwap<Config>>);

impl ConfigHandle {
    /// A handle starting with `config`.
    pub fn new(config: Config) -> Self {
        ConfigHandle(Arc::new(ArcSwap::from_pointee(config)))
    }

    /// The current configuration (cheap; do not hold it across an `.await`).
    pub fn load(&self) -> arc_swap::Guard<Arc<Config>> {
        self.0.load()
    }

    /// The current configuration as an owned `Arc`, to keep.
    pub fn load_full(&self) -> Arc<Config> {
        self.0.load_full()
    }

    /// Replaces the configuration.
    pub fn store(&self, config: Config) {
        self.0.store(Arc::new(config));
    }
}

impl std::fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConfigHandle").finish_non_exhaustive()
    }
}

/// Keys (or key prefixes) a reload applies to the running proxy. Every other key needs a
/// restart; docs/operations.md ("Reloading") lists both sets.
pub const LIVE_KEYS: &[&str] = &[
    "proxy.admin_token",
    "proxy.admin_token_env",
    "proxy.admin_token_file",
    "proxy.region",
    "proxy.max_message_bytes",
    "proxy.max_client_connections",
    "proxy.startup_timeout_ms",
    "proxy.connect_timeout_ms",
    "proxy.client_idle_timeout_ms",
    "proxy.idle_in_transaction_timeout_ms",
    "proxy.shutdown_timeout_ms",
    "proxy.auth_failure_limit",
    "proxy.auth_failure_window_s",
    "proxy.auto_prepare",
    "proxy.auto_prepare_min_uses",
    "proxy.auto_prepare_max_statements",
    "users",
    "monitor",
    "nodes",
    "routing.passthrough",
    "routing.read_replicas",
    "routing.max_replica_lag_bytes",
    "routing.max_replica_lag_ms",
    "routing.latency_tolerance_ms",
    "routing.balance",
    "routing.read_only_functions",
    "routing.write_functions",
    "routing.function_refresh_s",
    "tls.upstream",
    "consistency",
    "failover",
];

/// Whether a change to `key` applies without a restart.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| {
        key == *live
            || key
                .strip_prefix(live)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// What a reload found between two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed keys that apply now.
    pub changed: Vec<String>,
    /// Changed keys that keep their running value until Meridian is restarted.
    pub restart_required: Vec<String>,
}

/// Compares configurations. `started` is the file the process started with, `last` the one
/// applied last and `next` the new one (each as parsed TOML); `last_cfg`/`next_cfg` are the
/// validated forms, compared for secrets that come from the environment or from files (their
/// key names stay the same while the value changes).
pub fn changes(
    started: &toml::Value,
    last: &toml::Value,
    next: &toml::Value,
    last_cfg: &Config,
    next_cfg: &Config,
) -> Changes {
    let mut changed = BTreeSet::new();
    let mut restart = BTreeSet::new();
    for key in differing(last, next) {
        if is_live(&key) {
            changed.insert(key);
        }
    }
    for key in differing(started, next) {
        if !is_live(&key) {
            restart.insert(key);
        }
    }
    let secrets = |c: &Config| -> Vec<(String, Option<String>)> {
        c.users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect()
    };
    if secrets(last_cfg) != secrets(next_cfg) {
        changed.insert("users".into());
    }
    if last_cfg.monitor.password != next_cfg.monitor.password {
        changed.insert("monitor.password".into());
    }
    if last_cfg.proxy.admin_token != next_cfg.proxy.admin_token {
        changed.insert("proxy.admin_token".into());
    }
    // A secret key listed next to its own section adds nothing.
    let covered: Vec<String> = changed
        .iter()
        .filter(|k| {
            changed
                .iter()
                .any(|other| *k != other && k.starts_with(&format!("{other}.")))
        })
        .cloned()
        .collect();
    for k in covered {
        changed.remove(&k);
    }
    Changes {
        changed: changed.into_iter().collect(),
        restart_required: restart.into_iter().collect(),
    }
}

/// Dotted keys whose values differ. Tables are compared key by key; arrays (`users`, `nodes`,
/// function lists) as a whole.
fn differing(a: &toml::Value, b: &toml::Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", a, b, &mut out);
    out
}

fn diff_into(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let keys: BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
            for k in keys {
                // A table present on one side only counts as each of its keys changing.
                let empty = toml::Value::Table(toml::Table::new());
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => diff_into(&join(k), x, y, out),
                    (Some(x @ toml::Value::Table(_)), None) => diff_into(&join(k), x, &empty, out),
                    (None, Some(y @ toml::Value::Table(_))) => diff_into(&join(k), &empty, y, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (x, y) if x != y => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[proxy]
listen = "127.0.0.1:6432"
max_client_connections = 100

[[users]]
name = "app"
password = "one"

[monitor]
user = "postgres"
password = "pw"

[[nodes]]
name = "pg1"
host = "127.0.0.1"
port = 55432
"#;

    fn both(a: &str, b: &str) -> Changes {
        let (ra, rb): (toml::Value, toml::Value) = (
            toml::from_str(a).expect("toml"),
            toml::from_str(b).expect("toml"),
        );
        let ca = Config::from_toml(a).expect("valid");
        let cb = Config::from_toml(b).expect("valid");
        changes(&ra, &ra, &rb, &ca, &cb)
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let next = BASE
            .replace(
                "max_client_connections = 100",
                "max_client_connections = 5\nworker_threads = 3",
            )
            .replace("127.0.0.1:6432", "127.0.0.1:7000");
        let c = both(BASE, &next);
        assert_eq!(c.changed, vec!["proxy.max_client_connections"]);
        assert_eq!(
            c.restart_required,
            vec!["proxy.listen", "proxy.worker_threads"]
        );
    }

    #[test]
    fn users_nodes_and_sections_are_reported_by_key() {
        let next = format!(
            "{}\n[routing]\nwrite_functions = [\"f\"]\n[[nodes]]\nname = \"pg2\"\nhost = \"h\"\n",
            BASE.replace("password = \"one\"", "password = \"two\"")
        );
        let c = both(BASE, &next);
        assert_eq!(c.changed, vec!["nodes", "routing.write_functions", "users"]);
        assert!(c.restart_required.is_empty());
        assert_eq!(both(BASE, BASE), Changes::default());
    }

    #[test]
    fn new_unknown_sections_need_a_restart() {
        assert!(is_live("users"));
        assert!(is_live("routing.write_functions"));
        assert!(is_live("failover.check_interval_ms"));
        assert!(!is_live("routing.cache_max_entries"));
        assert!(!is_live("proxy.listen"));
        assert!(!is_live("proxy.listener"));
        assert!(!is_live("tls.cert_file"));
    }
}

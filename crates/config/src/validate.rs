//! Semantic checks run after parsing. Each error names the key at fault.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::{resolve_password, Config, ConfigError};

impl Config {
    /// Checks every value and resolves `password_env` into `password`, so later code reads
    /// `password` only.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        check_addr("proxy.listen", &self.proxy.listen)?;
        if let Some(dir) = &self.proxy.unix_socket_dir {
            if !dir.starts_with('/') {
                return Err(ConfigError::invalid(
                    "proxy.unix_socket_dir",
                    "must be an absolute path (a directory)",
                ));
            }
        }
        if let Some(admin) = &self.proxy.admin_listen {
            check_addr("proxy.admin_listen", admin)?;
        }
        self.proxy.admin_token = resolve_admin_token(
            self.proxy.admin_token.take(),
            self.proxy.admin_token_env.take(),
            self.proxy.admin_token_file.take(),
        )?;
        if self.proxy.auth_failure_limit > 0 && self.proxy.auth_failure_window_s == 0 {
            return Err(ConfigError::invalid(
                "proxy.auth_failure_window_s",
                "must be at least 1 (or set proxy.auth_failure_limit = 0 to disable the limit)",
            ));
        }
        if self.proxy.auto_prepare_min_uses == 0 {
            return Err(ConfigError::invalid(
                "proxy.auto_prepare_min_uses",
                "must be at least 1",
            ));
        }
        if self.proxy.auto_prepare_max_statements == 0 {
            return Err(ConfigError::invalid(
                "proxy.auto_prepare_max_statements",
                "must be at least 1 (or set proxy.auto_prepare = false)",
            ));
        }
        if self.proxy.max_message_bytes < 1024 {
            return Err(ConfigError::invalid(
                "proxy.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.proxy.max_client_connections == 0 {
            return Err(ConfigError::invalid(
                "proxy.max_client_connections",
                "must be at least 1",
            ));
        }
        if self.pool.pool_size == 0 {
            return Err(ConfigError::invalid("pool.pool_size", "must be at least 1"));
        }
        if self.pool.min_idle > self.pool.pool_size {
            return Err(ConfigError::invalid(
                "pool.min_idle",
                "must not exceed pool.pool_size",
            ));
        }
        for (i, user) in self.users.iter().enumerate() {
            if user.pool_size == Some(0) {
                return Err(ConfigError::invalid(
                    format!("users[{i}].pool_size"),
                    "must be at least 1",
                ));
            }
        }
        if self.users.is_empty() {
            return Err(ConfigError::invalid(
                "users",
                "at least one [[users]] entry is required",
            ));
        }
        let mut seen = HashSet::new();
        for (i, user) in self.users.iter_mut().enumerate() {
            let key = format!("users[{i}]");
            if user.name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must not be empty",
                ));
            }
            if !seen.insert(user.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("duplicate user {:?}", user.name),
                ));
            }
            user.password = Some(resolve_password(
                &key,
                &user.password,
                &user.password_env,
                &user.password_file,
            )?);
            user.password_env = None;
            user.password_file = None;
        }
        self.monitor.password = Some(resolve_password(
            "monitor",
            &self.monitor.password,
            &self.monitor.password_env,
            &self.monitor.password_file,
        )?);
        self.monitor.password_env = None;
        self.monitor.password_file = None;
        for (key, value) in [
            ("monitor.timeout_ms", self.monitor.timeout_ms),
            (
                "failover.check_interval_ms",
                self.failover.check_interval_ms,
            ),
            (
                "failover.failure_threshold",
                u64::from(self.failover.failure_threshold),
            ),
            (
                "failover.success_threshold",
                u64::from(self.failover.success_threshold),
            ),
            ("failover.hold_timeout_ms", self.failover.hold_timeout_ms),
            (
                "failover.promote_timeout_s",
                self.failover.promote_timeout_s,
            ),
            ("proxy.startup_timeout_ms", self.proxy.startup_timeout_ms),
            ("proxy.connect_timeout_ms", self.proxy.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.monitor.user.is_empty() {
            return Err(ConfigError::invalid("monitor.user", "must not be empty"));
        }
        if self.nodes.is_empty() {
            return Err(ConfigError::invalid(
                "nodes",
                "at least one [[nodes]] entry is required",
            ));
        }
        if self.nodes.len() > crate::MAX_NODES {
            return Err(ConfigError::invalid(
                "nodes",
                format!("at most {} [[nodes]] entries", crate::MAX_NODES),
            ));
        }
        let mut names = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let key = format!("nodes[{i}]");
            if node.name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must not be empty",
                ));
            }
            if !names.insert(node.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("duplicate node {:?}", node.name),
                ));
            }
            if node.host.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.host"),
                    "must not be empty",
                ));
            }
            if node.port == 0 {
                return Err(ConfigError::invalid(format!("{key}.port"), "must not be 0"));
            }
        }
        let r = &self.routing;
        if !(r.latency_tolerance_ms.is_finite() && r.latency_tolerance_ms >= 0.0) {
            return Err(ConfigError::invalid(
                "routing.latency_tolerance_ms",
                "must be a number >= 0",
            ));
        }
        if r.function_refresh_s == 0 {
            return Err(ConfigError::invalid(
                "routing.function_refresh_s",
                "must be at least 1",
            ));
        }
        if r.cache_max_entries == 0 {
            return Err(ConfigError::invalid(
                "routing.cache_max_entries",
                "must be at least 1",
            ));
        }
        for (key, list) in [
            ("routing.read_only_functions", &r.read_only_functions),
            ("routing.write_functions", &r.write_functions),
        ] {
            if let Some(i) = list.iter().position(|f| f.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    format!("{key}[{i}]"),
                    "function names must not be empty",
                ));
            }
        }
        crate::tls::validate(&self)?;
        Ok(self)
    }

    /// The user entry for `name`, if configured.
    pub fn user(&self, name: &str) -> Option<&crate::UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// `proxy.admin_token` / `proxy.admin_token_env` / `proxy.admin_token_file` resolved to the
/// token, if one is configured.
fn resolve_admin_token(
    token: Option<String>,
    env: Option<String>,
    file: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let token = match (token, env, file) {
        (None, None, None) => return Ok(None),
        (Some(t), None, None) => t,
        (None, Some(var), None) => std::env::var(&var).map_err(|_| {
            ConfigError::invalid(
                "proxy.admin_token_env",
                format!("environment variable {var} is not set"),
            )
        })?,
        (None, None, Some(path)) => crate::read_secret_file("proxy.admin_token_file", &path)?,
        _ => {
            return Err(ConfigError::invalid(
                "proxy.admin_token",
                "set only one of admin_token, admin_token_env and admin_token_file",
            ))
        }
    };
    if token.trim().is_empty() {
        return Err(ConfigError::invalid(
            "proxy.admin_token",
            "must not be empty",
        ));
    }
    Ok(Some(token))
}

fn check_addr(key: &str, value: &str) -> Result<(), ConfigError> {
    value.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("{value:?} is not an address of the form host:port (e.g. 127.0.0.1:6432)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:6432"
region = "eu"

[[users]]
name = "app"
password = "app-secret"

[monitor]
user = "postgres"
password = "pw"

[[nodes]]
name = "pg1"
host = "127.0.0.1"
port = 55432
"#;

    fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("config should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = Config::from_toml(GOOD).expect("valid");
        assert_eq!(c.proxy.region, "eu");
        assert_eq!(c.monitor.database, "postgres");
        assert_eq!(c.users[0].password.as_deref(), Some("app-secret"));
        assert_eq!(c.nodes[0].region, "local");
    }

    #[test]
    fn pool_section_with_durations() {
        let text = format!(
            "{GOOD}\n[pool]\npool_mode = \"transaction\"\npool_size = 5\nmin_idle = 2\nidle_timeout = \"10m\"\ncheckout_timeout = 250\n"
        );
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.pool.pool_mode, crate::PoolMode::Transaction);
        assert_eq!(c.pool.idle_timeout, crate::Millis(600_000));
        assert_eq!(c.pool.checkout_timeout, crate::Millis(250));
        let c = Config::from_toml(GOOD).expect("valid");
        assert_eq!(c.pool.pool_mode, crate::PoolMode::Session);
        assert_eq!(crate::Millis::parse("500ms"), Some(crate::Millis(500)));
        assert_eq!(crate::Millis::parse("30s"), Some(crate::Millis(30_000)));
        assert_eq!(crate::Millis::parse("30 parsecs"), None);
        let e = err(&format!("{GOOD}\n[pool]\ncheckout_timeout = \"soon\"\n"));
        assert!(
            e.contains("checkout_timeout") && e.contains("invalid duration"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[pool]\npool_size = 0\n"));
        assert!(e.starts_with("pool.pool_size"), "{e}");
        let e = err(&format!("{GOOD}\n[pool]\npool_size = 2\nmin_idle = 3\n"));
        assert!(e.starts_with("pool.min_idle"), "{e}");
        let e = err(&GOOD.replace(
            "password = \"app-secret\"",
            "password = \"x\"\npool_size = 0",
        ));
        assert!(e.starts_with("users[0].pool_size"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("region = \"eu\"", "regoin = \"eu\""));
        assert!(e.contains("regoin"), "{e}");
    }

    #[test]
    fn bad_listen_address_is_named() {
        let e = err(&GOOD.replace("127.0.0.1:6432", "nowhere"));
        assert!(e.starts_with("proxy.listen"), "{e}");
        let e = err(&GOOD.replace(
            "listen = \"127.0.0.1:6432\"",
            "listen = \"127.0.0.1:6432\"\nunix_socket_dir = \"run\"",
        ));
        assert!(e.starts_with("proxy.unix_socket_dir"), "{e}");
    }

    #[test]
    fn missing_password_env_is_named() {
        let e = err(&GOOD.replace(
            "password = \"app-secret\"",
            "password_env = \"MERIDIAN_TEST_SURELY_UNSET\"",
        ));
        assert!(e.starts_with("users[0].password_env"), "{e}");
    }

    #[test]
    fn duplicate_node_is_named() {
        let text = format!("{GOOD}\n[[nodes]]\nname = \"pg1\"\nhost = \"h\"\n");
        let e = err(&text);
        assert!(e.starts_with("nodes[1].name"), "{e}");
    }

    #[test]
    fn admin_token_forms() {
        let with =
            |extra: &str| GOOD.replace("region = \"eu\"", &format!("region = \"eu\"\n{extra}"));
        let c = Config::from_toml(&with("admin_token = \"s3cret\"")).expect("valid");
        assert_eq!(c.proxy.admin_token.as_deref(), Some("s3cret"));
        assert!(Config::from_toml(GOOD)
            .expect("valid")
            .proxy
            .admin_token
            .is_none());
        let e = err(&with("admin_token = \"  \""));
        assert!(e.starts_with("proxy.admin_token"), "{e}");
        let e = err(&with("admin_token_env = \"MERIDIAN_TEST_SURELY_UNSET\""));
        assert!(e.starts_with("proxy.admin_token_env"), "{e}");
        let e = err(&with("admin_token = \"a\"\nadmin_token_env = \"HOME\""));
        assert!(e.starts_with("proxy.admin_token"), "{e}");
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("meridian-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("app.pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let text = GOOD.replace(
            "password = \"app-secret\"",
            &format!("password_file = {:?}", file.display().to_string()),
        );
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.users[0].password.as_deref(), Some("from-file"));
        assert!(c.users[0].password_file.is_none());
        std::fs::write(&file, "crlf\r\n").expect("write");
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.users[0].password.as_deref(), Some("crlf"));
        // Only one trailing newline is dropped: the rest belongs to the secret.
        std::fs::write(&file, "two\n\n").expect("write");
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.users[0].password.as_deref(), Some("two\n"));
        std::fs::write(&file, "\n").expect("write");
        let e = err(&text);
        assert!(e.starts_with("users[0].password_file"), "{e}");
        assert!(e.contains("empty"), "{e}");
        let e = err(&GOOD.replace(
            "password = \"app-secret\"",
            "password_file = \"/nonexistent/meridian/pw\"",
        ));
        assert!(e.starts_with("users[0].password_file"), "{e}");
        let e = err(&GOOD.replace(
            "password = \"pw\"",
            "password_file = \"/nonexistent/meridian/pw\"",
        ));
        assert!(e.starts_with("monitor.password_file"), "{e}");
        let e = err(&GOOD.replace(
            "password = \"app-secret\"",
            &format!(
                "password = \"a\"\npassword_file = {:?}",
                file.display().to_string()
            ),
        ));
        assert!(e.starts_with("users[0].password"), "{e}");
        std::fs::write(&file, "tok\n").expect("write");
        let c = Config::from_toml(&GOOD.replace(
            "region = \"eu\"",
            &format!(
                "region = \"eu\"\nadmin_token_file = {:?}",
                file.display().to_string()
            ),
        ))
        .expect("valid");
        assert_eq!(c.proxy.admin_token.as_deref(), Some("tok"));
        let e = err(&GOOD.replace(
            "region = \"eu\"",
            "region = \"eu\"\nadmin_token_file = \"/nonexistent/meridian/tok\"",
        ));
        assert!(e.starts_with("proxy.admin_token_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auto_prepare_limits_must_be_positive() {
        for key in ["auto_prepare_min_uses", "auto_prepare_max_statements"] {
            let e = err(&GOOD.replace(
                "region = \"eu\"",
                &format!("region = \"eu\"\nauto_prepare = true\n{key} = 0"),
            ));
            assert!(e.starts_with(&format!("proxy.{key}")), "{e}");
        }
        let c = Config::from_toml(
            &GOOD.replace("region = \"eu\"", "region = \"eu\"\nauto_prepare = true"),
        )
        .expect("valid");
        assert!(c.proxy.auto_prepare);
        assert_eq!(c.proxy.auto_prepare_min_uses, 2);
    }

    #[test]
    fn auth_failure_window_must_be_positive() {
        let e = err(&GOOD.replace(
            "region = \"eu\"",
            "region = \"eu\"\nauth_failure_window_s = 0",
        ));
        assert!(e.starts_with("proxy.auth_failure_window_s"), "{e}");
        let c = Config::from_toml(&GOOD.replace(
            "region = \"eu\"",
            "region = \"eu\"\nauth_failure_window_s = 0\nauth_failure_limit = 0",
        ))
        .expect("limit off");
        assert_eq!(c.proxy.auth_failure_limit, 0);
    }

    #[test]
    fn both_password_forms_rejected() {
        let e = err(&GOOD.replace(
            "password = \"app-secret\"",
            "password = \"a\"\npassword_env = \"HOME\"",
        ));
        assert!(e.starts_with("users[0].password"), "{e}");
    }
}

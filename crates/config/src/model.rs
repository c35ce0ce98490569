//! The configuration model. Each field's doc comment is the user-facing description.

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener and proxy-wide settings.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Users allowed to connect to Meridian; the same credentials are used upstream.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Credentials for Meridian's own queries (discovery, health, promotion).
    pub monitor: MonitorConfig,
    /// The Postgres servers behind Meridian. Roles are discovered, not configured.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address for Postgres clients, e.g. `127.0.0.1:6432`.
    pub listen: String,
    /// Address of the HTTP admin API (metrics, status); off when absent.
    pub admin_listen: Option<String>,
    /// The region this proxy runs in; replicas in the same region are preferred for reads.
    pub region: String,
    /// Largest protocol message accepted from a client or server, in bytes.
    pub max_message_bytes: usize,
    /// Most client connections served at once; further ones get SQLSTATE 53300.
    pub max_client_connections: usize,
    /// How long a client may take from connecting to finishing authentication, in milliseconds.
    pub startup_timeout_ms: u64,
    /// How long to wait for an upstream server to accept a connection and authenticate, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Log output format: `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".into(),
            admin_listen: None,
            region: "local".into(),
            max_message_bytes: 64 * 1024 * 1024,
            max_client_connections: 10_000,
            startup_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            log_format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How a user proves their identity to Meridian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (RFC 7677), the default.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response (legacy clients).
    #[serde(rename = "md5")]
    Md5,
}

/// `[[users]]`: one user who may connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Role name, as the client sends it and as used upstream.
    pub name: String,
    /// Password in the clear. Prefer `password_env`.
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// How clients authenticate to Meridian as this user.
    #[serde(default)]
    pub auth: AuthMethod,
}

/// `[monitor]`: Meridian's own credentials for health and topology queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Role used for monitoring (needs `pg_monitor`; a superuser for promotion).
    pub user: String,
    /// Password in the clear. Prefer `password_env`.
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Database to connect to.
    #[serde(default = "default_monitor_db")]
    pub database: String,
    /// How often each node is checked, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Timeout of one check, in milliseconds.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_monitor_db() -> String {
    "postgres".into()
}
fn default_interval_ms() -> u64 {
    500
}
fn default_check_timeout_ms() -> u64 {
    1_000
}

/// `[[nodes]]`: one Postgres server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name used in logs, metrics and the admin API.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Region the node runs in (for read preference).
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_region() -> String {
    "local".into()
}

/// A password after `password`/`password_env` resolution.
pub fn resolve_password(
    key: &str,
    password: &Option<String>,
    password_env: &Option<String>,
) -> Result<String, crate::ConfigError> {
    match (password, password_env) {
        (Some(p), None) => Ok(p.clone()),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            crate::ConfigError::invalid(
                format!("{key}.password_env"),
                format!("environment variable {var} is not set"),
            )
        }),
        (Some(_), Some(_)) => Err(crate::ConfigError::invalid(
            format!("{key}.password"),
            "set either password or password_env, not both",
        )),
        (None, None) => Err(crate::ConfigError::invalid(
            format!("{key}.password"),
            "missing: set password or password_env",
        )),
    }
}

//! The configuration model. Each field's doc comment is the user-facing description.

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener and proxy-wide settings.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// TLS towards clients (`cert`, `key`, `require_client_tls`) and towards the nodes
    /// (`[tls.upstream]`).
    #[serde(default)]
    pub tls: crate::TlsConfig,
    /// Users allowed to connect to Meridian; the same credentials are used upstream.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Credentials for Meridian's own queries (discovery, health, promotion).
    pub monitor: MonitorConfig,
    /// The Postgres servers behind Meridian. Roles are discovered, not configured.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Read/write routing and replica choice.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Read-your-writes and monotonic reads.
    #[serde(default)]
    pub consistency: ConsistencyConfig,
    /// Health loop and automatic failover.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// Server connection pooling.
    #[serde(default)]
    pub pool: PoolConfig,
}

/// How server connections are shared between client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Each client session has its own server connections, opened lazily (a replica connection
    /// only when a read goes there) and kept until the session ends.
    #[default]
    Session,
    /// Server connections are shared: a session holds one only while a transaction (or a
    /// statement outside a transaction) runs, then returns it to the pool.
    Transaction,
}

impl PoolMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `[pool]`: server connection pooling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// `session` (default) or `transaction`.
    pub pool_mode: PoolMode,
    /// In transaction mode: most server connections per node, user, database and startup
    /// parameters (idle and in use together).
    pub pool_size: usize,
    /// In transaction mode: idle connections kept open per pool once it has been used.
    pub min_idle: usize,
    /// In transaction mode: an idle connection beyond `min_idle` is closed after this long.
    /// Milliseconds, or a string such as `"500ms"`, `"30s"`, `"10m"`; 0 never closes.
    pub idle_timeout: Millis,
    /// In transaction mode: how long a statement waits for a server connection when the pool
    /// is at `pool_size`, before it fails with 53300. Same units as `idle_timeout`.
    pub checkout_timeout: Millis,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            pool_mode: PoolMode::Session,
            pool_size: 20,
            min_idle: 0,
            idle_timeout: Millis(600_000),
            checkout_timeout: Millis(10_000),
        }
    }
}

/// A duration in milliseconds, written in the file as an integer (milliseconds) or as a string
/// with a unit: `ms`, `s`, `m` or `h` (e.g. `"500ms"`, `"30s"`, `"10m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// As a `Duration`.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    /// Parses `"500ms"`, `"30s"`, `"10m"`, `"1h"` or a bare number of milliseconds.
    pub fn parse(text: &str) -> Option<Millis> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let factor = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        n.checked_mul(factor).map(Millis)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Millis(n)),
            Raw::Text(t) => Millis::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {t:?}: use milliseconds (500) or a string such as \"500ms\", \"30s\", \"10m\""
                ))
            }),
        }
    }
}

/// `[failover]`: the health loop and what happens when the primary dies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Promote a replica automatically when the primary is down. With `false`, Meridian only
    /// reports; `meridian ctl failover` still works.
    pub automatic: bool,
    /// How often every node is health-checked, in milliseconds.
    pub check_interval_ms: u64,
    /// Consecutive failed checks before a node is considered down.
    pub failure_threshold: u32,
    /// Consecutive good checks before a down node is considered up again.
    pub success_threshold: u32,
    /// How long a statement that needs the primary waits for one (during a failover or
    /// switchover) before it fails with 57P03, in milliseconds.
    pub hold_timeout_ms: u64,
    /// Least time between two automatic failovers, in seconds.
    pub cooldown_s: u64,
    /// Promote only if the replicas have lost the primary too (`pg_stat_wal_receiver`): a
    /// primary the replicas still stream from is alive, and only Meridian is cut off.
    pub require_witness: bool,
    /// Promote even if no replica has every write Meridian acknowledged (reporting the lost
    /// WAL range). Off by default: no acknowledged write is ever given up silently.
    pub allow_data_loss: bool,
    /// Shell command run when a node is fenced (environment: MERIDIAN_FENCED_NODE,
    /// MERIDIAN_FENCED_HOST, MERIDIAN_FENCED_PORT, MERIDIAN_NEW_PRIMARY).
    pub fence_command: Option<String>,
    /// How long a promotion (and the new primary catching up first) may take, in seconds.
    pub promote_timeout_s: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            automatic: true,
            check_interval_ms: 250,
            failure_threshold: 3,
            success_threshold: 2,
            hold_timeout_ms: 10_000,
            cooldown_s: 60,
            require_witness: true,
            allow_data_loss: false,
            fence_command: None,
            promote_timeout_s: 10,
        }
    }
}

/// What a session's reads may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reads see the session's own writes and never go back in time (default).
    #[default]
    Session,
    /// Reads go to any replica within the lag limits.
    Eventual,
    /// Every statement goes to the primary.
    Strong,
}

impl Consistency {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Session => "session",
            Consistency::Eventual => "eventual",
            Consistency::Strong => "strong",
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(Consistency::Session),
            "eventual" => Ok(Consistency::Eventual),
            "strong" => Ok(Consistency::Strong),
            _ => Err(()),
        }
    }
}

/// `[consistency]`: read-your-writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsistencyConfig {
    /// Default mode for new sessions: `session`, `eventual` or `strong`
    /// (`SET meridian.consistency` changes it per session).
    pub mode: Consistency,
    /// How long a read may wait for a replica to replay the session's last write before it is
    /// sent to the primary, in milliseconds.
    pub wait_timeout_ms: u64,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            mode: Consistency::Session,
            wait_timeout_ms: 50,
        }
    }
}

/// How replicas are balanced among equally good candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Rotate through the candidates.
    #[default]
    RoundRobin,
    /// Pick the candidate with the fewest sessions currently using it.
    LeastConnections,
}

/// `[routing]`: where statements go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Forward every statement to the primary without classifying it: no read routing, no
    /// read-your-writes tokens, no `meridian.*` settings. A baseline for benchmarks and a
    /// fallback switch.
    pub passthrough: bool,
    /// Send reads to replicas at all. With `false` every statement goes to the primary (still
    /// classified, so `meridian.*` settings and tokens work).
    pub read_replicas: bool,
    /// A replica further behind the primary than this many bytes of WAL gets no reads.
    pub max_replica_lag_bytes: u64,
    /// A replica whose replay is further behind than this many milliseconds gets no reads.
    pub max_replica_lag_ms: u64,
    /// Replicas whose round-trip time is within this many milliseconds of the fastest
    /// candidate count as equally near and share reads.
    pub latency_tolerance_ms: f64,
    /// How reads are spread over equally good replicas.
    pub balance: Balance,
    /// Functions that may run on a replica although Postgres marks them VOLATILE
    /// (names as `name` or `schema.name`, case-insensitive).
    pub read_only_functions: Vec<String>,
    /// Functions that always send a statement to the primary.
    pub write_functions: Vec<String>,
    /// How often the user-function catalog (`pg_proc.provolatile`) is reloaded, in seconds.
    pub function_refresh_s: u64,
    /// Most statement classifications kept in the cache.
    pub cache_max_entries: usize,
    /// Approximate memory bound of the classification cache, in bytes.
    pub cache_max_bytes: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            passthrough: false,
            read_replicas: true,
            max_replica_lag_bytes: 16 * 1024 * 1024,
            max_replica_lag_ms: 10_000,
            latency_tolerance_ms: 2.0,
            balance: Balance::RoundRobin,
            read_only_functions: Vec::new(),
            write_functions: Vec::new(),
            function_refresh_s: 30,
            cache_max_entries: 10_000,
            cache_max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address for Postgres clients, e.g. `127.0.0.1:6432`.
    pub listen: String,
    /// Directory for a Unix-domain socket clients on this host may connect through
    /// (`<dir>/.s.PGSQL.<port of listen>`, as Postgres and PgBouncer name it); off when absent.
    pub unix_socket_dir: Option<String>,
    /// Address of the HTTP admin API (metrics, status, dashboard); off when absent.
    pub admin_listen: Option<String>,
    /// Bearer token that mutating admin API calls (failover, switchover, unfence, reload,
    /// consistency check) must present. Prefer `admin_token_env`. Without a token those calls
    /// are refused.
    pub admin_token: Option<String>,
    /// Name of an environment variable holding the admin token.
    pub admin_token_env: Option<String>,
    /// Path of a file holding the admin token (one trailing newline is ignored).
    pub admin_token_file: Option<String>,
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
    /// Close a client session idle (outside a transaction) this long, in milliseconds, with
    /// 57P05; 0 disables.
    pub client_idle_timeout_ms: u64,
    /// Close a client session idle inside a transaction this long, in milliseconds, with 25P03
    /// (the transaction is rolled back); 0 disables.
    pub idle_in_transaction_timeout_ms: u64,
    /// Threads serving client sessions, each running its own single-threaded event loop (a
    /// session stays on one thread); 0 means one per two CPU cores, at least one.
    pub worker_threads: usize,
    /// On SIGTERM/SIGINT: how long open transactions may run to completion before every
    /// session is closed with 57P01, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// Failed authentications one source address may have within `auth_failure_window_s`;
    /// beyond that its further attempts are refused (28000) before any password check until
    /// the window ends. 0 disables the limit.
    pub auth_failure_limit: u32,
    /// Length of the failed-authentication window, in seconds.
    pub auth_failure_window_s: u64,
    /// Run repeated simple-protocol `SELECT`/`INSERT`/`UPDATE`/`DELETE` statements as prepared
    /// statements, their literals passed as parameters, so Postgres parses and plans each
    /// statement shape once per server connection (see docs/auto-prepare.md).
    pub auto_prepare: bool,
    /// How many times a statement shape must be seen on a server connection before it is
    /// prepared there.
    pub auto_prepare_min_uses: u32,
    /// Most auto-prepared statements kept per server connection; beyond that the least
    /// recently used is closed.
    pub auto_prepare_max_statements: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".into(),
            unix_socket_dir: None,
            admin_listen: None,
            admin_token: None,
            admin_token_env: None,
            admin_token_file: None,
            region: "local".into(),
            max_message_bytes: 64 * 1024 * 1024,
            max_client_connections: 10_000,
            startup_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            log_format: LogFormat::Text,
            shutdown_timeout_ms: 30_000,
            worker_threads: 0,
            client_idle_timeout_ms: 0,
            idle_in_transaction_timeout_ms: 0,
            auth_failure_limit: 10,
            auth_failure_window_s: 60,
            auto_prepare: false,
            auto_prepare_min_uses: 2,
            auto_prepare_max_statements: 200,
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
    /// Password in the clear. Prefer `password_env` or `password_file`.
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Path of a file holding the password (one trailing newline is ignored).
    pub password_file: Option<String>,
    /// How clients authenticate to Meridian as this user.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Most client sessions this user may have at once (53300 beyond); unlimited when absent.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// This user's `pool.pool_mode`, when it differs from the default.
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// This user's `pool.pool_size`, when it differs from the default.
    #[serde(default)]
    pub pool_size: Option<usize>,
}

/// `[monitor]`: Meridian's own credentials for health and topology queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Role used for monitoring (needs `pg_monitor`; a superuser for promotion).
    pub user: String,
    /// Password in the clear. Prefer `password_env` or `password_file`.
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// Path of a file holding the password (one trailing newline is ignored).
    pub password_file: Option<String>,
    /// Database to connect to.
    #[serde(default = "default_monitor_db")]
    pub database: String,
    /// Timeout of one check, in milliseconds.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_monitor_db() -> String {
    "postgres".into()
}
fn default_check_timeout_ms() -> u64 {
    1_000
}

/// Most nodes a running Meridian can know: `[[nodes]]` entries, plus nodes removed by reloads
/// since it started (their slots are kept; a node named again reuses its slot).
pub const MAX_NODES: usize = 64;

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
    /// How Meridian's connections to this node use TLS (overrides `tls.upstream.sslmode`).
    #[serde(default)]
    pub sslmode: Option<crate::SslMode>,
    /// CA certificates (PEM) for `verify-ca`/`verify-full` towards this node (overrides
    /// `tls.upstream.ca_file`).
    #[serde(default)]
    pub ssl_ca_file: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_region() -> String {
    "local".into()
}

/// A password after `password`/`password_env`/`password_file` resolution (exactly one of
/// them must be set).
pub fn resolve_password(
    key: &str,
    password: &Option<String>,
    password_env: &Option<String>,
    password_file: &Option<String>,
) -> Result<String, crate::ConfigError> {
    match (password, password_env, password_file) {
        (Some(p), None, None) => Ok(p.clone()),
        (None, Some(var), None) => std::env::var(var).map_err(|_| {
            crate::ConfigError::invalid(
                format!("{key}.password_env"),
                format!("environment variable {var} is not set"),
            )
        }),
        (None, None, Some(path)) => read_secret_file(&format!("{key}.password_file"), path),
        (None, None, None) => Err(crate::ConfigError::invalid(
            format!("{key}.password"),
            "missing: set password, password_env or password_file",
        )),
        _ => Err(crate::ConfigError::invalid(
            format!("{key}.password"),
            "set only one of password, password_env and password_file",
        )),
    }
}

/// Reads a secret from `path` for the key `key`: one trailing newline (`\n` or `\r\n`) is
/// dropped; an unreadable or empty file is an error naming the key (never the content).
pub fn read_secret_file(key: &str, path: &str) -> Result<String, crate::ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::ConfigError::invalid(key, format!("cannot read {path}: {e}")))?;
    let secret = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(crate::ConfigError::invalid(key, format!("{path} is empty")));
    }
    Ok(secret.to_string())
}

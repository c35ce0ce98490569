//! A throw-away PostgreSQL primary with streaming replicas on loopback.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::creds;
use crate::error::Error;
use crate::node::{self, check_setting_name, quote, Ctx, Node, Upstream, NODE_CONF_FILE};
use crate::pgbin::{ensure_postgres, is_root, lookup_user, PgBin};
use crate::port::free_port;
use crate::process;

/// Set this environment variable (to anything) to keep the cluster directory
/// (data directories and logs) after the [`Cluster`] is dropped; the servers
/// are still stopped.
pub const KEEP_ENV: &str = "MERIDIAN_TESTKIT_KEEP";

/// Overrides the parent directory of cluster directories (default: the
/// system temp dir).
pub const TMPDIR_ENV: &str = "MERIDIAN_TESTKIT_TMPDIR";

/// How often a start is retried with a new port when the port turned out to
/// be taken.
const PORT_ATTEMPTS: usize = 4;

/// Settings written to every node's `postgresql.conf`.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("hot_standby", "on"),
    ("hot_standby_feedback", "on"),
    ("wal_keep_size", "256MB"),
    ("shared_buffers", "32MB"),
    ("max_connections", "200"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("logging_collector", "off"),
    ("wal_receiver_status_interval", "1s"),
    ("wal_receiver_timeout", "5s"),
    ("wal_sender_timeout", "5s"),
    ("wal_retrieve_retry_interval", "1s"),
    ("password_encryption", "scram-sha-256"),
    ("log_line_prefix", "%m [%p] %q%u@%d/%a "),
];

/// Builder for a [`Cluster`]; get one from [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    replicas: usize,
    settings: Vec<(String, String)>,
    primary_settings: Vec<(String, String)>,
    replica_settings: Vec<(usize, String, String)>,
    synchronous: Option<String>,
    bin: Option<PgBin>,
    base_dir: Option<PathBuf>,
    keep_dir: bool,
    start_timeout: Duration,
    ssl: Option<Ssl>,
}

/// TLS for every node: certificate and key (PEM), and the roles whose plaintext TCP
/// connections are refused.
#[derive(Debug, Clone)]
struct Ssl {
    cert_pem: String,
    key_pem: String,
    hostssl_only: Option<String>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            replicas: 2,
            settings: Vec::new(),
            primary_settings: Vec::new(),
            replica_settings: Vec::new(),
            synchronous: None,
            bin: None,
            base_dir: None,
            keep_dir: std::env::var_os(KEEP_ENV).is_some(),
            start_timeout: Duration::from_secs(60),
            ssl: None,
        }
    }
}

impl ClusterBuilder {
    /// Number of streaming replicas (default 2). Replicas are named `pg2`,
    /// `pg3`, ...
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Extra `postgresql.conf` setting for replica `index` (0-based: `0` is
    /// `pg2`, `1` is `pg3`, ...), e.g.
    /// `.replica_setting(1, "recovery_min_apply_delay", "500ms")`.
    pub fn replica_setting(
        mut self,
        index: usize,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.replica_settings
            .push((index, key.into(), value.into()));
        self
    }

    /// Extra `postgresql.conf` setting for the primary only. A
    /// `synchronous_standby_names` given here is applied once the replicas
    /// stream (as with [`synchronous`](Self::synchronous)).
    pub fn primary_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.primary_settings.push((key.into(), value.into()));
        self
    }

    /// Extra `postgresql.conf` setting for every node (use this for settings
    /// that replicas require to be at least the primary's, such as
    /// `max_connections`).
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Synchronous replication: when true, the primary gets
    /// `synchronous_standby_names = 'ANY 1 (pg2, pg3, ...)'` (quorum of one
    /// over all replicas' `application_name`s) once they stream, and `start()`
    /// waits until one is reported as `quorum`/`sync`. Default false.
    pub fn synchronous(mut self, on: bool) -> Self {
        self.synchronous = on.then(String::new);
        self
    }

    /// Synchronous replication with an explicit `synchronous_standby_names`
    /// value, e.g. `"FIRST 1 (pg2, pg3)"`.
    pub fn synchronous_standby_names(mut self, value: impl Into<String>) -> Self {
        self.synchronous = Some(value.into());
        self
    }

    /// Use these binaries instead of [`ensure_postgres`].
    pub fn bin(mut self, bin: PgBin) -> Self {
        self.bin = Some(bin);
        self
    }

    /// Parent directory for the cluster directory (default `$MERIDIAN_TESTKIT_TMPDIR`
    /// or the system temp dir). When running as root it must be traversable
    /// by the `postgres` OS user, and short (unix socket paths are limited to
    /// ~100 bytes).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Keep the cluster directory after drop (default: only if
    /// `$MERIDIAN_TESTKIT_KEEP` is set).
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// Every node serves TLS (`ssl = on`) with this certificate chain and key (PEM).
    /// `hostssl_only` names the roles (a `pg_hba.conf` user list such as `app` or `all`) whose
    /// TCP connections must use TLS: a `hostnossl ... reject` line comes before the other
    /// rules (replication connections are not affected).
    pub fn ssl(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
        hostssl_only: Option<&str>,
    ) -> Self {
        self.ssl = Some(Ssl {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            hostssl_only: hostssl_only.map(str::to_string),
        });
        self
    }

    /// Time limit for waiting for the replicas to stream (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Creates and starts the cluster: initdb + start the primary (`pg1`),
    /// create roles/database/slots, `pg_basebackup` + start the replicas in
    /// parallel, and wait until every replica streams. On error everything
    /// started so far is stopped and removed.
    pub fn start(self) -> Result<Cluster, Error> {
        for k in self
            .settings
            .iter()
            .chain(&self.primary_settings)
            .map(|(k, _)| k)
            .chain(self.replica_settings.iter().map(|(_, k, _)| k))
        {
            check_setting_name(k)?;
        }
        if let Some((i, k, _)) = self
            .replica_settings
            .iter()
            .find(|(i, _, _)| *i >= self.replicas)
        {
            return Err(Error::Config(format!(
                "replica_setting({i}, {k:?}, ..) but the cluster has {} replica(s) (indexes are 0-based)",
                self.replicas
            )));
        }
        if self.synchronous.is_some() && self.replicas == 0 {
            return Err(Error::Config(
                "synchronous replication needs at least one replica".to_string(),
            ));
        }

        let bin = match self.bin.clone() {
            Some(b) => b,
            None => ensure_postgres()?,
        };
        let run_as = if is_root() {
            Some(lookup_user("postgres")?)
        } else {
            None
        };
        let base = self
            .base_dir
            .clone()
            .or_else(|| std::env::var_os(TMPDIR_ENV).map(PathBuf::from))
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix("meridian-cluster-")
            .tempdir_in(&base)
            .map_err(|e| Error::io(format!("creating a temp dir in {}", base.display()), e))?;
        let dir = std::fs::canonicalize(tmp.path())
            .map_err(|e| Error::io(format!("canonicalizing {}", tmp.path().display()), e))?;
        // ".s.PGSQL.65535.lock" must fit in sun_path (108 bytes incl. NUL).
        if dir.as_os_str().len() + 21 > 107 {
            return Err(Error::Config(format!(
                "cluster directory {} is too long for unix socket paths; set {TMPDIR_ENV} \
                 to a short directory",
                dir.display()
            )));
        }
        let postgres_exe = std::fs::canonicalize(bin.path("postgres")).ok();
        let ctx = Arc::new(Ctx {
            bin,
            run_as,
            dir,
            postgres_exe,
        });
        ctx.give(&ctx.dir)?;

        let names: Vec<String> = (1..=self.replicas + 1).map(|i| format!("pg{i}")).collect();
        let mut guard = Guard {
            ctx: Arc::clone(&ctx),
            datadirs: names.iter().map(|n| ctx.dir.join(n)).collect(),
            tmp: Some(tmp),
            keep: self.keep_dir,
            watchdog: None,
        };
        guard.watchdog = spawn_watchdog(&ctx, &guard.datadirs, self.keep_dir);

        let primary = self.start_primary(&ctx, &names[1..])?;
        let replicas = thread::scope(|s| {
            let handles: Vec<_> = names[1..]
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let ctx = Arc::clone(&ctx);
                    let settings: Vec<(String, String)> = self
                        .replica_settings
                        .iter()
                        .filter(|(j, _, _)| *j == i)
                        .map(|(_, k, v)| (k.clone(), v.clone()))
                        .collect();
                    let primary_port = primary.port;
                    s.spawn(move || start_replica(ctx, name, primary_port, settings))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Config("replica setup panicked".into())))
                })
                .collect::<Result<Vec<Node>, Error>>()
        })?;

        let mut nodes = vec![primary];
        nodes.extend(replicas);
        let cluster = Cluster { nodes, guard };
        cluster.wait_streaming(self.start_timeout)?;

        let sync = self.synchronous.clone().or_else(|| {
            self.primary_settings
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case("synchronous_standby_names"))
                .map(|(_, v)| v.clone())
        });
        if let Some(value) = sync {
            let value = if value.is_empty() {
                format!("ANY 1 ({})", names[1..].join(", "))
            } else {
                value
            };
            let primary = cluster.primary();
            primary.put_conf_setting("synchronous_standby_names", &value)?;
            primary.psql("postgres", "SELECT pg_reload_conf()")?;
            primary.wait_until(self.start_timeout, "a synchronous standby", || {
                Ok(primary.psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                )? != "0")
            })?;
        }
        Ok(cluster)
    }

    fn start_primary(&self, ctx: &Arc<Ctx>, replica_names: &[String]) -> Result<Node, Error> {
        let datadir = ctx.dir.join("pg1");
        let pwfile = ctx.dir.join("superuser.pw");
        ctx.write_file(&pwfile, creds::SUPERUSER_PASSWORD)?;
        let res = ctx.run_pg(
            "initdb",
            [
                "-D".as_ref(),
                datadir.as_os_str(),
                "-U".as_ref(),
                creds::SUPERUSER.as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "-A".as_ref(),
                "scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ] as [&std::ffi::OsStr; 12],
            Duration::from_secs(300),
        );
        let _ = std::fs::remove_file(&pwfile);
        res.map_err(|e| match &ctx.run_as {
            Some(_) => Error::Config(format!(
                "{e}\n(initdb runs as the `postgres` OS user: it must be able to reach {})",
                ctx.dir.display()
            )),
            None => e,
        })?;

        let mut conf = String::from("\n# ---- meridian-testkit ----\n");
        conf.push_str(&format!(
            "unix_socket_directories = {}\n",
            quote(&ctx.dir.to_string_lossy())
        ));
        for (k, v) in BASE_SETTINGS {
            conf.push_str(&format!("{k} = {}\n", quote(v)));
        }
        for (k, v) in &self.settings {
            conf.push_str(&format!("{k} = {}\n", quote(v)));
        }
        if let Some(ssl) = &self.ssl {
            // In the data directory, so that pg_basebackup copies them to the replicas.
            ctx.write_file(&datadir.join("server.crt"), &ssl.cert_pem)?;
            let key = datadir.join("server.key");
            ctx.write_file(&key, &ssl.key_pem)?;
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| Error::io(format!("chmod {}", key.display()), e))?;
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        conf.push_str(&format!("include = {}\n", quote(NODE_CONF_FILE)));
        ctx.append_file(&datadir.join("postgresql.conf"), &conf)?;
        let nossl = match self.ssl.as_ref().and_then(|s| s.hostssl_only.as_deref()) {
            Some(users) => format!("hostnossl all  {users}  127.0.0.1/32  reject\n"),
            None => String::new(),
        };
        ctx.write_file(
            &datadir.join("pg_hba.conf"),
            &format!(
                "# Managed by meridian-testkit.\n\
                 local   all          all                        trust\n\
                 local   replication  all                        trust\n\
                 host    replication  {repl}  127.0.0.1/32  scram-sha-256\n\
                 {nossl}\
                 host    all          {md5}  127.0.0.1/32  md5\n\
                 host    all          {plain}  127.0.0.1/32  password\n\
                 host    all          {trust}  127.0.0.1/32  trust\n\
                 host    all          all  127.0.0.1/32  scram-sha-256\n",
                repl = creds::REPL_USER,
                md5 = creds::MD5_USER,
                plain = creds::PLAIN_USER,
                trust = creds::TRUST_USER,
            ),
        )?;

        let settings: Vec<(String, String)> = self
            .primary_settings
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("synchronous_standby_names"))
            .cloned()
            .collect();
        let primary = start_with_port_retries(|port| {
            Node::new(Arc::clone(ctx), "pg1", port, None, settings.clone())
        })?;

        let q = |s: &str| quote(s);
        let mut sql = format!(
            "CREATE ROLE {repl} WITH LOGIN REPLICATION PASSWORD {repl_pw};\n\
             CREATE ROLE {app} WITH LOGIN PASSWORD {app_pw};\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {md5} WITH LOGIN PASSWORD {md5_pw};\n\
             RESET password_encryption;\n\
             CREATE ROLE {plain} WITH LOGIN PASSWORD {plain_pw};\n\
             CREATE ROLE {trust} WITH LOGIN;\n\
             CREATE DATABASE {db} OWNER {app};\n\
             GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {db} TO {app}, {md5}, {plain}, {trust};\n",
            repl = creds::REPL_USER,
            repl_pw = q(creds::REPL_PASSWORD),
            app = creds::APP_USER,
            app_pw = q(creds::APP_PASSWORD),
            md5 = creds::MD5_USER,
            md5_pw = q(creds::MD5_PASSWORD),
            plain = creds::PLAIN_USER,
            plain_pw = q(creds::PLAIN_PASSWORD),
            trust = creds::TRUST_USER,
            db = creds::APP_DB,
        );
        for name in replica_names {
            sql.push_str(&format!(
                "SELECT 1 FROM pg_create_physical_replication_slot({}, true);\n",
                q(name)
            ));
        }
        primary.psql("postgres", &sql)?;
        primary.psql(
            creds::APP_DB,
            &format!(
                "GRANT ALL ON SCHEMA public TO {}, {}, {}, {};",
                creds::APP_USER,
                creds::MD5_USER,
                creds::PLAIN_USER,
                creds::TRUST_USER
            ),
        )?;
        Ok(primary)
    }
}

/// Creates a node with a fresh port, writes its node conf and starts it,
/// retrying with another port if the chosen one was taken meanwhile.
fn start_with_port_retries(make: impl Fn(u16) -> Node) -> Result<Node, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let node = make(free_port());
        node.write_conf()?;
        match node.start() {
            Ok(()) => return Ok(node),
            Err(e) if e.is_port_conflict() && attempt < PORT_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

fn start_replica(
    ctx: Arc<Ctx>,
    name: &str,
    primary_port: u16,
    settings: Vec<(String, String)>,
) -> Result<Node, Error> {
    let datadir = ctx.dir.join(name);
    let mut cmd = ctx.pg_command("pg_basebackup");
    cmd.env("PGPASSWORD", creds::REPL_PASSWORD)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(primary_port.to_string())
        .args(["-U", creds::REPL_USER, "-w", "-D"])
        .arg(&datadir)
        .args(["-S", name, "-X", "stream", "-c", "fast", "--no-sync"]);
    let desc = process::describe(&cmd);
    process::run(&mut cmd, None, Duration::from_secs(300))?.check(&desc)?;
    // Not using `pg_basebackup -R`: primary_conninfo (with application_name)
    // and primary_slot_name live in NODE_CONF_FILE, so they can be rewritten
    // (see Node::follow) without fighting postgresql.auto.conf.
    ctx.write_file(&datadir.join("standby.signal"), "")?;
    start_with_port_retries(|port| {
        Node::new(
            Arc::clone(&ctx),
            name,
            port,
            Some(Upstream {
                port: primary_port,
                slot: Some(name.to_string()),
            }),
            settings.clone(),
        )
    })
}

/// Spawns a process (in its own process group, as the server account) that
/// blocks reading a pipe from us; if this process dies without running
/// `Drop` (SIGKILL, Ctrl-C, abort), the pipe closes and the watchdog stops
/// the servers and removes the cluster directory.
fn spawn_watchdog(ctx: &Ctx, datadirs: &[PathBuf], keep: bool) -> Option<Child> {
    let script = r#"cat >/dev/null 2>&1
for d in "$@"; do
  if [ -f "$d/postmaster.pid" ]; then "$MERIDIAN_PG_CTL" -D "$d" stop -m immediate -w -t 10 >/dev/null 2>&1; fi
done
if [ -z "$MERIDIAN_KEEP" ]; then rm -rf "$MERIDIAN_CLUSTER_DIR"; fi
"#;
    let mut cmd = Command::new("/bin/sh");
    process::scrub_pg_env(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .arg("meridian-testkit-watchdog")
        .args(datadirs)
        .env("MERIDIAN_PG_CTL", ctx.bin.path("pg_ctl"))
        .env("MERIDIAN_CLUSTER_DIR", &ctx.dir)
        .env("LC_ALL", "C")
        .current_dir(&ctx.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if keep {
        cmd.env("MERIDIAN_KEEP", "1");
    }
    if let Some(u) = ctx.run_as {
        cmd.uid(u.uid).gid(u.gid);
    }
    cmd.spawn().ok()
}

/// Owns the cluster directory and stops every server on drop.
struct Guard {
    ctx: Arc<Ctx>,
    datadirs: Vec<PathBuf>,
    tmp: Option<tempfile::TempDir>,
    keep: bool,
    watchdog: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        thread::scope(|s| {
            for d in &self.datadirs {
                let ctx = &self.ctx;
                s.spawn(move || node::stop_immediately(ctx, d));
            }
        });
        if let Some(mut w) = self.watchdog.take() {
            if let Ok(pid) = i32::try_from(w.id()) {
                // The watchdog leads its own process group (sh + cat).
                process::signal(-pid, libc::SIGKILL);
            }
            let _ = w.wait();
        }
        if let Some(tmp) = self.tmp.take() {
            if self.keep {
                let _ = tmp.keep();
            } else {
                let path = tmp.path().to_path_buf();
                if tmp.close().is_err() {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
    }
}

/// A running PostgreSQL primary (`pg1`) with streaming replicas (`pg2`,
/// `pg3`, ...) on 127.0.0.1, in a temporary directory.
///
/// Dropping the cluster stops every node (`pg_ctl stop -m immediate`, then
/// SIGKILL for anything left) and removes the directory (unless
/// [`KEEP_ENV`] is set). If the process dies without unwinding, a small
/// watchdog process does the same cleanup.
///
/// Roles and databases are described in [`creds`](crate::creds).
pub struct Cluster {
    nodes: Vec<Node>,
    guard: Guard,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.guard.ctx.dir)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Cluster {
    /// A [`ClusterBuilder`] with defaults (2 asynchronous replicas).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The initial primary, `pg1` (still returned after a failover; see
    /// [`current_primary`](Self::current_primary)).
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The replicas `pg2`, `pg3`, ... in order.
    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// All nodes, primary first.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.iter()
    }

    /// The node called `name` (`"pg1"`, `"pg2"`, ...).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The first running node (primary first) that is not in recovery.
    pub fn current_primary(&self) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.is_running() && matches!(n.is_in_recovery(), Ok(false)))
    }

    /// The cluster directory: data directories `pg1/`, `pg2/`, ..., logs
    /// `pg1.log`, ... and the unix sockets.
    pub fn dir(&self) -> &Path {
        &self.guard.ctx.dir
    }

    /// The PostgreSQL binaries in use.
    pub fn bin(&self) -> &PgBin {
        &self.guard.ctx.bin
    }

    /// Runs `sql` on `node` as the superuser over TCP with
    /// `psql -X -q -A -t -v ON_ERROR_STOP=1` and returns the trimmed stdout.
    /// See [`Node::psql`].
    pub fn psql(&self, node: &Node, db: &str, sql: &str) -> Result<String, Error> {
        node.psql(db, sql)
    }

    /// Waits until every running standby has replayed everything the current
    /// primary has written: `pg_last_wal_replay_lsn() >= pg_current_wal_lsn()`
    /// (the primary's LSN sampled once, at the call). Stopped nodes are
    /// skipped; a replica with `recovery_min_apply_delay` is waited for.
    pub fn wait_replicas_caught_up(&self, timeout: Duration) -> Result<(), Error> {
        let primary = self.current_primary().ok_or_else(|| {
            Error::NotRunning("primary (no running node is out of recovery)".into())
        })?;
        let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()")?;
        let deadline = std::time::Instant::now() + timeout;
        for n in self.nodes.iter().filter(|n| n.name != primary.name) {
            if !n.is_running() {
                continue;
            }
            let sql = format!(
                "SELECT CASE WHEN pg_is_in_recovery() \
                 THEN coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)::text \
                 ELSE 'primary' END",
                quote(&lsn)
            );
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            node::wait_until(
                remaining,
                &format!("{} to replay up to {lsn} from {}", n.name, primary.name),
                &mut || Ok(n.psql("postgres", &sql)? != "false"),
            )
            .map_err(|e| with_log(e, n))?;
        }
        Ok(())
    }

    /// Waits until every running standby's WAL receiver is `streaming`
    /// (`pg_stat_wal_receiver`); running nodes that are out of recovery are
    /// skipped. Useful after restarting, killing or re-pointing nodes.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        for n in &self.nodes {
            if !n.is_running() {
                continue;
            }
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            node::wait_until(remaining, &format!("{} to stream WAL", n.name), &mut || {
                let state = n.psql(
                    "postgres",
                    "SELECT CASE WHEN pg_is_in_recovery() \
                     THEN coalesce((SELECT status FROM pg_stat_wal_receiver), 'no wal receiver') \
                     ELSE 'primary' END",
                )?;
                Ok(state == "streaming" || state == "primary")
            })
            .map_err(|e| with_log(e, n))?;
        }
        Ok(())
    }
}

/// Appends a node's log tail to a wait timeout.
fn with_log(e: Error, n: &Node) -> Error {
    match e {
        Error::WaitTimeout { what, timeout } => Error::WaitTimeout {
            what: format!(
                "{what}\n--- last lines of {} ---\n{}",
                n.log_path().display(),
                n.log_tail(25)
            ),
            timeout,
        },
        other => other,
    }
}

//! One PostgreSQL server (primary or streaming replica) of a [`Cluster`](crate::Cluster).

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::creds;
use crate::error::Error;
use crate::pgbin::{psql_impl, OsUser, PgBin, DEFAULT_PSQL_TIMEOUT};
use crate::process;

/// Name of the per-node configuration file (in each data directory) that
/// `postgresql.conf` includes last. It holds the port, the replication
/// upstream and the node-specific settings.
pub const NODE_CONF_FILE: &str = "meridian_node.conf";

/// How long `pg_ctl start/stop/promote` may wait (`-t`).
const PG_CTL_WAIT_SECS: u64 = 60;

/// Shared, immutable context of one cluster.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) bin: PgBin,
    /// Unprivileged account the servers run as (set when we are root).
    pub(crate) run_as: Option<OsUser>,
    /// Canonical cluster directory (also the unix socket directory).
    pub(crate) dir: PathBuf,
    /// Canonical path of the `postgres` executable, to recognise our servers.
    pub(crate) postgres_exe: Option<PathBuf>,
}

impl Ctx {
    /// A command for PostgreSQL tool `tool`, run as the server account, with
    /// `PG*` variables removed, `LC_ALL=C`, cwd = cluster directory.
    pub(crate) fn pg_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.path(tool));
        process::scrub_pg_env(&mut cmd);
        cmd.env("LC_ALL", "C").current_dir(&self.dir);
        if let Some(u) = self.run_as {
            cmd.uid(u.uid).gid(u.gid).env("HOME", &self.dir);
        }
        cmd
    }

    /// Runs `pg_command(tool)` with `args`, failing on non-zero exit.
    pub(crate) fn run_pg<I, S>(
        &self,
        tool: &str,
        args: I,
        timeout: Duration,
    ) -> Result<process::Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.pg_command(tool);
        cmd.args(args);
        let desc = process::describe(&cmd);
        process::run(&mut cmd, None, timeout)?.check(&desc)
    }

    /// Hands `path` to the server account (no-op when not root).
    pub(crate) fn give(&self, path: &Path) -> Result<(), Error> {
        if let Some(u) = self.run_as {
            chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Writes a file readable by the servers.
    pub(crate) fn write_file(&self, path: &Path, contents: &str) -> Result<(), Error> {
        std::fs::write(path, contents)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.give(path)
    }

    /// Appends to an existing file.
    pub(crate) fn append_file(&self, path: &Path, contents: &str) -> Result<(), Error> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
    }
}

/// Quotes a value for postgresql.conf / SQL string literals.
pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Validates a GUC name (so it can be spliced into `ALTER SYSTEM SET`).
pub(crate) fn check_setting_name(key: &str) -> Result<(), Error> {
    let mut chars = key.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("invalid setting name {key:?}")))
    }
}

/// Where a replica streams from.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) port: u16,
    pub(crate) slot: Option<String>,
}

/// Contents of a node's [`NODE_CONF_FILE`].
#[derive(Debug, Clone)]
pub(crate) struct NodeConf {
    pub(crate) upstream: Option<Upstream>,
    pub(crate) settings: Vec<(String, String)>,
}

/// One PostgreSQL server of a [`Cluster`](crate::Cluster): the primary
/// (`pg1`) or a streaming replica (`pg2`, `pg3`, ...).
///
/// Cloning gives another handle to the same server (cheap). Handles are
/// `Send + Sync`. The server itself is owned by the cluster: dropping the
/// [`Cluster`](crate::Cluster) stops it even if handles remain.
#[derive(Clone)]
pub struct Node {
    /// Node name: `pg1` is the initial primary, `pg2`, `pg3`, ... the replicas.
    /// Also the replica's `application_name` and replication slot name.
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory.
    pub datadir: PathBuf,
    ctx: Arc<Ctx>,
    conf: Arc<Mutex<NodeConf>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("datadir", &self.datadir)
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        name: &str,
        port: u16,
        upstream: Option<Upstream>,
        settings: Vec<(String, String)>,
    ) -> Node {
        Node {
            name: name.to_string(),
            port,
            datadir: ctx.dir.join(name),
            ctx,
            conf: Arc::new(Mutex::new(NodeConf { upstream, settings })),
        }
    }

    fn conf(&self) -> std::sync::MutexGuard<'_, NodeConf> {
        self.conf
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Renders and writes [`NODE_CONF_FILE`] from the in-memory state.
    pub(crate) fn write_conf(&self) -> Result<(), Error> {
        let conf = self.conf().clone();
        let mut s = String::from(
            "# Managed by meridian-testkit: per-node settings, included last from postgresql.conf.\n",
        );
        s.push_str(&format!("port = {}\n", self.port));
        if let Some(up) = &conf.upstream {
            let conninfo = format!(
                "host=127.0.0.1 port={} user={} password={} application_name={} connect_timeout=5",
                up.port,
                creds::REPL_USER,
                creds::REPL_PASSWORD,
                self.name
            );
            s.push_str(&format!("primary_conninfo = {}\n", quote(&conninfo)));
            if let Some(slot) = &up.slot {
                s.push_str(&format!("primary_slot_name = {}\n", quote(slot)));
            }
        }
        for (k, v) in &conf.settings {
            s.push_str(&format!("{k} = {}\n", quote(v)));
        }
        self.ctx.write_file(&self.datadir.join(NODE_CONF_FILE), &s)
    }

    /// Adds or replaces a setting in [`NODE_CONF_FILE`] (takes effect on the
    /// next reload/restart).
    pub(crate) fn put_conf_setting(&self, key: &str, value: &str) -> Result<(), Error> {
        {
            let mut conf = self.conf();
            conf.settings.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
            conf.settings.push((key.to_string(), value.to_string()));
        }
        self.write_conf()
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Directory holding this node's unix socket (the cluster directory).
    pub fn socket_dir(&self) -> &Path {
        &self.ctx.dir
    }

    /// The server log (`<cluster dir>/<name>.log`; `pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.ctx.dir.join(format!("{}.log", self.name))
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::file_tail(&self.log_path(), 0, lines)
    }

    /// libpq key/value connection string for this node, e.g.
    /// `host=127.0.0.1 port=15432 user=app password=app-secret dbname=app`.
    pub fn conninfo(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let mut s = format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port);
        if let Some(pw) = password {
            s.push_str(&format!(" password={pw}"));
        }
        s
    }

    /// `postgres://user:password@127.0.0.1:port/db` URL for this node
    /// (credentials are not percent-encoded; the [`creds`] ones need none).
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        match password {
            Some(pw) => format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// PID of the running postmaster (first line of `postmaster.pid`), or
    /// `None` if the file is missing or that process is no longer alive
    /// (zombies count as dead; a recycled pid is recognised because the
    /// process would not run in this data directory).
    pub fn postmaster_pid(&self) -> Option<i32> {
        process::postmaster_pid(&self.datadir)
    }

    /// True if the postmaster is alive (it may still be starting up).
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Starts the server with `pg_ctl start -w` (log appended to
    /// [`log_path`](Self::log_path)) and waits until it accepts connections.
    /// A no-op if it is already running. After a crash ([`kill9`](Self::kill9)
    /// or an external kill) stale lock files are cleaned up first and the
    /// server performs crash recovery.
    pub fn start(&self) -> Result<(), Error> {
        if self.is_running() {
            return Ok(());
        }
        self.clear_stale_state()?;
        let log = self.log_path();
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.ctx.pg_command("pg_ctl");
        cmd.args(["start", "-w", "-s", "-t"])
            .arg(PG_CTL_WAIT_SECS.to_string())
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&log);
        let res = process::run(&mut cmd, None, Duration::from_secs(PG_CTL_WAIT_SECS + 30));
        let reason = match res {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => format!(
                "pg_ctl start exited with {}: {}",
                out.status,
                format!("{}\n{}", out.stdout.trim(), out.stderr.trim()).trim()
            ),
            Err(e) => e.to_string(),
        };
        // A start that timed out may have left a server behind; it is ours.
        if let Some(pid) = self.postmaster_pid() {
            process::kill_instance(
                &self.datadir,
                self.ctx.postgres_exe.as_deref(),
                Some(pid),
                Duration::from_secs(10),
            );
        }
        let mut log_tail = process::file_tail(&log, offset, 40);
        if log_tail.trim().is_empty() {
            log_tail = process::file_tail(&log, 0, 20);
        }
        Err(Error::NodeStart {
            node: self.name.clone(),
            reason,
            log,
            log_tail,
        })
    }

    /// After the postmaster died: wait for (then kill) orphaned server
    /// processes of this data directory, and remove lock files that would
    /// make the next start fail (a zombie postmaster still "owns" them).
    fn clear_stale_state(&self) -> Result<(), Error> {
        let exe = self.ctx.postgres_exe.as_deref();
        if !process::wait_instance_gone(&self.datadir, exe, Duration::from_secs(5))
            && !process::kill_instance(&self.datadir, exe, None, Duration::from_secs(10))
        {
            return Err(Error::WaitTimeout {
                what: format!("old server processes of {} to exit", self.name),
                timeout: Duration::from_secs(15),
            });
        }
        let pidfile = self.datadir.join("postmaster.pid");
        if pidfile.exists() {
            std::fs::remove_file(&pidfile)
                .map_err(|e| Error::io(format!("removing stale {}", pidfile.display()), e))?;
        }
        let sock_lock = self.ctx.dir.join(format!(".s.PGSQL.{}.lock", self.port));
        if let Ok(s) = std::fs::read_to_string(&sock_lock) {
            let pid = s.lines().next().and_then(|l| l.trim().parse::<i32>().ok());
            if !pid.is_some_and(process::process_alive) {
                let _ = std::fs::remove_file(&sock_lock);
                let _ = std::fs::remove_file(self.ctx.dir.join(format!(".s.PGSQL.{}", self.port)));
            }
        }
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m fast -w`. A no-op if it is not
    /// running.
    pub fn stop(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        self.ctx.run_pg(
            "pg_ctl",
            [
                "stop".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-s".as_ref(),
                "-t".as_ref(),
                PG_CTL_WAIT_SECS.to_string().as_ref(),
                "-D".as_ref(),
                self.datadir.as_os_str(),
            ],
            Duration::from_secs(PG_CTL_WAIT_SECS + 30),
        )?;
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m immediate` (backends quit at once, telling their
    /// clients with a WARNING, and connections drop), then SIGKILLs anything left. A no-op if
    /// it is not running.
    pub fn stop_immediate(&self) -> Result<(), Error> {
        if self.is_running() {
            stop_immediately(&self.ctx, &self.datadir);
        }
        Ok(())
    }

    /// Simulates a crash: SIGKILLs the postmaster (pid from the first line of
    /// `postmaster.pid`) and then every remaining server process of this data
    /// directory, and waits until they are all gone, so their connections are
    /// dropped at once. Errors with [`Error::NotRunning`] if the postmaster
    /// is not running. [`start`](Self::start) afterwards runs crash recovery.
    pub fn kill9(&self) -> Result<(), Error> {
        let pid = self
            .postmaster_pid()
            .ok_or_else(|| Error::NotRunning(self.name.clone()))?;
        if process::kill_instance(
            &self.datadir,
            self.ctx.postgres_exe.as_deref(),
            Some(pid),
            Duration::from_secs(10),
        ) {
            Ok(())
        } else {
            Err(Error::WaitTimeout {
                what: format!("processes of {} to die after SIGKILL", self.name),
                timeout: Duration::from_secs(10),
            })
        }
    }

    /// [`stop`](Self::stop) then [`start`](Self::start).
    pub fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }

    /// `ALTER SYSTEM SET key = 'value'` followed by `SELECT pg_reload_conf()`
    /// (works on replicas too). Settings that need a restart take effect after
    /// [`restart`](Self::restart).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), Error> {
        check_setting_name(key)?;
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET {key} = {};\nSELECT pg_reload_conf();",
                quote(value)
            ),
        )?;
        Ok(())
    }

    /// `ALTER SYSTEM RESET key` followed by `SELECT pg_reload_conf()`.
    pub fn reset_setting(&self, key: &str) -> Result<(), Error> {
        check_setting_name(key)?;
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM RESET {key};\nSELECT pg_reload_conf();"),
        )?;
        Ok(())
    }

    /// Current value of a setting (`SHOW key`).
    pub fn show(&self, key: &str) -> Result<String, Error> {
        check_setting_name(key)?;
        self.psql("postgres", &format!("SHOW {key}"))
    }

    /// Runs SQL as the superuser over TCP (see [`PgBin::psql`]) and returns
    /// the trimmed output (`-At`: one row per line, columns separated by `|`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        self.psql_as(creds::SUPERUSER, Some(creds::SUPERUSER_PASSWORD), db, sql)
    }

    /// Like [`psql`](Self::psql) but connecting as `user` with `password`.
    pub fn psql_as(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
        sql: &str,
    ) -> Result<String, Error> {
        self.psql_with_timeout(user, password, db, sql, DEFAULT_PSQL_TIMEOUT)
    }

    /// Like [`psql_as`](Self::psql_as) with an explicit time limit.
    pub fn psql_with_timeout(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
        sql: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        psql_impl(
            &self.ctx.bin,
            &format!("{} ({})", self.name, self.addr()),
            self.addr(),
            user,
            password,
            db,
            sql,
            timeout,
        )
    }

    /// `SELECT pg_is_in_recovery()`: true on a standby.
    pub fn is_in_recovery(&self) -> Result<bool, Error> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// Promotes this standby (`pg_ctl promote -w`); returns once it accepts
    /// writes.
    pub fn promote(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        self.ctx.run_pg(
            "pg_ctl",
            [
                "promote".as_ref(),
                "-w".as_ref(),
                "-s".as_ref(),
                "-t".as_ref(),
                PG_CTL_WAIT_SECS.to_string().as_ref(),
                "-D".as_ref(),
                self.datadir.as_os_str(),
            ],
            Duration::from_secs(PG_CTL_WAIT_SECS + 30),
        )?;
        self.wait_until(Duration::from_secs(30), "promotion to finish", || {
            Ok(!self.is_in_recovery()?)
        })
    }

    /// Re-points this standby at `upstream` (e.g. a freshly promoted node):
    /// creates a physical slot named after this node on `upstream` if
    /// missing, rewrites `primary_conninfo`/`primary_slot_name` and reloads
    /// (PostgreSQL ≥ 13 restarts the WAL receiver on reload). The standby
    /// must not have replayed WAL past the new primary's fork point (call
    /// [`Cluster::wait_replicas_caught_up`](crate::Cluster::wait_replicas_caught_up)
    /// before promoting). Use [`Cluster::wait_streaming`](crate::Cluster::wait_streaming)
    /// to wait for the connection.
    pub fn follow(&self, upstream: &Node) -> Result<(), Error> {
        if !self.is_in_recovery()? {
            return Err(Error::Config(format!(
                "{} is not a standby and cannot follow {}",
                self.name, upstream.name
            )));
        }
        upstream.psql(
            "postgres",
            &format!(
                "SELECT pg_create_physical_replication_slot({0}, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {0})",
                quote(&self.name)
            ),
        )?;
        self.conf().upstream = Some(Upstream {
            port: upstream.port,
            slot: Some(self.name.clone()),
        });
        self.write_conf()?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// `SELECT status FROM pg_stat_wal_receiver` (e.g. `streaming`); empty
    /// if no WAL receiver runs.
    pub fn wal_receiver_status(&self) -> Result<String, Error> {
        self.psql("postgres", "SELECT status FROM pg_stat_wal_receiver")
    }

    /// Polls `cond` every 20 ms until it returns `Ok(true)`; errors from
    /// `cond` count as "not yet" and are reported on timeout.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut() -> Result<bool, Error>,
    ) -> Result<(), Error> {
        wait_until(timeout, &format!("{}: {what}", self.name), &mut cond)
    }
}

/// Polls `cond` until `Ok(true)` or `timeout`.
pub(crate) fn wait_until(
    timeout: Duration,
    what: &str,
    cond: &mut dyn FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(Error::WaitTimeout {
                what: match last_err {
                    Some(e) => format!("{what} (last error: {e})"),
                    None => what.to_string(),
                },
                timeout,
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stops whatever runs on `datadir` as fast as possible: `pg_ctl stop -m
/// immediate` if the postmaster is alive, then SIGKILL for anything left.
pub(crate) fn stop_immediately(ctx: &Ctx, datadir: &Path) {
    let pid = process::postmaster_pid(datadir);
    let exe = ctx.postgres_exe.as_deref();
    if let Some(pid) = pid {
        let res = ctx.run_pg(
            "pg_ctl",
            [
                "stop".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-s".as_ref(),
                "-t".as_ref(),
                "10".as_ref(),
                "-D".as_ref(),
                datadir.as_os_str(),
            ],
            Duration::from_secs(30),
        );
        if res.is_err() || process::process_alive(pid) {
            process::kill_instance(datadir, exe, Some(pid), Duration::from_secs(10));
        }
    }
    if !process::wait_instance_gone(datadir, exe, Duration::from_secs(2)) {
        process::kill_instance(datadir, exe, None, Duration::from_secs(10));
    }
}

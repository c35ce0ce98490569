//! Locating (and if need be installing) the PostgreSQL binaries, and running
//! `psql`.

use std::ffi::CString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::process;

/// Tools a bin directory must contain to be usable.
const REQUIRED_TOOLS: &[&str] = &["pg_ctl", "initdb", "postgres", "pg_basebackup", "psql"];

/// Environment variable that forces the PostgreSQL bin directory.
pub const BINDIR_ENV: &str = "MERIDIAN_PG_BINDIR";

/// Default time limit for a `psql` invocation.
pub const DEFAULT_PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory holding the PostgreSQL server and client binaries
/// (`pg_ctl`, `initdb`, `postgres`, `pg_basebackup`, `psql`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgBin {
    /// The bin directory, e.g. `/usr/lib/postgresql/15/bin`.
    pub bindir: PathBuf,
}

impl PgBin {
    /// Wraps an explicit bin directory (no validation; see [`ensure_postgres`]).
    pub fn new(bindir: impl Into<PathBuf>) -> Self {
        PgBin {
            bindir: bindir.into(),
        }
    }

    /// Full path of the tool `name` in this bin directory, e.g.
    /// `bin.path("pg_ctl")`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// True if every tool the testkit needs exists in [`bindir`](Self::bindir).
    pub fn is_complete(&self) -> bool {
        REQUIRED_TOOLS.iter().all(|t| self.path(t).is_file())
    }

    /// The server's major version (e.g. `15`), from `postgres --version`.
    pub fn major_version(&self) -> Result<u32, Error> {
        let mut cmd = Command::new(self.path("postgres"));
        cmd.arg("--version");
        let desc = process::describe(&cmd);
        let out = process::run(&mut cmd, None, Duration::from_secs(30))?.check(&desc)?;
        // "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
        out.stdout
            .split_whitespace()
            .find_map(|w| {
                let major = w.split('.').next()?;
                if w.contains('.') || w.chars().all(|c| c.is_ascii_digit()) {
                    major.parse::<u32>().ok()
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                Error::PostgresNotFound(format!(
                    "cannot parse version from `{}`",
                    out.stdout.trim()
                ))
            })
    }

    /// Runs `psql` against `addr` as `user` (with `password`, if any) on
    /// database `db`, feeding `sql` on stdin with
    /// `-X -q -A -t -v ON_ERROR_STOP=1 -w`, and returns its trimmed stdout.
    ///
    /// Each statement of a multi-statement `sql` runs in its own transaction
    /// (like `psql -f`), and only query results are printed (no command tags).
    /// Works against anything speaking the protocol, e.g. a proxy.
    pub fn psql(
        &self,
        addr: SocketAddr,
        user: &str,
        password: Option<&str>,
        db: &str,
        sql: &str,
    ) -> Result<String, Error> {
        self.psql_with_timeout(addr, user, password, db, sql, DEFAULT_PSQL_TIMEOUT)
    }

    /// Like [`psql`](Self::psql) with an explicit time limit (psql is killed
    /// and [`Error::CommandTimeout`] returned when it is exceeded).
    pub fn psql_with_timeout(
        &self,
        addr: SocketAddr,
        user: &str,
        password: Option<&str>,
        db: &str,
        sql: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        psql_impl(
            self,
            &addr.to_string(),
            addr,
            user,
            password,
            db,
            sql,
            timeout,
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn psql_impl(
    bin: &PgBin,
    target: &str,
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let mut cmd = Command::new(bin.path("psql"));
    process::scrub_pg_env(&mut cmd);
    cmd.env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "meridian-testkit")
        .env("PGCLIENTENCODING", "UTF8")
        .env("PGSSLMODE", "disable")
        .env("LC_ALL", "C");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-U")
        .arg(user)
        .arg("-d")
        .arg(db)
        .args(["-f", "-"]);
    let out = process::run(&mut cmd, Some(sql.as_bytes().to_vec()), timeout)?;
    if out.status.success() {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(Error::Psql {
            target: target.to_string(),
            user: user.to_string(),
            db: db.to_string(),
            sql: sql.to_string(),
            stderr: if out.stderr.trim().is_empty() {
                format!("psql exited with {}", out.status)
            } else {
                out.stderr.trim().to_string()
            },
        })
    }
}

static FOUND: OnceLock<PgBin> = OnceLock::new();
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// Finds a usable PostgreSQL bin directory, installing PostgreSQL if needed.
///
/// Search order: `$MERIDIAN_PG_BINDIR`; `pg_config --bindir`; the highest
/// version under `/usr/lib/postgresql/*/bin`; a `PATH` directory containing
/// `pg_ctl`. A directory qualifies only if it has `pg_ctl`, `initdb`,
/// `postgres`, `pg_basebackup` and `psql`.
///
/// If nothing is found and we run as root on a system with `apt-get`, runs
/// `apt-get update && apt-get install -y postgresql`
/// (`DEBIAN_FRONTEND=noninteractive`) once per process and searches again.
/// The result is cached for the rest of the process.
pub fn ensure_postgres() -> Result<PgBin, Error> {
    if let Some(b) = FOUND.get() {
        return Ok(b.clone());
    }
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(b) = FOUND.get() {
        return Ok(b.clone());
    }
    if let Some(b) = find_postgres() {
        return Ok(FOUND.get_or_init(|| b).clone());
    }
    if !is_root() {
        return Err(Error::PostgresNotFound(format!(
            "no directory with {} found (tried ${BINDIR_ENV}, `pg_config --bindir`, \
             /usr/lib/postgresql/*/bin and PATH); install PostgreSQL (e.g. \
             `sudo apt-get install postgresql`) or set {BINDIR_ENV}",
            REQUIRED_TOOLS.join(", ")
        )));
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(Error::PostgresNotFound(
            "not found and apt-get is unavailable to install it; install PostgreSQL or set \
             MERIDIAN_PG_BINDIR"
                .to_string(),
        ));
    }
    for args in [&["update"][..], &["install", "-y", "postgresql"][..]] {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let desc = process::describe(&cmd);
        process::run(&mut cmd, None, Duration::from_secs(30 * 60))?
            .check(&desc)
            .map_err(|e| {
                Error::PostgresNotFound(format!("installing PostgreSQL with apt-get failed: {e}"))
            })?;
    }
    match find_postgres() {
        Some(b) => Ok(FOUND.get_or_init(|| b).clone()),
        None => Err(Error::PostgresNotFound(
            "`apt-get install postgresql` succeeded but pg_ctl/initdb are still not found"
                .to_string(),
        )),
    }
}

fn find_postgres() -> Option<PgBin> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let b = PgBin::new(dir);
        if b.is_complete() {
            return Some(b);
        }
    }
    let mut cmd = Command::new("pg_config");
    cmd.arg("--bindir");
    if let Ok(out) = process::run(&mut cmd, None, Duration::from_secs(20)) {
        if out.status.success() {
            let b = PgBin::new(out.stdout.trim());
            if b.is_complete() {
                return Some(b);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let Ok(key) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = ent.path().join("bin");
            if PgBin::new(&bin).is_complete() {
                versions.push((key, bin));
            }
        }
    }
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(PgBin::new(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(PgBin::new)
        .find(PgBin::is_complete)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An OS account the servers run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OsUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Looks up `name` with getpwnam_r.
pub(crate) fn lookup_user(name: &str) -> Result<OsUser, Error> {
    let err = |reason: String| Error::User {
        user: name.to_string(),
        reason,
    };
    let cname = CString::new(name).map_err(|_| err("name contains NUL".to_string()))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call
        // and we only read plain integer fields afterwards.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(err(std::io::Error::from_raw_os_error(rc).to_string()));
        }
        if result.is_null() {
            return Err(err(
                "no such user; PostgreSQL refuses to run as root, so an unprivileged \
                 `postgres` account is required (installing the `postgresql` package creates it)"
                    .to_string(),
            ));
        }
        return Ok(OsUser {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

//! Child-process helpers: running commands with a time limit, inspecting and
//! signalling the server processes of one data directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Captured result of a finished command.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Turns a non-zero exit into [`Error::Command`].
    pub(crate) fn check(self, command: &str) -> Result<Output, Error> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(Error::Command {
                command: command.to_string(),
                status: self.status.to_string(),
                stdout: self.stdout,
                stderr: self.stderr,
            })
        }
    }
}

/// A printable command line.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Removes every `PG*` variable (PGHOST, PGPORT, PGPASSWORD, PGDATA, ...)
/// inherited from the environment so they cannot redirect our tools.
pub(crate) fn scrub_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

/// Runs `cmd` to completion (feeding `stdin` if given), capturing stdout and
/// stderr, and kills it if it takes longer than `timeout`.
pub(crate) fn run(
    cmd: &mut Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, Error> {
    let desc = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        command: desc.clone(),
        source,
    })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            let _ = tx.send((true, buf));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            let _ = tx.send((false, buf));
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut pending = 2;
    while pending > 0 {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((true, b)) => {
                stdout = b;
                pending -= 1;
            }
            Ok((false, b)) => {
                stderr = b;
                pending -= 1;
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if exited.is_none() {
                    if let Ok(Some(st)) = child.try_wait() {
                        exited = Some((st, Instant::now()));
                    }
                }
                match exited {
                    // Some grandchild inherited the pipes; don't wait for it.
                    Some((_, at)) if at.elapsed() > Duration::from_secs(2) => break,
                    Some(_) => {}
                    None if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(Error::CommandTimeout {
                            command: desc,
                            timeout,
                        });
                    }
                    None => {}
                }
            }
        }
    }
    let status = match exited {
        Some((st, _)) => st,
        None => wait_deadline(&mut child, deadline, &desc, timeout)?,
    };
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn wait_deadline(
    child: &mut Child,
    deadline: Instant,
    desc: &str,
    timeout: Duration,
) -> Result<ExitStatus, Error> {
    let mut nap = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st),
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("waiting for `{desc}`"), e)),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::CommandTimeout {
                command: desc.to_string(),
                timeout,
            });
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// `(state, ppid)` from `/proc/<pid>/stat`, `None` if there is no such process.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` names a live process. Zombies count as dead: in containers
/// whose PID 1 does not reap orphans, an exited postmaster stays a zombie.
pub(crate) fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if Path::new("/proc/self/stat").exists() {
        return matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X');
    }
    // Non-Linux fallback.
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The live postmaster recorded in `datadir/postmaster.pid` (first line),
/// if that process is alive and (where `/proc` tells) still runs in
/// `datadir` — so a recycled pid is never mistaken for our server.
pub(crate) fn postmaster_pid(datadir: &Path) -> Option<i32> {
    let s = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: i32 = s.lines().next()?.trim().parse().ok()?;
    if !process_alive(pid) {
        return None;
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => (cwd == datadir).then_some(pid),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No /proc (non-Linux) or the process just vanished.
            (!Path::new("/proc/self").exists() && process_alive(pid)).then_some(pid)
        }
        // Not allowed to look: trust the pid file.
        Err(_) => Some(pid),
    }
}

/// Sends `sig` to `pid` (ignoring errors such as "no such process").
pub(crate) fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a positive pid we identified as ours.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Live processes that run the `postgres` executable `exe` with their
/// working directory at `datadir` — i.e. the postmaster and all backends /
/// auxiliary processes of the server on that data directory (PostgreSQL
/// chdirs into its data directory at startup).
pub(crate) fn instance_pids(datadir: &Path, exe: Option<&Path>) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id() as i32;
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = PathBuf::from(format!("/proc/{pid}"));
        match std::fs::read_link(base.join("cwd")) {
            Ok(cwd) if cwd == datadir => {}
            _ => continue,
        }
        if let Some(exe) = exe {
            match std::fs::read_link(base.join("exe")) {
                Ok(p) if p == exe => {}
                _ => continue,
            }
        }
        if process_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs every server process of `datadir` (the postmaster `first`, if
/// given, before the others) and waits until none is left.
pub(crate) fn kill_instance(
    datadir: &Path,
    exe: Option<&Path>,
    first: Option<i32>,
    timeout: Duration,
) -> bool {
    if let Some(pm) = first {
        signal(pm, libc::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let pids = instance_pids(datadir, exe);
        let pm_alive = first.is_some_and(process_alive);
        if pids.is_empty() && !pm_alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for p in pids {
            signal(p, libc::SIGKILL);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until none of `datadir`'s server processes is alive.
pub(crate) fn wait_instance_gone(datadir: &Path, exe: Option<&Path>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if instance_pids(datadir, exe).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of a text file read from byte `offset` on
/// (the whole tail if the file is shorter).
pub(crate) fn file_tail(path: &Path, offset: u64, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("(log file {} not readable)", path.display());
    };
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

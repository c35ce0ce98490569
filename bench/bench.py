#!/usr/bin/env python3
"""Meridian benchmark: pgbench through Meridian, PgBouncer and Pgpool-II, against a direct baseline.

`make bench` runs this script (Python 3 standard library only). In one run it

1. installs what is missing (apt-get: postgresql for pgbench, pgbouncer, pgpool2) and stops the
   packaged services those packages start;
2. starts a real cluster with `meridian demo` (a primary and 2 streaming replicas);
3. starts a plain TCP relay to the primary (the `hop` example of meridian-testkit: the floor of
   one proxy hop), PgBouncer (transaction pooling, primary only), Pgpool-II (streaming
   replication mode, load balancing over all three nodes) and the Meridian instances
   (passthrough; full routing with session consistency; the same with auto-prepare; the same
   with `pool_mode = "transaction"`), each on a free port in a temporary directory;
4. loads pgbench data (`pgbench -i`) once on the primary and waits for the replicas;
5. runs the same pgbench workloads against every target and computes tps, mean latency and p99
   (from pgbench's per-transaction logs), plus each proxy's CPU per 10k transactions;
6. measures Meridian's memory per idle authenticated client (and PgBouncer's, for comparison);
7. writes a Markdown report to bench/results/<date>.md and prints it.

`--smoke` is the quick variant `make test` can run: direct and Meridian (routing, in both pool
modes) only, plus
PgBouncer if it is already installed, two short workloads, a few idle connections, no installs
of the other proxies, no report file. It exits non-zero only if a run against direct or
Meridian fails; there are no performance thresholds anywhere.

Every process the script starts is stopped at the end, on Ctrl-C, on SIGTERM and on errors.
It never signals a process it did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import glob
import hashlib
import hmac
import math
import os
import platform
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Credentials of the demo cluster (crates/testkit/src/lib.rs, `creds`).
SUPERUSER, SUPERUSER_PW = "postgres", "postgres-secret"
APP_USER, APP_PW, APP_DB = "app", "app-secret", "app"
MD5_USER, MD5_PW = "app_md5", "md5-secret"

TARGET_ORDER = ["direct", "relay", "pgbouncer", "pgpool", "meridian-passthrough",
                "meridian-routing", "meridian-autoprep", "meridian-txpool"]
# The Meridian targets whose failure fails the smoke run.
SMOKE_MERIDIAN = ("meridian-routing", "meridian-autoprep", "meridian-txpool")
TARGET_TITLES = {
    "direct": "direct (primary)",
    "relay": "plain TCP relay (one hop)",
    "pgbouncer": "PgBouncer (transaction)",
    "pgpool": "Pgpool-II (load balance)",
    "meridian-passthrough": "Meridian passthrough",
    "meridian-routing": "Meridian routing (session)",
    "meridian-autoprep": "Meridian routing + auto-prepare",
    "meridian-txpool": "Meridian routing (transaction pool)",
}

# Transaction pool size of the meridian-txpool target (per node), as PgBouncer's
# default_pool_size.
TXPOOL_SIZE = 20

# key, title, pgbench arguments, clients, fraction of --duration
WORKLOADS = [
    ("select-simple", "Select-only, simple protocol", ["-S", "-M", "simple"], 16, 1.0),
    ("select-extended", "Select-only, extended protocol", ["-S", "-M", "extended"], 16, 1.0),
    ("select-prepared", "Select-only, prepared statements", ["-S", "-M", "prepared"], 16, 1.0),
    ("tpcb-simple", "TPC-B-like (read-write transactions), simple protocol", ["-M", "simple"],
     16, 1.0),
    ("select-64", "Select-only, simple protocol", ["-S", "-M", "simple"], 64, 1.0),
    ("select-1", "Select-only, simple protocol", ["-S", "-M", "simple"], 1, 1.0),
    ("select-connect", "Select-only, a new connection per transaction (`-C`)",
     ["-S", "-M", "simple", "-C"], 8, 0.5),
    ("select-1000", "Select-only, prepared statements, 1,000 clients on pools of 20",
     ["-S", "-M", "prepared"], 1000, 1.0),
]
# Workloads only some targets run: 1,000 clients are for the transaction poolers (direct, and
# Meridian in session mode, would need 1,000 server connections).
WORKLOAD_TARGETS = {"select-1000": ["pgbouncer", "meridian-txpool"]}
SMOKE_WORKLOADS = ["select-simple", "select-prepared", "tpcb-simple"]
SMOKE_CLIENTS = 4

CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Small helpers


def find_exe(name: str) -> str | None:
    """`name` on PATH, in the sbin directories (pgbouncer, pgpool live there) or in
    /usr/lib/postgresql/*/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin"]:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


_used_ports: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise BenchError("no free port")


def wait_port(port: int, timeout: float, proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode} before listening "
                             f"on port {port}; log: {proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({e})"


def run_as_kwargs(user: str | None) -> dict:
    """Popen arguments that run the child as `user` (when we are root)."""
    if not user or not IS_ROOT:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


# --------------------------------------------------------------------------------------------
# Processes we start (and only those) are tracked here and stopped in reverse order.


# Whether each started server gets a session of its own (`--sched separate`). With the
# kernel's autogroup scheduling (sched_autogroup_enabled, on in most distributions) a session
# is a scheduling group that gets a fair share of CPU as a whole, as a systemd service's cgroup
# does; by default every process stays in the bench's session and the scheduler weighs
# threads, as when everything is started from one shell.
SEPARATE_SESSIONS = False
# How the proxies reach PostgreSQL: "tcp" (127.0.0.1) or "unix" (the cluster's socket directory).
UPSTREAM = "tcp"
# How pgbench reaches each target: "tcp" (127.0.0.1) or "unix" (the target's Unix-domain socket;
# Pgpool-II stays on TCP).
CLIENT = "tcp"


def upstream_host(cluster) -> str:
    """The host the proxies connect to: 127.0.0.1, or the directory of the cluster's sockets
    (the parent of the data directories, see meridian-testkit)."""
    if UPSTREAM == "unix":
        return str(Path(cluster.nodes[0][2]).parent)
    return "127.0.0.1"


class Proc:
    """A long-running child in its own process group (and session with `--sched separate`).
    `stop` signals only this child (then, if it does not exit, its own process group, which
    holds only processes it started)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 user: str | None = None, stop_signal: int = signal.SIGTERM,
                 cwd: str | None = None, capture_stdout: bool = False,
                 stop_timeout: float = 20.0):
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._log = open(log_path, "ab")
        self._reader = None
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            **({"start_new_session": True} if SEPARATE_SESSIONS else {"process_group": 0}),
            **run_as_kwargs(user),
        )
        self.pid = self.popen.pid
        if capture_stdout:
            self._reader = threading.Thread(target=self._pump, daemon=True)
            self._reader.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            self._log.write(raw)
            self._log.flush()
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)  # type: ignore[arg-type]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not stop in {self.stop_timeout:.0f}s; "
                    "killing its process group")
        # Whatever is left in the group we created (children that outlived their parent).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        try:
            self._log.close()
        except OSError:
            pass


def group_cpu_ticks(pgid: int) -> int:
    """utime+stime (+ reaped children's) of every live process in process group `pgid`."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = data.rsplit(")", 1)[-1].split()
        # rest[0] is field 3 (state): field n is rest[n - 3].
        if int(rest[2]) != pgid:
            continue
        total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------------------------
# Installation


def ensure_packages(smoke: bool) -> list[str]:
    """apt-get installs what is missing; returns notes for the report."""
    notes = []
    need = []
    if not (find_exe("pgbench") and find_exe("psql") and find_exe("pg_ctl")):
        need += ["postgresql", "postgresql-contrib"]
    if not smoke:
        if not find_exe("pgbouncer"):
            need.append("pgbouncer")
        if not find_exe("pgpool"):
            need.append("pgpool2")
    if not need:
        return notes
    if not shutil.which("apt-get"):
        log(f"cannot install {need}: no apt-get")
        return [f"not installed (no apt-get): {', '.join(need)}"]
    sudo = [] if IS_ROOT else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(need)} with apt-get")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, check=False)
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + need, env=env,
                       stdout=subprocess.DEVNULL, check=False)
    if r.returncode != 0:
        notes.append(f"apt-get install {' '.join(need)} exited with {r.returncode}")
    # The packages start their own services (PgBouncer on 6432, Pgpool on 5432, a default
    # PostgreSQL cluster): stop and disable the services of what we just installed.
    services = {"postgresql": "postgresql", "pgbouncer": "pgbouncer", "pgpool2": "pgpool2"}
    for pkg in need:
        svc = services.get(pkg)
        if not svc:
            continue
        if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
            subprocess.run(sudo + ["systemctl", "disable", "--now", svc],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        elif shutil.which("service"):
            subprocess.run(sudo + ["service", svc, "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if shutil.which("update-rc.d"):
                subprocess.run(sudo + ["update-rc.d", svc, "disable"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    notes.append(f"installed with apt-get: {', '.join(need)}")
    return notes


def ensure_meridian(path: Path) -> None:
    """Builds target/release/meridian from the checkout (cargo does nothing when it is up to
    date), so that a report never describes an older build than the checkout it names."""
    log("cargo build --release -p meridian")
    r = subprocess.run(["cargo", "build", "--release", "-p", "meridian"], cwd=REPO)
    if r.returncode != 0 or not path.exists():
        raise BenchError("cargo build --release -p meridian failed")


# --------------------------------------------------------------------------------------------
# psql


def psql(port: int, sql: str | list[str], user: str = SUPERUSER, password: str = SUPERUSER_PW,
         db: str = "postgres", timeout: float = 60) -> str:
    argv = [find_exe("psql") or "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db]
    for s in ([sql] if isinstance(sql, str) else sql):
        argv += ["-c", s]
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"psql on port {port} failed: {r.stderr.strip()}")
    return r.stdout.strip()


# --------------------------------------------------------------------------------------------
# A minimal PostgreSQL client (startup + SCRAM-SHA-256 / md5 / cleartext) for idle connections.

_scram_cache: dict = {}


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


async def pg_login(port: int, user: str, password: str, db: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                    for k, v in (("user", user), ("database", db))) + b"\0"
    writer.write(struct.pack("!ii", 8 + len(body), 196608) + body)
    pw = password.encode()
    client_first_bare = server_sig = None
    while True:
        head = await reader.readexactly(5)
        tag, length = head[:1], struct.unpack("!i", head[1:])[0]
        payload = await reader.readexactly(length - 4)
        if tag == b"R":
            code = struct.unpack("!i", payload[:4])[0]
            if code == 0:
                continue
            if code == 3:  # cleartext
                m = pw + b"\0"
                writer.write(b"p" + struct.pack("!i", 4 + len(m)) + m)
            elif code == 5:  # md5
                inner = hashlib.md5(pw + user.encode()).hexdigest().encode()
                m = b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode() + b"\0"
                writer.write(b"p" + struct.pack("!i", 4 + len(m)) + m)
            elif code == 10:  # SASL
                mechs = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise BenchError(f"server offers {mechs}, not SCRAM-SHA-256")
                nonce = base64.b64encode(os.urandom(18)).decode()
                client_first_bare = f"n=,r={nonce}"
                first = ("n,," + client_first_bare).encode()
                m = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
                writer.write(b"p" + struct.pack("!i", 4 + len(m)) + m)
            elif code == 11:  # SASLContinue
                server_first = payload[4:].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
                key = (pw, salt, iters)
                if key not in _scram_cache:
                    _scram_cache[key] = hashlib.pbkdf2_hmac("sha256", pw, salt, iters)
                salted = _scram_cache[key]
                client_key = _hmac(salted, b"Client Key")
                stored_key = hashlib.sha256(client_key).digest()
                without_proof = f"c=biws,r={attrs['r']}"
                auth_msg = f"{client_first_bare},{server_first},{without_proof}".encode()
                proof = bytes(a ^ b for a, b in zip(client_key, _hmac(stored_key, auth_msg)))
                server_sig = _hmac(_hmac(salted, b"Server Key"), auth_msg)
                m = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
                writer.write(b"p" + struct.pack("!i", 4 + len(m)) + m)
            elif code == 12:  # SASLFinal
                final = payload[4:].decode()
                if final != "v=" + base64.b64encode(server_sig or b"").decode():
                    raise BenchError("bad SCRAM server signature")
            else:
                raise BenchError(f"unsupported authentication request {code}")
        elif tag == b"E":
            fields = dict((f[:1].decode(), f[1:].decode("utf-8", "replace"))
                          for f in payload.split(b"\0") if f)
            raise BenchError(f"{fields.get('C', '?')}: {fields.get('M', '?')}")
        elif tag == b"Z":
            return reader, writer
        # 'S' ParameterStatus, 'K' BackendKeyData, 'N' NoticeResponse, 'v': ignored


async def _open_idle(port: int, n: int, user: str, password: str, db: str, parallel: int):
    sem = asyncio.Semaphore(parallel)
    errors: list[str] = []

    async def one():
        async with sem:
            try:
                return await asyncio.wait_for(pg_login(port, user, password, db), 60)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(str(e) or type(e).__name__)
                return None

    conns = [c for c in await asyncio.gather(*(one() for _ in range(n))) if c]
    return conns, errors


async def _close_idle(conns) -> None:
    for _, w in conns:
        try:
            w.write(b"X\0\0\0\4")
            w.close()
        except Exception:  # noqa: BLE001
            pass
    for _, w in conns:
        try:
            await w.wait_closed()
        except Exception:  # noqa: BLE001
            pass


def measure_idle_rss(pid: int, port: int, n: int, settle: float = 2.0) -> dict:
    """VmRSS of `pid` before, with `n` idle authenticated clients, and after they leave."""
    res: dict = {"n": n}

    async def go():
        res["before"] = vm_rss_kib(pid)
        t0 = time.monotonic()
        conns, errors = await _open_idle(port, n, APP_USER, APP_PW, APP_DB, parallel=32)
        res["open_s"] = time.monotonic() - t0
        res["ok"], res["errors"] = len(conns), errors
        await asyncio.sleep(settle)
        res["with"] = vm_rss_kib(pid)
        # Still usable? One query on one of the connections.
        if conns:
            r, w = conns[0]
            q = b"SELECT 1\0"
            w.write(b"Q" + struct.pack("!i", 4 + len(q)) + q)
            await w.drain()
            while True:
                head = await asyncio.wait_for(r.readexactly(5), 10)
                await r.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                if head[:1] == b"Z":
                    break
        await _close_idle(conns)
        await asyncio.sleep(settle)
        res["after"] = vm_rss_kib(pid)
        # A second round: memory kept after the first one should be reused, not added to.
        conns, _ = await _open_idle(port, n, APP_USER, APP_PW, APP_DB, parallel=32)
        await asyncio.sleep(settle)
        res["with2"] = vm_rss_kib(pid)
        await _close_idle(conns)
        await asyncio.sleep(settle)
        res["after2"] = vm_rss_kib(pid)

    asyncio.run(go())
    ok = max(res["ok"], 1)
    res["per_conn_kib"] = (res["with"] - res["before"]) / ok
    return res


# --------------------------------------------------------------------------------------------
# The cluster (meridian demo)


class Cluster:
    def __init__(self, meridian: Path, tmp: Path, procs: list):
        self.port = free_port()
        self.proc = Proc("meridian-demo", [str(meridian), "demo", "--port", str(self.port),
                                            "--replicas", "2"],
                         tmp / "demo.log", env={"RUST_LOG": "warn"},
                         stop_signal=signal.SIGINT, capture_stdout=True, stop_timeout=60)
        procs.append(self.proc)
        self.nodes: list[tuple[str, int, str]] = []  # (name, port, datadir)
        self.url = None
        self.bindir = None
        deadline = time.monotonic() + 180
        node_re = re.compile(r"^\s+(pg\d+)\s+127\.0\.0\.1:(\d+)\s+\(data: (.*)\)\s*$")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("meridian demo did not come up in 180s")
            try:
                line = self.proc.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"meridian demo exited: {self.proc.log_tail()}")
            m = node_re.match(line)
            if m:
                self.nodes.append((m.group(1), int(m.group(2)), m.group(3)))
            m = re.search(r"DATABASE_URL=(\S+)", line)
            if m:
                self.url = m.group(1)
            m = re.match(r"PostgreSQL binaries: (.*)$", line)
            if m:
                self.bindir = m.group(1).strip()
            if "Press Ctrl-C" in line:
                break
        if len(self.nodes) < 3:
            raise BenchError(f"expected 3 nodes from meridian demo, got {self.nodes}")
        # Keep draining the demo's stdout (into its log) so it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        roles = {}
        for name, port, _ in self.nodes:
            roles[name] = psql(port, "SELECT pg_is_in_recovery()")
        primaries = [n for n in self.nodes if roles[n[0]] == "f"]
        if len(primaries) != 1:
            raise BenchError(f"expected one primary, got roles {roles}")
        self.primary = primaries[0]
        self.replicas = [n for n in self.nodes if roles[n[0]] == "t"]

    def _drain(self) -> None:
        while self.proc.lines.get() is not None:
            pass

    @property
    def primary_port(self) -> int:
        return self.primary[1]

    def max_connections(self) -> int:
        return int(psql(self.primary_port, "SHOW max_connections"))

    def raise_max_connections(self, value: int) -> None:
        """Restarts every node (replicas first: a standby needs max_connections at least the
        primary's) with a larger max_connections, passed on pg_ctl's command line."""
        pg_ctl = os.path.join(self.bindir, "pg_ctl") if self.bindir else find_exe("pg_ctl")
        for name, port, datadir in self.replicas + [self.primary]:
            owner = Path(datadir).stat().st_uid
            user = None
            if IS_ROOT and owner != 0:
                import pwd
                user = pwd.getpwuid(owner).pw_name
            logfile = str(Path(datadir).parent / f"{name}.log")
            argv = [pg_ctl, "restart", "-D", datadir, "-m", "fast", "-w", "-t", "120",
                    "-l", logfile, "-o", f"-c max_connections={value}"]
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=180, **run_as_kwargs(user))
            if r.returncode != 0:
                raise BenchError(f"pg_ctl restart of {name} failed: {r.stderr.decode().strip()}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    psql(port, "SELECT 1")
                    break
                except BenchError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        self.wait_replicas(120)

    def wait_replicas(self, timeout: float = 120) -> float:
        """Waits until every replica has replayed the primary's current WAL position."""
        t0 = time.monotonic()
        lsn = psql(self.primary_port, "SELECT pg_current_wal_lsn()")
        for name, port, _ in self.replicas:
            while True:
                try:
                    done = psql(port, "SELECT coalesce(pg_last_wal_replay_lsn() >= "
                                      f"'{lsn}', false)")
                except BenchError:
                    done = "f"
                if done == "t":
                    break
                if time.monotonic() - t0 > timeout:
                    raise BenchError(f"replica {name} did not reach {lsn} in {timeout:.0f}s")
                time.sleep(0.2)
        return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# Proxies


class Target:
    def __init__(self, key: str, port: int, proc: Proc | None = None, note: str = "",
                 socket_dir: str | None = None):
        self.key = key
        self.port = port
        self.proc = proc
        self.note = note
        # The directory of the target's Unix-domain socket, if it has one.
        self.socket_dir = socket_dir


def start_pgbouncer(cluster: Cluster, tmp: Path, run_user: str | None, procs: list) -> Target:
    exe = find_exe("pgbouncer")
    if not exe:
        raise BenchError("pgbouncer is not installed")
    d = tmp / "pgbouncer"
    d.mkdir()
    verifier = psql(cluster.primary_port,
                    f"SELECT rolpassword FROM pg_authid WHERE rolname = '{APP_USER}'")
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise BenchError(f"unexpected verifier for {APP_USER}: {verifier[:20]}...")
    (d / "userlist.txt").write_text(f'"{APP_USER}" "{verifier}"\n')
    port = free_port()
    (d / "pgbouncer.ini").write_text(f"""\
[databases]
{APP_DB} = host={upstream_host(cluster)} port={cluster.primary_port} dbname={APP_DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {d if CLIENT == "unix" else ""}
auth_type = scram-sha-256
auth_file = {d}/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
min_pool_size = 0
reserve_pool_size = 0
ignore_startup_parameters = extra_float_digits
logfile =
pidfile = {d}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 600
""")
    chown_tree(d, run_user)
    proc = Proc("pgbouncer", [exe, str(d / "pgbouncer.ini")], d / "pgbouncer.out",
                user=run_user, stop_signal=signal.SIGINT, cwd=str(d))
    procs.append(proc)
    wait_port(port, 30, proc)
    return Target("pgbouncer", port, proc,
                  f"{tool_version([exe, '--version'])}, `pool_mode = transaction`, "
                  "`default_pool_size = 20` to the primary, max_client_conn 2000, "
                  "`auth_type = scram-sha-256` with the app user's SCRAM verifier in auth_file",
                  socket_dir=str(d) if CLIENT == "unix" else None)


def start_relay(cluster: Cluster, tmp: Path, procs: list) -> Target:
    """The `hop` example of meridian-testkit: bytes copied both ways, nothing parsed. What any
    userspace proxy in the path costs on this machine before it does work of its own."""
    r = subprocess.run(["cargo", "build", "--release", "-p", "meridian-testkit", "--example",
                        "hop"], cwd=REPO, capture_output=True, text=True)
    exe = REPO / "target/release/examples/hop"
    if r.returncode != 0 or not exe.exists():
        raise BenchError(f"cannot build the hop relay: {r.stderr.strip()[-300:]}")
    port = free_port()
    proc = Proc("relay", [str(exe), f"127.0.0.1:{port}", f"127.0.0.1:{cluster.primary_port}"],
                tmp / "relay.log")
    procs.append(proc)
    wait_port(port, 30, proc)
    return Target("relay", port, proc,
                  "`crates/testkit/examples/hop.rs`: a plain TCP relay to the primary (tokio, one "
                  "thread, `copy_bidirectional`, nothing parsed): the floor of one proxy hop; "
                  "pgbench reaches it over TCP")


def start_pgpool(cluster: Cluster, tmp: Path, run_user: str | None, procs: list) -> Target:
    exe = find_exe("pgpool")
    if not exe:
        raise BenchError("pgpool is not installed")
    d = tmp / "pgpool"
    d.mkdir()
    port, pcp_port = free_port(), free_port()
    backends = []
    for i, (name, nport, datadir) in enumerate([cluster.primary] + cluster.replicas):
        backends.append(f"""\
backend_hostname{i} = '127.0.0.1'
backend_port{i} = {nport}
backend_weight{i} = 1
backend_data_directory{i} = '{datadir}'
backend_flag{i} = 'DISALLOW_TO_FAILOVER'
backend_application_name{i} = '{name}'
""")
    (d / "pgpool.conf").write_text(f"""\
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{d}'
pcp_listen_addresses = ''
pcp_port = {pcp_port}
pcp_socket_dir = '{d}'
{''.join(backends)}
num_init_children = 70
max_pool = 1
child_life_time = 0
child_max_connections = 0
connection_life_time = 0
client_idle_limit = 0
reserved_connections = 0
connection_cache = on
enable_pool_hba = off
pool_passwd = '{d}/pool_passwd'
allow_clear_text_frontend_auth = off
authentication_timeout = 60
load_balance_mode = on
statement_level_load_balance = off
disable_load_balance_on_write = 'transaction'
sr_check_period = 10
sr_check_user = '{SUPERUSER}'
sr_check_password = '{SUPERUSER_PW}'
sr_check_database = 'postgres'
delay_threshold = 0
health_check_period = 0
failover_on_backend_error = off
failover_command = ''
follow_primary_command = ''
use_watchdog = off
memory_cache_enabled = off
log_destination = 'stderr'
log_min_messages = warning
log_connections = off
log_hostname = off
log_statement = off
log_per_node_statement = off
logdir = '{d}'
pid_file_name = '{d}/pgpool.pid'
""")
    # Plain-text password ("TEXT" prefix): pgpool authenticates to every backend with SCRAM
    # itself, and answers the client with SCRAM too.
    (d / "pool_passwd").write_text(f"{APP_USER}:TEXT{APP_PW}\n")
    (d / "pcp.conf").write_text("")
    (d / "pool_hba.conf").write_text("")
    os.chmod(d / "pool_passwd", 0o600)
    chown_tree(d, run_user)
    proc = Proc("pgpool", [exe, "-n", "-D", "-f", str(d / "pgpool.conf"), "-F",
                           str(d / "pcp.conf"), "-a", str(d / "pool_hba.conf")],
                d / "pgpool.out", user=run_user, stop_signal=signal.SIGINT, cwd=str(d))
    procs.append(proc)
    wait_port(port, 60, proc)
    # pgpool accepts before it has found the primary; wait until a query works.
    deadline = time.monotonic() + 60
    while True:
        try:
            psql(port, "SELECT 1", user=APP_USER, password=APP_PW, db=APP_DB, timeout=20)
            break
        except (BenchError, subprocess.TimeoutExpired) as e:
            if time.monotonic() > deadline or not proc.alive():
                raise BenchError(f"pgpool does not answer queries: {e}; log: {proc.log_tail()}")
            time.sleep(0.5)
    return Target("pgpool", port, proc,
                  f"{tool_version([exe, '--version'])}; streaming_replication mode, "
                  "load_balance_mode on (session-level), weights "
                  "1/1/1 over primary + 2 replicas, num_init_children 70, max_pool 1; "
                  "pool_passwd holds the app password in plain text (TEXT prefix), clients "
                  "and backends authenticate with SCRAM; health checks off, sr_check every 10 s")


def chown_tree(path: Path, user: str | None) -> None:
    if not user or not IS_ROOT:
        return
    import pwd
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def meridian_config(cluster: Cluster, port: int, passthrough: bool, txpool: bool = False,
                    autoprep: bool = False, socket_dir: str | None = None) -> str:
    text = f"""\
[proxy]
listen = "127.0.0.1:{port}"
region = "local"
max_client_connections = 10000
worker_threads = {os.environ.get("MERIDIAN_WORKER_THREADS", "0")}
auto_prepare = {"true" if autoprep else "false"}
{f'unix_socket_dir = "{socket_dir}"' if socket_dir else ""}

[monitor]
user = "{SUPERUSER}"
password = "{SUPERUSER_PW}"
database = "postgres"

[[users]]
name = "{APP_USER}"
password = "{APP_PW}"

[[users]]
name = "{MD5_USER}"
password = "{MD5_PW}"
auth = "md5"
"""
    for name, nport, _ in cluster.nodes:
        text += f"""
[[nodes]]
name = "{name}"
host = "{upstream_host(cluster)}"
port = {nport}
region = "local"
"""
    if passthrough:
        text += "\n[routing]\npassthrough = true\n"
    else:
        text += '\n[consistency]\nmode = "session"\n'
    if txpool:
        text += f'\n[pool]\npool_mode = "transaction"\npool_size = {TXPOOL_SIZE}\n'
    return text


def start_meridian(meridian: Path, cluster: Cluster, tmp: Path, key: str,
                   procs: list) -> Target:
    passthrough = key == "meridian-passthrough"
    d = tmp / key
    d.mkdir()
    port = free_port()
    conf = d / "meridian.toml"
    socket_dir = str(d) if CLIENT == "unix" else None
    conf.write_text(meridian_config(cluster, port, passthrough, key == "meridian-txpool",
                                    key == "meridian-autoprep", socket_dir))
    check = subprocess.run([str(meridian), "check-config", str(conf)], capture_output=True,
                           text=True, timeout=30)
    if check.returncode != 0:
        raise BenchError(f"meridian check-config rejects the {key} configuration: "
                         f"{(check.stderr or check.stdout).strip()}")
    proc = Proc(key, [str(meridian), "run", "--config", str(conf)], d / "meridian.log",
                env={"RUST_LOG": "warn"}, stop_signal=signal.SIGINT)
    procs.append(proc)
    wait_port(port, 30, proc)
    # Ready when a query works (the monitor must have found the primary).
    deadline = time.monotonic() + 30
    while True:
        try:
            psql(port, "SELECT 1", user=APP_USER, password=APP_PW, db=APP_DB, timeout=20)
            break
        except (BenchError, subprocess.TimeoutExpired) as e:
            if time.monotonic() > deadline or not proc.alive():
                raise BenchError(f"{key} does not answer queries: {e}; log: {proc.log_tail()}")
            time.sleep(0.3)
    note = ("`[routing] passthrough = true`: every statement to the primary, unclassified"
            if passthrough else
            "default routing (reads to replicas, round robin), `[consistency] mode = \"session\"`")
    if key == "meridian-autoprep":
        note += ", `[proxy] auto_prepare = true` (simple-protocol statements run prepared)"
    if key == "meridian-txpool":
        note += (f", `[pool] pool_mode = \"transaction\"`, `pool_size = {TXPOOL_SIZE}` "
                 "(per node: primary and each replica)")
    return Target(key, port, proc, note, socket_dir=socket_dir)


# --------------------------------------------------------------------------------------------
# pgbench


class Result:
    def __init__(self):
        self.ok = False
        self.reason = ""
        self.tps = None
        self.lat_ms = None
        self.p99_ms = None
        self.tx = 0
        self.failed_tx = 0
        self.proxy_cpu_s = None


def parse_pgbench_logs(prefix: str) -> tuple[list[int], int]:
    lats: list[int] = []
    failed = 0
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                parts = line.split(None, 3)
                if len(parts) < 3:
                    continue
                v = parts[2]
                if v.isdigit():
                    lats.append(int(v))
                else:
                    failed += 1  # "failed" / "skipped"
        os.unlink(path)
    return lats, failed


def percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    idx = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return float(sorted_vals[idx])


def run_pgbench(target: Target, args: list[str], clients: int, duration: int,
                logdir: Path, label: str) -> Result:
    res = Result()
    txlogs = logdir / "txlog"
    txlogs.mkdir(exist_ok=True)
    prefix = str(txlogs / label)
    host = target.socket_dir if CLIENT == "unix" and target.socket_dir else "127.0.0.1"
    argv = [find_exe("pgbench") or "pgbench", "-h", host, "-p", str(target.port),
            "-U", APP_USER, "-n", "-c", str(clients), "-j", str(min(2, clients)),
            "-T", str(duration), "-l", f"--log-prefix={prefix}"] + args + [APP_DB]
    env = dict(os.environ, PGPASSWORD=APP_PW, PGCONNECT_TIMEOUT="15")
    pgid = target.proc.pid if target.proc else None
    cpu0 = group_cpu_ticks(pgid) if pgid else 0
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=env,
                           timeout=duration * 3 + 120)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = "pgbench did not finish (hang?): killed after timeout"
        rc = -1
    if pgid:
        res.proxy_cpu_s = (group_cpu_ticks(pgid) - cpu0) / CLK_TCK
    (logdir / f"{label}.out").write_text(" ".join(argv) + "\n\n" + out + "\n--- stderr\n" + err)
    lats, failed_in_log = parse_pgbench_logs(prefix)
    m = re.search(r"^tps = ([\d.]+)", out, re.M)
    res.tps = float(m.group(1)) if m else None
    m = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
    res.lat_ms = float(m.group(1)) if m else None
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    res.tx = int(m.group(1)) if m else len(lats)
    m = re.search(r"number of failed transactions: (\d+)", out)
    res.failed_tx = int(m.group(1)) if m else failed_in_log
    if lats:
        # Mean and p99 both from the per-transaction log (pgbench's own "latency average" is
        # duration x clients / transactions, which also counts its client-side overhead).
        lats.sort()
        res.p99_ms = percentile(lats, 0.99) / 1000.0
        res.lat_ms = sum(lats) / len(lats) / 1000.0
    problems = []
    if rc != 0:
        problems.append(f"pgbench exit {rc}")
    if res.failed_tx:
        problems.append(f"{res.failed_tx} failed transactions")
    if res.tx == 0:
        problems.append("no transaction completed")
    aborted = re.findall(r"client \d+ (?:script \d+ )?aborted", err)
    if aborted:
        problems.append(f"{len(aborted)} client(s) aborted")
    if problems:
        first_err = next((ln.strip() for ln in err.splitlines()
                          if "error" in ln.lower() or "fatal" in ln.lower()
                          or "hang" in ln.lower()), "")
        res.reason = "; ".join(problems) + (f": {first_err[:300]}" if first_err else "")
    else:
        res.ok = True
    if target.proc is not None and not target.proc.alive():
        res.ok = False
        res.reason = (res.reason + "; " if res.reason else "") + \
            f"{target.key} process exited ({target.proc.popen.returncode})"
    return res


# --------------------------------------------------------------------------------------------
# The report


def fmt(v, spec=".1f", none="–"):
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def ratio(a, b):
    if a is None or b is None or not b:
        return "–"
    return f"{a / b:.2f}×"


def scan_log(path: Path) -> tuple[int, int, list[str]]:
    """(warnings, errors, a few distinct messages) in a Meridian log."""
    warns = errs = 0
    samples: list[str] = []
    seen: set[str] = set()
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, 0, []
    for line in lines:
        clean = ansi.sub("", line)
        level = None
        if re.search(r"\bERROR\b", clean):
            errs += 1
            level = "ERROR"
        elif re.search(r"\bWARN\b", clean):
            warns += 1
            level = "WARN"
        if level:
            # Drop the timestamp; keep the message shape to group repeats.
            msg = re.sub(r"^\S+\s+", "", clean).strip()
            shape = re.sub(r"\d+", "N", msg)[:160]
            if shape not in seen and len(samples) < 6:
                seen.add(shape)
                samples.append(msg[:300])
    return warns, errs, samples


def machine_info(cluster: Cluster, meridian: Path) -> list[str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        rev = "?"
    try:
        built = datetime.datetime.fromtimestamp(meridian.stat().st_mtime, datetime.timezone.utc) \
            .strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        built = "?"
    return [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}, "
        f"{mem} RAM, {platform.system()} {platform.release()}",
        f"- PostgreSQL: {psql(cluster.primary_port, 'SHOW server_version')} "
        f"(primary + {len(cluster.replicas)} streaming replicas from `meridian demo`, "
        f"max_connections {cluster.max_connections()})",
        f"- pgbench: {tool_version([find_exe('pgbench') or 'pgbench', '--version'])}",
        f"- Meridian: {tool_version([str(meridian), '--version'])} (checkout at git {rev}; "
        f"binary built {built})",
    ]


# --------------------------------------------------------------------------------------------
# Main


class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.procs: list[Proc] = []
        self.tmp: Path | None = None
        self.results: dict[str, dict[str, Result]] = {}
        self.targets: dict[str, Target] = {}
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.rss: dict[str, dict] = {}
        self.cluster: Cluster | None = None
        try:
            self.load_start = " ".join(open("/proc/loadavg").read().split()[:3])
        except OSError:
            self.load_start = "?"

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            try:
                log(f"stopping {p.name} (pid {p.pid})")
                p.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                log(f"error stopping {p.name}: {e}")
        self.procs.clear()
        if self.tmp and self.tmp.exists() and not self.opts.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_target(self, key: str, starter) -> None:
        before = len(self.procs)
        try:
            t = starter()
            self.targets[key] = t
            log(f"{key} listening on 127.0.0.1:{t.port}")
        except Exception as e:  # noqa: BLE001 - a proxy that cannot start is reported, not fatal
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            # Keep the first line, plus the last one when it says what is wrong (TOML errors
            # put the reason last, after a source excerpt).
            why = lines[0] if lines else type(e).__name__
            if len(lines) > 1:
                why += " … " + lines[-1]
            self.skipped[key] = why
            # Stop whatever it started right away (it may still be running, half set up).
            while len(self.procs) > before:
                self.procs.pop().stop()
            log(f"{key} skipped: {e}")

    def run(self) -> int:
        o = self.opts
        smoke = o.smoke
        self.notes += ensure_packages(smoke)
        meridian = Path(o.meridian_bin) if o.meridian_bin else REPO / "target/release/meridian"
        if not o.meridian_bin:
            ensure_meridian(meridian)
        run_user = None
        if IS_ROOT:
            import pwd
            try:
                pwd.getpwnam("postgres")
                run_user = "postgres"
            except KeyError:
                self.notes.append("no `postgres` OS user: pgbouncer/pgpool run as root")
        self.tmp = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
        os.chmod(self.tmp, 0o755)
        logdir = self.tmp / "pgbench"
        logdir.mkdir()
        log(f"work directory {self.tmp}")
        # Run a private copy, so that a rebuild during the run cannot mix two versions.
        snapshot = self.tmp / "meridian"
        shutil.copy2(meridian, snapshot)
        meridian = snapshot

        log("starting the cluster (meridian demo --replicas 2)")
        cluster = Cluster(meridian, self.tmp, self.procs)
        self.cluster = cluster
        log(f"cluster up: primary {cluster.primary[0]} :{cluster.primary_port}, replicas "
            + ", ".join(f"{n}:{p}" for n, p, _ in cluster.replicas))

        idle_n = o.idle_conns
        # Meridian opens a primary connection per client at login, so the idle-client test
        # needs idle_n server connections, on top of Pgpool's cached ones (up to 70 per node),
        # PgBouncer's pool (20) and the monitors.
        need = idle_n + (200 if not smoke else 60)
        if cluster.max_connections() < need:
            log(f"restarting the nodes with max_connections={need} (for {idle_n} idle clients)")
            cluster.raise_max_connections(need)

        scale = o.scale
        log(f"pgbench -i -s {scale} on the primary")
        env = dict(os.environ, PGPASSWORD=APP_PW)
        r = subprocess.run([find_exe("pgbench") or "pgbench", "-i", "-q", "-s", str(scale),
                            "-h", "127.0.0.1", "-p", str(cluster.primary_port), "-U", APP_USER,
                            APP_DB], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"pgbench -i failed: {r.stderr.strip()}")
        psql(cluster.primary_port, "VACUUM ANALYZE", user=APP_USER, password=APP_PW, db=APP_DB,
             timeout=300)
        log(f"replicas caught up in {cluster.wait_replicas():.1f}s")

        # Targets.
        wanted = [t for t in TARGET_ORDER if not o.targets or t in o.targets]
        if smoke:
            wanted = [t for t in wanted if t == "direct" or t in SMOKE_MERIDIAN
                      or (t == "pgbouncer" and find_exe("pgbouncer"))]
        for key in wanted:
            if key == "direct":
                self.targets["direct"] = Target(
                    "direct", cluster.primary_port, None, "pgbench straight to the primary",
                    socket_dir=str(Path(cluster.nodes[0][2]).parent) if CLIENT == "unix"
                    else None)
            elif key == "pgbouncer":
                self.add_target(key, lambda: start_pgbouncer(cluster, self.tmp, run_user,
                                                             self.procs))
            elif key == "pgpool":
                self.add_target(key, lambda: start_pgpool(cluster, self.tmp, run_user, self.procs))
            elif key == "relay":
                self.add_target(key, lambda: start_relay(cluster, self.tmp, self.procs))
            else:
                self.add_target(key, lambda k=key: start_meridian(
                    meridian, cluster, self.tmp, k, self.procs))

        if "meridian-routing" in self.targets:
            try:
                on = psql(self.targets["meridian-routing"].port, "SELECT pg_is_in_recovery()",
                          user=APP_USER, password=APP_PW, db=APP_DB)
                self.notes.append(f"routing check: `SELECT pg_is_in_recovery()` through "
                                  f"meridian-routing returned `{on}` "
                                  f"({'a replica' if on == 't' else 'the primary'})")
            except BenchError as e:
                self.notes.append(f"routing check failed: {e}")

        # Workloads, workload-major so that every target sees the same conditions in turn.
        workloads = [w for w in WORKLOADS if (not o.workloads and not smoke)
                     or w[0] in (o.workloads or SMOKE_WORKLOADS)]
        for key, title, args, clients, frac in workloads:
            if smoke:
                clients = min(clients, SMOKE_CLIENTS)
            duration = max(1, int(round(o.duration * frac)))
            self.results[key] = {}
            for tkey in TARGET_ORDER:
                if tkey not in self.targets or tkey not in WORKLOAD_TARGETS.get(key, [tkey]):
                    continue
                target = self.targets[tkey]
                if "-S" not in args:
                    # What pgbench does itself without -n, done directly so every target
                    # starts from the same state.
                    psql(cluster.primary_port, ["VACUUM pgbench_branches",
                                                "VACUUM pgbench_tellers",
                                                "TRUNCATE pgbench_history"],
                         user=APP_USER, password=APP_PW, db=APP_DB, timeout=300)
                    cluster.wait_replicas()
                log(f"{key}: {tkey} ({clients} clients, {duration}s)")
                res = run_pgbench(target, args, clients, duration, logdir, f"{key}.{tkey}")
                self.results[key][tkey] = res
                log(f"  -> {'ok' if res.ok else 'FAILED'} tps={fmt(res.tps)} "
                    f"lat={fmt(res.lat_ms, '.3f')}ms p99={fmt(res.p99_ms, '.3f')}ms"
                    + (f" ({res.reason})" if res.reason else ""))
                if "-S" not in args:
                    cluster.wait_replicas()

        # Memory with idle clients.
        for tkey in ("meridian-routing", "pgbouncer"):
            t = self.targets.get(tkey)
            if not t or not t.proc or not t.proc.alive():
                continue
            log(f"{tkey}: opening {idle_n} idle authenticated connections")
            try:
                self.rss[tkey] = measure_idle_rss(t.proc.pid, t.port, idle_n,
                                                  settle=0.5 if smoke else 2.0)
                r = self.rss[tkey]
                log(f"  -> {r['ok']}/{idle_n} connected in {r['open_s']:.1f}s, VmRSS "
                    f"{r['before']} -> {r['with']} -> {r['after']} KiB, second round "
                    f"{r['with2']} -> {r['after2']} KiB "
                    f"({r['per_conn_kib']:.1f} KiB/conn)")
            except Exception as e:  # noqa: BLE001
                self.rss[tkey] = {"error": str(e)}
                log(f"  -> failed: {e}")

        report = self.report(cluster, meridian, workloads)
        print(report)
        if o.out or not smoke:
            out = Path(o.out) if o.out else \
                REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}.md"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report)
            log(f"report written to {out}")
        if smoke:
            bad = [f"{w}/{t}: {r.reason}" for w, rs in self.results.items()
                   for t, r in rs.items()
                   if (t == "direct" or t in SMOKE_MERIDIAN) and not r.ok]
            bad += [f"{t} did not start: {why}" for t, why in self.skipped.items()
                    if t in SMOKE_MERIDIAN]
            rss = self.rss.get("meridian-routing", {})
            if "error" in rss or rss.get("ok", idle_n) < idle_n:
                bad.append(f"idle connections to meridian-routing: {rss}")
            if bad:
                log("smoke FAILED:\n  " + "\n  ".join(bad))
                return 1
            log("smoke ok")
        return 0

    def report(self, cluster: Cluster, meridian: Path, workloads) -> str:
        o = self.opts
        L = [f"# Meridian benchmark — {datetime.date.today().isoformat()}"
             + (" (smoke)" if o.smoke else ""), ""]
        L += machine_info(cluster, meridian)
        try:
            load = open("/proc/loadavg").read().split()[:3]
            L.append(f"- load average at the start: {self.load_start}, at the end: "
                     f"{' '.join(load)} (the box may be shared with other work: compare the "
                     "rows of one table, not separate runs)")
        except OSError:
            pass
        L.append(f"- pgbench scale {o.scale}, `-T {o.duration}` per run (`-C` runs half as "
                 "long), `-n`, `-j 2`; every proxy, pgbench and PostgreSQL share the same box")
        L.append("- pgbench connects to every target over " +
                 ("its **Unix-domain socket** (`--client unix`; Pgpool-II over TCP)"
                  if o.client == "unix" else "TCP, 127.0.0.1 (`--client tcp`)") +
                 "; PgBouncer and Meridian reach PostgreSQL over " +
                 ("**Unix-domain sockets** (`--upstream unix`)" if o.upstream == "unix" else
                  "TCP (`--upstream tcp`)") + "; Pgpool-II over TCP")
        try:
            autogroup = open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1"
        except OSError:
            autogroup = False
        if o.sched == "separate":
            L.append("- `--sched separate`: the cluster and each proxy run in sessions of their "
                     "own" + (", which the kernel schedules as separate groups (autogroups), "
                              "like services in their own cgroups" if autogroup else
                              " (autogroups are off on this kernel: no effect)"))
        else:
            L.append("- `--sched shared`: every process in one scheduling group (as when "
                     "started from one shell)")
        L.append("")
        L.append("Targets:")
        L.append("")
        for key in TARGET_ORDER:
            if key in self.targets:
                L.append(f"- **{TARGET_TITLES[key]}** (`{key}`): {self.targets[key].note}")
            elif key in self.skipped:
                L.append(f"- **{TARGET_TITLES[key]}** (`{key}`): SKIPPED — {self.skipped[key]}")
        for n in self.notes:
            L.append(f"- {n}")
        L.append("")
        L.append("tps is pgbench's, without the initial connection time (with `-C` it includes "
                 "the reconnections). Mean and p99 latency come from pgbench's per-transaction "
                 "log (`-l`). Proxy CPU is utime+stime of the proxy's processes (for Pgpool, "
                 "all its children) during the run, in ms per 10,000 transactions (a "
                 "select-only transaction is one query; a TPC-B-like one is seven statements).")
        L.append("")
        for key, title, args, clients, frac in workloads:
            rs = self.results.get(key, {})
            if not rs:
                continue
            if o.smoke:
                clients = min(clients, SMOKE_CLIENTS)
            L.append(f"## {title}, {clients} client{'s' if clients > 1 else ' (latency)'}")
            L.append("")
            L.append(f"`pgbench -n -c {clients} -j {min(2, clients)} {' '.join(args)}`")
            L.append("")
            L.append("| target | tps | mean latency ms | p99 ms | vs direct | vs PgBouncer "
                     "| proxy CPU ms/10k tx |")
            L.append("|---|---:|---:|---:|---:|---:|---:|")
            base = rs.get("direct")
            bouncer = rs.get("pgbouncer")
            base_tps = base.tps if base and base.ok else None
            bouncer_tps = bouncer.tps if bouncer and bouncer.ok else None
            failures = []
            for tkey in TARGET_ORDER:
                r = rs.get(tkey)
                if r is None:
                    continue
                cpu = (f"{r.proxy_cpu_s / r.tx * 10000 * 1000:.0f}"
                       if r.proxy_cpu_s is not None and r.tx else "–")
                if r.ok:
                    L.append(f"| {TARGET_TITLES[tkey]} | {fmt(r.tps, '.0f')} | "
                             f"{fmt(r.lat_ms, '.3f')} | {fmt(r.p99_ms, '.3f')} | "
                             f"{ratio(r.tps, base_tps)} | {ratio(r.tps, bouncer_tps)} | {cpu} |")
                else:
                    failures.append(f"{TARGET_TITLES[tkey]}: {r.reason}")
                    L.append(f"| {TARGET_TITLES[tkey]} | FAILED ({len(failures)}) | – | – | "
                             f"– | – | – |")
            L.append("")
            for i, f in enumerate(failures, 1):
                L.append(f"FAILED ({i}) {f}")
                L.append("")
        L.append("## Memory and CPU")
        L.append("")
        for tkey, rss in self.rss.items():
            if "error" in rss:
                L.append(f"- {TARGET_TITLES[tkey]}: idle-connection test failed: {rss['error']}")
                continue
            errs = ""
            if rss["errors"]:
                errs = (f"; {len(rss['errors'])} failed to connect, e.g. "
                        f"`{rss['errors'][0][:200]}`")
            L.append(f"- {TARGET_TITLES[tkey]}: VmRSS {rss['before']} KiB idle → {rss['with']} "
                     f"KiB with {rss['ok']} idle authenticated clients (SCRAM, user `app`) → "
                     f"{rss['after']} KiB after they left: **{rss['per_conn_kib']:.1f} KiB per "
                     f"connection** (connections opened in {rss['open_s']:.1f} s{errs}); "
                     f"a second round of {rss['n']}: {rss['with2']} KiB → {rss['after2']} KiB")
        if "meridian-routing" in self.rss:
            L.append("  (Meridian opens server connections lazily: after the first login with the "
                     "same user, database and options, an idle client holds no server connection.)")
        sel = self.results.get("select-simple", {})
        sel_clients = next((min(c, SMOKE_CLIENTS) if o.smoke else c)
                           for k, _, _, c, _ in WORKLOADS if k == "select-simple")
        for tkey in ("meridian-routing", "meridian-passthrough", "pgbouncer", "pgpool"):
            r = sel.get(tkey)
            if r and r.ok and r.proxy_cpu_s is not None and r.tx:
                L.append(f"- {TARGET_TITLES[tkey]}: CPU {r.proxy_cpu_s:.2f} s for {r.tx} "
                         f"select-only transactions (`-S`, 1 query each, {sel_clients} "
                         f"clients) = "
                         f"**{r.proxy_cpu_s / r.tx * 10000 * 1000:.1f} ms CPU per 10k queries**")
        L.append("")
        L.append("## Proxy logs")
        L.append("")
        for key in ("meridian-passthrough", "meridian-routing", "meridian-txpool"):
            t = self.targets.get(key)
            if not t or not t.proc:
                continue
            warns, errs, samples = scan_log(t.proc.log_path)
            alive = "running" if t.proc.alive() else f"EXITED ({t.proc.popen.returncode})"
            L.append(f"- {key} (RUST_LOG=warn): {warns} WARN, {errs} ERROR lines; "
                     f"process {alive} at the end")
            for s in samples:
                L.append(f"  - `{s.replace('`', chr(39))}`")
        for key in ("pgbouncer", "pgpool"):
            t = self.targets.get(key)
            if t and t.proc:
                alive = "running" if t.proc.alive() else f"EXITED ({t.proc.popen.returncode})"
                L.append(f"- {key}: process {alive} at the end")
        L.append("")
        return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="quick check: direct + meridian-routing (+ pgbouncer if installed), "
                        "2 s runs, no report file")
    p.add_argument("--duration", type=int, default=None,
                   help="seconds per pgbench run (default 15, smoke 2)")
    p.add_argument("--scale", type=int, default=None, help="pgbench scale (default 10, smoke 1)")
    p.add_argument("--idle-conns", type=int, default=None,
                   help="idle connections for the memory test (default 1000, smoke 20)")
    p.add_argument("--targets", type=lambda s: s.split(","), default=None,
                   help=f"comma-separated subset of {','.join(TARGET_ORDER)}")
    p.add_argument("--workloads", type=lambda s: s.split(","), default=None,
                   help=f"comma-separated subset of {','.join(w[0] for w in WORKLOADS)}")
    p.add_argument("--meridian-bin", default=os.environ.get("MERIDIAN_BIN"),
                   help="meridian binary (default target/release/meridian, built from the "
                        "checkout first)")
    p.add_argument("--out", default=None,
                   help="report path (default bench/results/<date>.md; smoke writes none)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--sched", choices=["shared", "separate"], default="shared",
                   help="shared (default): every process in the bench's scheduling group; "
                        "separate: each server (cluster, each proxy) in a session of its own, "
                        "which the kernel's autogroups schedule as a group, like services")
    p.add_argument("--upstream", choices=["tcp", "unix"], default="tcp",
                   help="how PgBouncer and Meridian reach PostgreSQL: tcp (default, 127.0.0.1) "
                        "or unix (the cluster's Unix-domain sockets); pgbench always uses TCP")
    p.add_argument("--client", choices=["tcp", "unix"], default="tcp",
                   help="how pgbench reaches each target: tcp (default, 127.0.0.1) or unix "
                        "(the target's Unix-domain socket: PostgreSQL's, PgBouncer's "
                        "unix_socket_dir, Meridian's proxy.unix_socket_dir; Pgpool-II stays "
                        "on TCP)")
    o = p.parse_args(argv)
    global SEPARATE_SESSIONS, UPSTREAM, CLIENT
    SEPARATE_SESSIONS = o.sched == "separate"
    UPSTREAM = o.upstream
    CLIENT = o.client
    if o.duration is None:
        o.duration = 2 if o.smoke else 15
    if o.scale is None:
        o.scale = 1 if o.smoke else 10
    if o.idle_conns is None:
        o.idle_conns = 20 if o.smoke else 1000
    return o


def main(argv=None) -> int:
    opts = parse_args(argv)
    bench = Bench(opts)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python
    # then keeps ignoring it instead of raising KeyboardInterrupt.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    rc = 1
    try:
        rc = bench.run()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'Ctrl-C'}); cleaning up")
        rc = 130
    except BenchError as e:
        log(f"error: {e}")
        rc = 1
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        bench.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())

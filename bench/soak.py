#!/usr/bin/env python3
"""Meridian soak: many clients, a mixed workload, replicas stopped and started under it.

`make soak` runs this script (Python 3 standard library only; it reuses bench/bench.py's
cluster and process handling). It

1. starts a primary and 2 streaming replicas (`meridian demo`) and loads pgbench data;
2. starts Meridian (release build) with full routing and session consistency, in the pool mode
   given by `--pool-mode` (with `session`, every node's max_connections is raised first);
3. runs pgbench with `--clients` clients (default 500) for `--duration` seconds (default 600)
   on a mixed script: 80 % autocommit reads, 10 % write-then-read-your-write, 10 % read-write
   transactions;
4. meanwhile stops a replica (`pg_ctl stop -m fast`) and starts it again, then the other one
   with `-m immediate`, at fixed fractions of the run;
5. samples Meridian's RSS and CPU every 10 s;
6. reports transactions, failed transactions, aborted clients (pgbench stops a client at its
   first error), Meridian's error and warning log lines, and the memory series, as Markdown in
   bench/results/soak-<date>.md.

It exits non-zero when a client saw an error or Meridian exited. There are no performance
thresholds. Every process it starts is stopped at the end, on Ctrl-C, on SIGTERM and on errors.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

MIXED = """\
\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
\\set r random(1, 10)
\\if :r <= 8
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\\elif :r = 9
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\\else
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
\\endif
"""


def meridian_config(cluster: b.Cluster, port: int, pool_mode: str, pool_size: int) -> str:
    text = f"""\
[proxy]
listen = "127.0.0.1:{port}"
region = "local"
max_client_connections = 5000

[monitor]
user = "{b.SUPERUSER}"
password = "{b.SUPERUSER_PW}"
database = "postgres"

[[users]]
name = "{b.APP_USER}"
password = "{b.APP_PW}"

[consistency]
mode = "session"
"""
    if pool_mode != "session":
        text += f'\n[pool]\npool_mode = "{pool_mode}"\npool_size = {pool_size}\n'
    for name, nport, _ in cluster.nodes:
        text += f"""
[[nodes]]
name = "{name}"
host = "127.0.0.1"
port = {nport}
region = "local"
"""
    return text


def pg_ctl(cluster: b.Cluster, datadir: str, *args: str) -> str:
    exe = os.path.join(cluster.bindir, "pg_ctl") if cluster.bindir else b.find_exe("pg_ctl")
    owner = Path(datadir).stat().st_uid
    user = None
    if b.IS_ROOT and owner != 0:
        import pwd
        user = pwd.getpwuid(owner).pw_name
    logfile = str(Path(datadir).parent / f"{Path(datadir).name}.log")
    argv = [exe, *args, "-D", datadir, "-w", "-t", "120"]
    if args[0] == "start":
        argv += ["-l", logfile]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=180, **b.run_as_kwargs(user))
    return f"{' '.join(args)} -> exit {r.returncode} {r.stderr.strip()[:200]}"


class Soak:
    def __init__(self, opts):
        self.opts = opts
        self.procs: list[b.Proc] = []
        self.tmp: Path | None = None
        self.samples: list[tuple[float, int, float]] = []  # (t, rss KiB, cpu s)
        self.events: list[str] = []

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                b.log(f"error stopping {p.name}: {e}")
        self.procs.clear()
        if self.tmp and self.tmp.exists() and not self.opts.keep:
            import shutil
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> int:
        opts = self.opts
        b.ensure_packages(smoke=True)
        meridian = Path(opts.meridian_bin or b.REPO / "target" / "release" / "meridian")
        b.ensure_meridian(meridian)
        self.tmp = Path(tempfile.mkdtemp(prefix="meridian-soak-"))
        os.chmod(self.tmp, 0o755)
        cluster = b.Cluster(meridian, self.tmp, self.procs)
        if opts.pool_mode == "session":
            need = opts.clients + 100
            if cluster.max_connections() < need:
                b.log(f"raising max_connections to {need} on every node")
                cluster.raise_max_connections(need)
        pgbench = b.find_exe("pgbench") or "pgbench"
        env = dict(os.environ, PGPASSWORD=b.SUPERUSER_PW)
        subprocess.run([pgbench, "-i", "-q", "-s", str(opts.scale), "-h", "127.0.0.1", "-p",
                        str(cluster.primary_port), "-U", b.SUPERUSER, b.APP_DB],
                       check=True, env=env, capture_output=True, timeout=600)
        b.psql(cluster.primary_port, "GRANT ALL ON ALL TABLES IN SCHEMA public TO app",
               db=b.APP_DB)
        cluster.wait_replicas()

        port = b.free_port()
        d = self.tmp / "meridian"
        d.mkdir()
        conf = d / "meridian.toml"
        conf.write_text(meridian_config(cluster, port, opts.pool_mode, opts.pool_size))
        proc = b.Proc("meridian", [str(meridian), "run", "--config", str(conf)],
                      d / "meridian.log", env={"RUST_LOG": "info"}, stop_signal=signal.SIGINT)
        self.procs.append(proc)
        b.wait_port(port, 30, proc)
        time.sleep(1.0)
        script = self.tmp / "mixed.sql"
        script.write_text(MIXED)

        b.log(f"soak: {opts.clients} clients for {opts.duration}s through Meridian "
              f"(pool_mode {opts.pool_mode})")
        argv = [pgbench, "-h", "127.0.0.1", "-p", str(port), "-U", b.APP_USER, "-n",
                "-c", str(opts.clients), "-j", "2", "-T", str(opts.duration), "-P", "30",
                "-f", str(script), b.APP_DB]
        out_path = self.tmp / "pgbench.out"
        with open(out_path, "w") as out:
            pb = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, PGPASSWORD=b.APP_PW,
                                           PGCONNECT_TIMEOUT="30"),
                                  start_new_session=True)
            t0 = time.monotonic()
            (r1, _, dir1), (r2, _, dir2) = [(n, p, dd) for n, p, dd in cluster.replicas][:2]
            plan = [
                (0.25, f"stop {r1} (fast)", lambda: pg_ctl(cluster, dir1, "stop", "-m", "fast")),
                (0.40, f"start {r1}", lambda: pg_ctl(cluster, dir1, "start")),
                (0.60, f"stop {r2} (immediate)",
                 lambda: pg_ctl(cluster, dir2, "stop", "-m", "immediate")),
                (0.75, f"start {r2}", lambda: pg_ctl(cluster, dir2, "start")),
            ]
            next_sample = 0.0
            while pb.poll() is None:
                t = time.monotonic() - t0
                if plan and t >= plan[0][0] * opts.duration:
                    _, what, action = plan.pop(0)
                    result = action()
                    self.events.append(f"{t:6.0f} s: {what}: {result}")
                    b.log(f"soak: {what}: {result}")
                if t >= next_sample:
                    if proc.alive():
                        cpu = b.group_cpu_ticks(proc.pid) / b.CLK_TCK
                        self.samples.append((t, b.vm_rss_kib(proc.pid), cpu))
                    next_sample += 10.0
                time.sleep(0.5)
            if proc.alive():
                self.samples.append((time.monotonic() - t0, b.vm_rss_kib(proc.pid),
                                     b.group_cpu_ticks(proc.pid) / b.CLK_TCK))
        text = out_path.read_text(errors="replace")
        report = self.report(cluster, meridian, proc, text)
        print(report)
        results = b.REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        name = datetime.datetime.now().strftime("soak-%Y-%m-%d-%H%M.md")
        (results / name).write_text(report)
        b.log(f"report written to bench/results/{name}")
        aborted = len(re.findall(r"client \d+ (?:script \d+ )?aborted", text))
        failed = re.search(r"number of failed transactions: (\d+)", text)
        return 0 if (aborted == 0 and proc.alive() and
                     (not failed or failed.group(1) == "0")) else 1

    def report(self, cluster: b.Cluster, meridian: Path, proc: b.Proc, text: str) -> str:
        opts = self.opts
        tx = re.search(r"number of transactions actually processed: (\d+)", text)
        failed = re.search(r"number of failed transactions: (\d+)", text)
        tps = re.search(r"^tps = ([\d.]+)", text, re.M)
        aborted = re.findall(r"client \d+ (?:script \d+ )?aborted.*", text)
        errors = [ln for ln in text.splitlines() if "error" in ln.lower()][:10]
        ansi = re.compile(r"\x1b\[[0-9;]*m")
        log_lines = [ansi.sub("", ln) for ln in
                     proc.log_path.read_text(errors="replace").splitlines()]
        m_err = [ln for ln in log_lines if re.search(r"\bERROR\b", ln)]
        m_warn = [ln for ln in log_lines if re.search(r"\bWARN\b", ln)]
        lines = [f"# Meridian soak, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}", ""]
        lines += b.machine_info(cluster, meridian)
        lines += [
            f"- workload: pgbench, {opts.clients} clients, {opts.duration} s, scale "
            f"{opts.scale}, mixed script (80 % reads, 10 % write + read-your-write, 10 % "
            f"read-write transactions); Meridian `pool_mode = \"{opts.pool_mode}\"`"
            + (f", pool_size {opts.pool_size}" if opts.pool_mode != "session" else "")
            + ", `[consistency] mode = \"session\"`",
            "",
            "## Result",
            "",
            f"- transactions: {tx.group(1) if tx else '?'} ({tps.group(1) if tps else '?'} tps)",
            f"- failed transactions: {failed.group(1) if failed else '0'}; aborted clients: "
            f"{len(aborted)}",
            f"- Meridian still running at the end: {'yes' if proc.alive() else 'NO'}",
            f"- Meridian log: {len(m_err)} ERROR lines, {len(m_warn)} WARN lines",
            "",
            "## Events",
            "",
        ]
        lines += [f"- {e}" for e in self.events] or ["- none"]
        lines += ["", "## Meridian memory and CPU", "", "| t (s) | RSS (MiB) | CPU (s) |",
                  "|---:|---:|---:|"]
        for t, rss, cpu in self.samples:
            lines.append(f"| {t:.0f} | {rss / 1024:.1f} | {cpu:.1f} |")
        if errors or aborted:
            lines += ["", "## Client errors (first 10)", "", "```"] + (aborted[:10] or errors)
            lines += ["```"]
        if m_err or m_warn:
            lines += ["", "## Meridian warnings and errors (first 20)", "", "```"]
            lines += (m_err + m_warn)[:20]
            lines += ["```"]
        return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--duration", type=int, default=600, help="seconds (default 600)")
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--pool-mode", default="transaction", choices=["session", "transaction"])
    p.add_argument("--pool-size", type=int, default=20)
    p.add_argument("--meridian-bin", default=os.environ.get("MERIDIAN_BIN"))
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = p.parse_args()
    soak = Soak(opts)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return soak.run()
    except KeyboardInterrupt:
        b.log("interrupted")
        return 130
    except b.BenchError as e:
        b.log(f"error: {e}")
        return 1
    finally:
        soak.cleanup()


if __name__ == "__main__":
    threading.current_thread().name = "soak"
    sys.exit(main())

#!/usr/bin/env python3
"""Side-by-side load test of prefork, nginx and HAProxy on loopback.

Starts the may_minihttp origin, then each proxy in front of it, and measures
every cell with wrk, interleaved (origin, prefork, nginx, haproxy, origin, ...)
so that the machine's noise hits every target alike. Reports medians with
min-max, latency percentiles, errors, CPU time per request (master and workers
together, from /proc) and prefork's ratio to the better peer, plus a memory
cell (RSS per idle keep-alive connection). Run it through bench/run.sh, which
installs the tools and builds prefork first.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# PREFORK_RELEASE_DIR points at other builds (say, before a change) to compare.
RELEASE = Path(os.environ.get("PREFORK_RELEASE_DIR", ROOT / "target" / "release"))
REPORT_LUA = Path(__file__).resolve().parent / "report.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CELLS = [
    # (name, path, connections, extra wrk headers, upload bytes)
    ("keep-alive -c64 /", "/", 64, [], 0),
    ("keep-alive -c256 /", "/", 256, [], 0),
    ("new connection per request -c64 /", "/", 64, ["Connection: close"], 0),
    ("1 MiB responses -c16", "/bytes/1048576", 16, [], 0),
    ("1 MiB uploads -c16", "/upload", 16, [], 1 << 20),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, deadline_s=15.0):
    """Waits until GET / on port answers, or fails."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def children(pid):
    """Direct children of pid (the workers of a master)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Target:
    """A server under test, started and stopped by pid."""

    name = "?"

    def __init__(self, workdir, origin_port, workers):
        self.workdir = Path(workdir)
        self.origin_port = origin_port
        self.workers = workers
        self.port = free_port()
        self.proc = None

    def command(self):
        raise NotImplementedError

    def start(self):
        log = open(self.workdir / f"{self.name}.log", "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        wait_http(self.port)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def worker_pids(self):
        return children(self.proc.pid) or [self.proc.pid]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Origin(Target):
    name = "origin"

    def __init__(self, workdir, workers):
        super().__init__(workdir, None, workers)

    def command(self):
        return [str(RELEASE / "origin"), "--addr", f"127.0.0.1:{self.port}", "--name", "o"]


class Prefork(Target):
    name = "prefork"

    def command(self):
        cfg = self.workdir / "prefork.toml"
        cfg.write_text(f"""
workers = {self.workers}
# As nginx's keepalive_requests below: wrk's connections are never recycled.
keepalive_requests = 1000000
pid_file = "{self.workdir}/prefork.pid"
[log]
error_log = "{self.workdir}/prefork-error.log"
access_log = "off"
[[listen]]
addr = "127.0.0.1:{self.port}"
[upstreams.o]
servers = ["127.0.0.1:{self.origin_port}"]
keepalive = 1024
[[routes]]
upstream = "o"
""")
        return [str(RELEASE / "prefork"), "-c", str(cfg)]


class Nginx(Target):
    name = "nginx"

    def command(self):
        cfg = self.workdir / "nginx.conf"
        cfg.write_text(f"""
worker_processes {self.workers};
worker_rlimit_nofile 20000;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {self.workdir}/nginx-body;
    proxy_temp_path {self.workdir}/nginx-proxy;
    upstream o {{ server 127.0.0.1:{self.origin_port}; keepalive 1024; }}
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        keepalive_requests 1000000;
        client_max_body_size 2m;
        location / {{
            proxy_pass http://o;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
    }}
}}
""")
        return ["nginx", "-p", str(self.workdir), "-c", str(cfg), "-g", "daemon off;"]


class Haproxy(Target):
    name = "haproxy"

    def command(self):
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(f"""
global
    nbthread {self.workers}
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:{self.port}
    default_backend o
backend o
    server s 127.0.0.1:{self.origin_port} maxconn 1024
""")
        return ["haproxy", "-f", str(cfg)]


def run_wrk(target, path, conns, headers, upload, duration, threads):
    env = dict(os.environ, UPLOAD_BYTES=str(upload))
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(REPORT_LUA)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(f"http://127.0.0.1:{target.port}{path}")
    pids = target.pids()
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    cpu1 = cpu_seconds(pids)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(r["requests"], 1)
    r["command"] = " ".join(cmd[:-1] + [f"http://127.0.0.1:PORT{path}"])
    return r


async def hold_idle(port, count, request):
    """Opens count keep-alive connections, one request each, and keeps them."""
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        conns.append((reader, writer))
    for reader, _ in conns:
        await reader.readuntil(b"Hello, World!")
    return conns


def memory_cell(target, count):
    """RSS of the workers per idle keep-alive client connection."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def measure():
        # Warm up pools and buffers first, so the delta is the connections'.
        warm = await hold_idle(target.port, 64, request)
        for _, w in warm:
            w.close()
        await asyncio.sleep(0.5)
        before = rss_kib(target.worker_pids())
        conns = await hold_idle(target.port, count, request)
        await asyncio.sleep(1.0)
        after = rss_kib(target.worker_pids())
        for _, w in conns:
            w.close()
        return before, after

    before, after = asyncio.run(measure())
    return {"before_kib": before, "after_kib": after,
            "per_conn_bytes": (after - before) * 1024 / count}


def fmt_range(values, f="{:,.0f}"):
    return f"{f.format(statistics.median(values))} ({f.format(min(values))}–{f.format(max(values))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--idle", type=int, default=10000, help="connections in the memory cell")
    ap.add_argument("--cells", default="all", help="comma-separated cell numbers (1-based) or 'all'")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.md"))
    args = ap.parse_args()

    cells = CELLS if args.cells == "all" else [CELLS[int(i) - 1] for i in args.cells.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="prefork-bench-"))
    origin = Origin(workdir, args.workers)
    origin.start()
    targets = [origin] + [cls(workdir, origin.port, args.workers) for cls in (Prefork, Nginx, Haproxy)]
    results = {}
    try:
        for t in targets[1:]:
            t.start()
        for cell in cells:
            name, path, conns, headers, upload = cell
            for rnd in range(args.rounds):
                for t in targets:
                    r = run_wrk(t, path, conns, headers, upload, args.duration, args.threads)
                    results.setdefault((name, t.name), []).append(r)
                    print(f"{name:38} round {rnd + 1} {t.name:8} {r['rps']:>10,.0f} req/s "
                          f"p99 {r['p99_us'] / 1000:7.2f} ms  errors {r['errors']:>5}  "
                          f"cpu {r['cpu_us_per_req']:6.1f} us/req", flush=True)
        memory = {}
        if args.idle:
            for t in targets[1:3]:
                memory[t.name] = memory_cell(t, args.idle)
                print(f"memory {t.name}: {memory[t.name]}", flush=True)
    finally:
        for t in reversed(targets):
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(args, cells, targets, results, memory)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def render(args, cells, targets, results, memory):
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}; "
        f"{args.workers} workers/threads per proxy; wrk -t{args.threads}, {args.duration} s per run, "
        f"{args.rounds} interleaved rounds; medians (min–max).",
        f"Versions: {version([str(RELEASE / 'prefork'), '--version'])}; {version(['nginx', '-v'])}; "
        f"{version(['haproxy', '-v'])}; {version(['wrk', '--version'])}.",
        "",
        "| cell | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/req | prefork ÷ best peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, *_ in cells:
        best_peer = max(statistics.median(r["rps"] for r in results[(name, p)]) for p in ("nginx", "haproxy"))
        for t in targets:
            runs = results[(name, t.name)]
            rps = [r["rps"] for r in runs]
            ratio = f"{statistics.median(rps) / best_peer:.2f}×" if t.name == "prefork" else ""
            lines.append(
                f"| {name} | {t.name} | {fmt_range(rps)} | "
                f"{statistics.median(r['p50_us'] for r in runs) / 1000:.2f} | "
                f"{statistics.median(r['p99_us'] for r in runs) / 1000:.2f} | "
                f"{statistics.median(r['p999_us'] for r in runs) / 1000:.2f} | "
                f"{sum(r['errors'] for r in runs)} | "
                f"{statistics.median(r['cpu_us_per_req'] for r in runs):.1f} | {ratio} |")
    if memory:
        lines += ["", f"Idle keep-alive connections ({args.idle:,}), workers' total RSS:", "",
                  "| target | RSS before | RSS with connections | per connection |", "|---|---|---|---|"]
        for name, m in memory.items():
            lines.append(f"| {name} | {m['before_kib'] / 1024:.1f} MiB | {m['after_kib'] / 1024:.1f} MiB | "
                         f"{m['per_conn_bytes'] / 1024:.2f} KiB |")
    lines += ["", "Commands: " + "; ".join(sorted({r['command'] for runs in results.values() for r in runs})), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

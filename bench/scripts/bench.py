#!/usr/bin/env python3
"""Side-by-side load test of prefork, nginx and HAProxy on loopback.

Starts the may_minihttp origin, then each proxy in front of it, and measures
every cell with wrk, interleaved (origin, prefork, nginx, haproxy, origin, ...)
so that the machine's noise hits every target alike. Reports medians with
min-max, latency percentiles, errors, CPU time per request (master and workers
together, from /proc), prefork's ratio to the better peer and the upstream
connection reuse (new connections the origin accepted against the requests it
served, in the middle of each run), plus an idle cell (memory per idle
keep-alive connection: each target's worker RSS and the kernel's TCP memory,
with one worker each, once prefork's connections are parked and every
target's RSS has settled) and a balance cell (requests per prefork worker,
from its /metrics, with a shared listener and with reuseport = true). The
report ends with issues 5's and 19's targets, each computed as met or not
met. Run it through bench/run.sh, which installs the tools and builds
prefork first.
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
# PREFORK_RELEASE_DIR points at other builds (say, before a change) to compare.
RELEASE = Path(os.environ.get("PREFORK_RELEASE_DIR", ROOT / "target" / "release"))
REPORT_LUA = Path(__file__).resolve().parent / "report.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

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


def cpu_times(pids):
    """(user, kernel) CPU seconds of pids."""
    user = kernel = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        user += int(fields[11])
        kernel += int(fields[12])
    return user / CLK_TCK, kernel / CLK_TCK


def children_cpu_seconds():
    """CPU seconds of this script's waited-for children (wrk)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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


def raise_nofile(needed):
    """Raises this process's soft RLIMIT_NOFILE, which what it starts
    inherits, to at least `needed`: past the hard limit too where that may be
    raised (root with CAP_SYS_RESOURCE, up to fs.nr_open), else to the hard
    limit. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def sockstat_tcp():
    """Bytes of TCP socket buffers in the kernel, all of the machine, from
    /proc/net/sockstat (whose `mem` is in pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            return dict(zip(fields[::2], map(int, fields[1::2])))["mem"] * PAGE_SIZE
    raise RuntimeError("no TCP line in /proc/net/sockstat")


SKMEM = re.compile(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f(\d+),w(\d+),")


def established(ss_filter):
    """Per established TCP socket matching ss_filter (say `( sport = :80 )`),
    the bytes of its buffers the kernel charges to TCP memory: received and
    not read (`r`), queued to send (`w`) and reserved ahead (`f`), from
    `ss -tm`; None without ss."""
    try:
        out = subprocess.run(["ss", "-tmnH", "state", "established", ss_filter],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [sum(map(int, m.groups())) for m in SKMEM.finditer(out)]


def kernel_slab():
    """Bytes in the kernel's slab caches (active objects times their size),
    all of the machine, from /proc/slabinfo; None where it is not readable
    (it wants root)."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()[2:]
    except OSError:
        return None
    return sum(int(f[1]) * int(f[3]) for f in map(str.split, lines))


def http_get(port, path, conn=None):
    """GET path on 127.0.0.1:port; with conn, on that keep-alive connection."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    rsp = c.getresponse()
    body = rsp.read().decode()
    if conn is None:
        c.close()
    if rsp.status != 200:
        raise RuntimeError(f"GET {path} on port {port}: {rsp.status} {body}")
    return body


class OriginStats:
    """The origin's `GET /stats` counters, read over one kept-alive connection
    so that reading them opens no connection of its own."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def read(self):
        """(connections accepted, requests served) since the origin started."""
        fields = dict(f.split("=") for f in http_get(self.port, "/stats", self.conn).split())
        return int(fields["connections"]), int(fields["requests"])


WORKER_REQUESTS = re.compile(r'^prefork_requests_total\{.*worker="(\d+)".*\} (\d+)$')
WORKER_PARKED = re.compile(r'^prefork_parked_connections\{.*worker="(\d+)".*\} (\d+)$')


def worker_requests(admin_port):
    """Requests served per prefork worker slot, from the master's /metrics."""
    counts = {}
    for line in http_get(admin_port, "/metrics").splitlines():
        m = WORKER_REQUESTS.match(line)
        if m:
            counts[int(m[1])] = counts.get(int(m[1]), 0) + int(m[2])
    return counts


def parked_connections(admin_port):
    """Idle connections parked outside a task per prefork worker slot, from
    the master's /metrics (the workers report once a second)."""
    counts = {}
    for line in http_get(admin_port, "/metrics").splitlines():
        m = WORKER_PARKED.match(line)
        if m:
            counts[int(m[1])] = int(m[2])
    return counts


HELLO_ROUTE = 'respond = { status = 200, body = "Hello, World!", content_type = "text/plain" }'


def prefork_toml(workdir, name, port, origin_port, workers, access_log='"off"', reuseport=False,
                 tables="", pin=False, settings="", route='upstream = "o"'):
    """The configuration every bench script runs prefork with: one route
    (`route`: by default to the origin over a keep-alive pool, or
    HELLO_ROUTE), files named after `name` in workdir, top-level `settings`,
    then `tables` (say, an [admin] table); with pin, each worker on a CPU of
    its own."""
    return f"""
workers = {workers}
worker_cpu_affinity = "{'auto' if pin else 'off'}"
# As nginx's keepalive_requests below: wrk's connections are never recycled.
keepalive_requests = 1000000
pid_file = "{workdir}/{name}.pid"
{settings}
[log]
error_log = "{workdir}/{name}-error.log"
access_log = {access_log}
[[listen]]
addr = "127.0.0.1:{port}"
reuseport = {str(reuseport).lower()}
[upstreams.o]
servers = ["127.0.0.1:{origin_port}"]
keepalive = 1024
[[routes]]
{route}
{tables}"""


# How long a target sized for idle connections keeps an idle client
# connection: longer than the idle cell and idle_scale.py take.
IDLE_TIMEOUT_S = 600


class TlsFiles:
    """What a proxy's TLS listener (beside its plain one) serves: the
    certificate chain (PEM, leaf first), the key, and both in one file
    (HAProxy's `crt`)."""

    def __init__(self, cert, key, combined):
        self.cert, self.key, self.combined = cert, key, combined


class Target:
    """A server under test, started and stopped by pid."""

    name = "?"

    def __init__(self, workdir, origin_port, workers, pin=False, *, fixed=False, capacity=None,
                 tls=None, http2=False):
        self.workdir = Path(workdir)
        self.origin_port = origin_port
        self.workers = workers
        # Pin each worker (or thread) to a CPU of its own, as every peer can.
        self.pin = pin
        # Answer `GET /` itself with "Hello, World!" instead of proxying.
        self.fixed = fixed
        # Client connections to size for (nginx's worker_connections,
        # HAProxy's maxconn), kept idle for IDLE_TIMEOUT_S; None: sized and
        # timed as for the load cells.
        self.capacity = capacity
        # A TlsFiles: also listen with TLS, on tls_port (bench/scripts/tls.py).
        self.tls = tls
        self.tls_port = free_port() if tls else None
        # HTTP/2 too (bench/scripts/h2.py): the TLS listener offers h2 by
        # ALPN, and one more listener on h2c_port takes h2c with prior
        # knowledge; the plain listener on port stays HTTP/1.1.
        self.http2 = http2
        self.h2c_port = free_port() if http2 else None
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
    """prefork with one shared listening socket; its admin listener serves
    /metrics (per-worker request counters) for the balance cell."""

    name = "prefork"
    reuseport = False

    def __init__(self, workdir, origin_port, workers, pin=False, **kwargs):
        super().__init__(workdir, origin_port, workers, pin, **kwargs)
        self.admin_port = free_port()

    def command(self):
        cfg = self.workdir / f"{self.name}.toml"
        # prefork sizes nothing ahead: only the idle timeout follows capacity.
        settings = f'keepalive_timeout = "{IDLE_TIMEOUT_S}s"' if self.capacity else ""
        tables = f'[admin]\naddr = "127.0.0.1:{self.admin_port}"\n'
        http2 = "http2 = true\n" if self.http2 else ""
        if self.tls:
            tables += (f'[[listen]]\naddr = "127.0.0.1:{self.tls_port}"\ntls = true\n{http2}'
                       f'[[certificates]]\ncert = "{self.tls.cert}"\nkey = "{self.tls.key}"\n')
        if self.http2:
            tables += f'[[listen]]\naddr = "127.0.0.1:{self.h2c_port}"\n{http2}'
        cfg.write_text(prefork_toml(self.workdir, self.name, self.port, self.origin_port, self.workers,
                                    reuseport=self.reuseport, pin=self.pin, settings=settings,
                                    route=HELLO_ROUTE if self.fixed else 'upstream = "o"',
                                    tables=tables))
        return [str(RELEASE / "prefork"), "-c", str(cfg)]

    def parked(self):
        """Idle connections parked in all workers."""
        return sum(parked_connections(self.admin_port).values())


class PreforkReuseport(Prefork):
    """prefork with one SO_REUSEPORT socket per worker (balance cell only)."""

    name = "prefork-reuseport"
    reuseport = True


class Nginx(Target):
    name = "nginx"

    def command(self):
        cfg = self.workdir / "nginx.conf"
        # worker_connections counts upstream connections too.
        conns = self.capacity + 2048 if self.capacity else 20000
        idle = f"keepalive_timeout {IDLE_TIMEOUT_S}s;" if self.capacity else "# default keepalive_timeout"
        location = ('return 200 "Hello, World!";' if self.fixed else """proxy_pass http://o;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream bodies both ways as prefork and HAProxy do, never through
            # temp files: request bodies in 256 KiB reads (prefork's body read
            # size), responses with no temp file.
            proxy_request_buffering off;
            client_body_buffer_size 256k;
            proxy_max_temp_file_size 0;""")
        # TLS 1.3 as well: nginx 1.22 offers only up to TLS 1.2 without it.
        http2 = " http2" if self.http2 else ""
        tls = (f"""listen 127.0.0.1:{self.tls_port} ssl{http2} backlog=1024 deferred;
        ssl_certificate {self.tls.cert};
        ssl_certificate_key {self.tls.key};
        ssl_protocols TLSv1.2 TLSv1.3;""" if self.tls else "# no TLS listener")
        h2c = (f"listen 127.0.0.1:{self.h2c_port} http2 backlog=1024 deferred;" if self.http2
               else "# no h2c listener")
        cfg.write_text(f"""
worker_processes {self.workers};
{'worker_cpu_affinity auto;' if self.pin else '# workers not pinned'}
worker_rlimit_nofile {conns + 64};
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    client_body_temp_path {self.workdir}/nginx-body;
    proxy_temp_path {self.workdir}/nginx-proxy;
    upstream o {{ server 127.0.0.1:{self.origin_port}; keepalive 1024; }}
    server {{
        # prefork's listeners have TCP_DEFER_ACCEPT on by default: so do the peers'.
        listen 127.0.0.1:{self.port} backlog=1024 deferred;
        {tls}
        {h2c}
        keepalive_requests 1000000;
        {idle}
        client_max_body_size 2m;
        location / {{
            {location}
        }}
    }}
}}
""")
        return ["nginx", "-p", str(self.workdir), "-c", str(cfg), "-g", "daemon off;"]


class Haproxy(Target):
    name = "haproxy"

    def command(self):
        cfg = self.workdir / "haproxy.cfg"
        # HAProxy wants two descriptors per connection (client and server)
        # and refuses to start when it cannot raise its limit that far: it
        # may run with what it gets (a fixed response needs one).
        limits = (f"maxconn {self.capacity}\n    no strict-limits" if self.capacity
                  else "maxconn 9000")
        client_timeout = f"{IDLE_TIMEOUT_S}s" if self.capacity else "60s"
        answer = ('http-request return status 200 content-type text/plain string "Hello, World!"'
                  if self.fixed else "default_backend o")
        alpn = " alpn h2,http/1.1" if self.http2 else ""
        tls = (f"bind 127.0.0.1:{self.tls_port} ssl crt {self.tls.combined} ssl-min-ver TLSv1.2"
               f"{alpn} defer-accept" if self.tls else "# no TLS listener")
        h2c = (f"bind 127.0.0.1:{self.h2c_port} proto h2 defer-accept" if self.http2
               else "# no h2c listener")
        cfg.write_text(f"""
global
    nbthread {self.workers}
    {self.cpu_map()}
    {limits}
defaults
    mode http
    timeout connect 5s
    timeout client {client_timeout}
    timeout http-keep-alive {client_timeout}
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:{self.port} defer-accept
    {tls}
    {h2c}
    {answer}
backend o
    server s 127.0.0.1:{self.origin_port} maxconn 1024
""")
        return ["haproxy", "-f", str(cfg)]

    def cpu_map(self):
        """Thread i on the i-th allowed CPU, wrapping around (as prefork's
        and nginx's `auto`); one line per thread, since `cpu-map auto:`
        wants as many CPUs as threads."""
        if not self.pin:
            return "# threads not pinned"
        cpus = allowed_cpus()
        return "\n    ".join(f"cpu-map 1/{i + 1} {cpus[i % len(cpus)]}" for i in range(self.workers))


def allowed_cpus():
    """The CPUs this script may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def shown(cmd):
    """cmd as the report shows it: shell-quoted, paths relative to the
    repository, the target's port as PORT."""
    url = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", cmd[-1])
    return shlex.join([str(Path(a).relative_to(ROOT)) if a == str(REPORT_LUA) else a
                       for a in cmd[:-1]] + [url])


def wrk_command(port, path, conns, headers, duration, threads, scheme="http"):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(REPORT_LUA)]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [f"{scheme}://127.0.0.1:{port}{path}"]


def parse_wrk(stdout, stderr):
    line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {stdout}\n{stderr}")
    r = json.loads(line[len("RESULT "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return r


def run_wrk(target, path, conns, headers, upload, duration, threads, origin=None, origin_stats=None,
            tls=False):
    """One wrk run against target; with origin_stats, also counts the new
    upstream connections against the requests the origin served between 25 %
    and 75 % of the run (steady state: pools are warm, wrk is not stopping).
    Records the CPU per request of the target (user and kernel), of wrk and
    of the origin (when the target is a proxy in front of it). With tls, on
    the target's TLS listener."""
    cmd = (wrk_command(target.tls_port, path, conns, headers, duration, threads, "https") if tls
           else wrk_command(target.port, path, conns, headers, duration, threads))
    env = dict(os.environ, UPLOAD_BYTES=str(upload))
    pids = target.pids()
    behind = [] if origin is None or target is origin else origin.pids()
    cpu0, origin0, wrk0 = cpu_times(pids), sum(cpu_times(behind)), children_cpu_seconds()
    start = time.monotonic()
    wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    upstream = None
    if origin_stats:
        time.sleep(max(0.0, start + duration * 0.25 - time.monotonic()))
        conns0, reqs0 = origin_stats.read()
        time.sleep(max(0.0, start + duration * 0.75 - time.monotonic()))
        conns1, reqs1 = origin_stats.read()
        upstream = {"new_conns": conns1 - conns0, "requests": reqs1 - reqs0}
    stdout, stderr = wrk.communicate(timeout=duration + 60)
    cpu1, origin1, wrk1 = cpu_times(pids), sum(cpu_times(behind)), children_cpu_seconds()
    r = parse_wrk(stdout, stderr)
    per_req = 1e6 / max(r["requests"], 1)
    r["user_us_per_req"] = (cpu1[0] - cpu0[0]) * per_req
    r["kernel_us_per_req"] = (cpu1[1] - cpu0[1]) * per_req
    r["cpu_us_per_req"] = r["user_us_per_req"] + r["kernel_us_per_req"]
    r["wrk_us_per_req"] = (wrk1 - wrk0) * per_req
    r["origin_us_per_req"] = (origin1 - origin0) * per_req
    r["upstream"] = upstream
    r["command"] = shown(cmd)
    return r


IDLE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# Connections opened (and their requests answered) at a time: a proxy's
# upstream pool then never needs more.
IDLE_BATCH = 256
# What a target sized for few connections is sized for, to measure what
# sizing for the idle cell's connections costs before any arrives.
SMALL_CAPACITY = 1024
# RSS counts as settled once it stayed within SETTLE_TOLERANCE_KIB over
# SETTLE_WINDOW_S; it is read anyway after SETTLE_DEADLINE_S. prefork's
# allocator returns freed pages over 10 s (dirty_decay_ms) from a thread that
# purges in steps, the last ones up to 10 s apart (10,000 connections: flat
# from 7 s to 17 s after parking, then 75 B per connection less): the window
# is longer than that.
SETTLE_WINDOW_S = 12.0
SETTLE_TOLERANCE_KIB = 16
SETTLE_DEADLINE_S = 40.0
# How long prefork may take to count every idle connection as parked: each
# parks after 1 s idle, and workers report their counts once a second.
PARK_DEADLINE_S = 30.0


async def hold_idle(port, count):
    """Opens count keep-alive connections, one request each, IDLE_BATCH at a
    time, and keeps them."""
    conns = []
    while len(conns) < count:
        batch = []
        for _ in range(min(IDLE_BATCH, count - len(conns))):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(IDLE_REQUEST)
            batch.append((reader, writer))
        for reader, _ in batch:
            await asyncio.wait_for(reader.readuntil(b"Hello, World!"), 10)
        conns += batch
    return conns


class IdleRow(NamedTuple):
    """One row of the idle cell: the client protocol and route it names, a
    fixed response (or proxied to the origin), the Target attribute holding
    the port the clients connect to, and `hold(port, count)`, which opens
    count connections with one request each and returns their (reader,
    writer) pairs."""

    protocol: str
    route: str
    fixed: bool
    listener: str
    hold: Callable[[int, int], Awaitable[list]]


# The idle cell's rows for plain HTTP/1.1 (bench/scripts/h2.py has HTTP/2's).
IDLE_ROWS = [IdleRow("HTTP/1.1", "fixed response", True, "port", hold_idle),
             IdleRow("HTTP/1.1", "proxied", False, "port", hold_idle)]


async def wait_until(condition, deadline_s, interval_s=0.25):
    """Whether condition() came true within deadline_s (asks at once, then
    every interval_s)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(interval_s)
    return True


async def settled_rss(pids, min_s=0.0, deadline_s=SETTLE_DEADLINE_S):
    """(RSS KiB of pids, seconds waited, whether it settled): sampled every
    0.5 s until it stayed within SETTLE_TOLERANCE_KIB for SETTLE_WINDOW_S and
    min_s passed, or until deadline_s."""
    start = time.monotonic()
    samples = []
    while True:
        now = time.monotonic() - start
        samples.append((now, rss_kib(pids)))
        window = [kib for t, kib in samples if t >= now - SETTLE_WINDOW_S]
        steady = (samples[0][0] <= now - SETTLE_WINDOW_S
                  and max(window) - min(window) <= SETTLE_TOLERANCE_KIB)
        if (steady and now >= min_s) or now >= max(deadline_s, min_s):
            return samples[-1][1], now, steady
        await asyncio.sleep(0.5)


async def warmed_rss(target, listener="port", hold=hold_idle):
    """(settled RSS KiB, whether it settled) of target's workers after 64
    connections with one request each (`hold` on the port named by
    `listener`) came and went, so that pools and buffers are in place before
    the idle connections arrive."""
    for _, w in await hold(getattr(target, listener), 64):
        w.close()
    kib, _, steady = await settled_rss(target.worker_pids())
    return kib, steady


async def idle_run(target, count, min_wait_s, listener="port", hold=hold_idle):
    """Worker RSS and kernel TCP memory of target (started) before and with
    count idle keep-alive connections, opened by `hold` on the port named by
    `listener` (see IdleRow). With them open, waits until prefork counts them
    all as parked (with PARK_DEADLINE_S), then until the RSS has settled, at
    least min_wait_s after the last one was answered."""
    pids = target.worker_pids()
    port = getattr(target, listener)
    before_kib, before_steady = await warmed_rss(target, listener, hold)
    tcp0 = sockstat_tcp()
    slab0 = kernel_slab()
    conns = await hold(port, count)
    answered = time.monotonic()
    parked = None
    if hasattr(target, "parked"):
        await wait_until(lambda: target.parked() >= count, PARK_DEADLINE_S)
        parked = target.parked()
    elapsed = time.monotonic() - answered
    after_kib, _, steady = await settled_rss(pids, min_s=max(0.0, min_wait_s - elapsed))
    waited = time.monotonic() - answered
    tcp1 = sockstat_tcp()
    slab1 = kernel_slab()
    server = established(f"( sport = :{port} )")
    upstream = None if target.fixed else established(f"( dport = :{target.origin_port} )")
    closed = sum(r.at_eof() for r, _ in conns)
    for _, w in conns:
        w.close()
    return {"before_kib": before_kib, "after_kib": after_kib,
            "per_conn_bytes": (after_kib - before_kib) * 1024 / count,
            "tcp_before": tcp0, "tcp_after": tcp1, "tcp_per_conn_bytes": (tcp1 - tcp0) / count,
            "slab_per_conn_bytes": None if slab0 is None else (slab1 - slab0) / count,
            "server_buffers_per_conn_bytes": None if server is None else sum(server) / count,
            "upstream": None if upstream is None else len(upstream),
            "closed": closed, "parked": parked,
            "waited_s": waited, "settled": steady and before_steady}


def idle_cell(workdir, origin_port, count, rows=IDLE_ROWS, names=None, **target_kwargs):
    """{(protocol, route, target name): measurement} for each IdleRow: each
    target (those named in names, default all) with one worker (thread), sized for count connections, started
    afresh for each row (with target_kwargs, say its TLS files); prefork
    first, and each peer waits at least as long as prefork did before its
    RSS is read. Peers that size their connection tables ahead are also
    started sized for SMALL_CAPACITY, to measure what that sizing itself
    costs (`prealloc_per_conn_bytes`)."""
    raise_nofile(count + 1024)
    idle_dir = Path(workdir) / "idle"
    idle_dir.mkdir(exist_ok=True)
    idle_dir.chmod(0o755)
    out = {}
    for protocol, route, fixed, listener, hold in rows:
        min_wait = 0.0
        for cls in (c for c in (Prefork, Nginx, Haproxy) if names is None or c.name in names):
            small_kib = None
            if cls is not Prefork:
                small = cls(idle_dir, origin_port, 1, fixed=fixed, capacity=min(SMALL_CAPACITY, count),
                            **target_kwargs)
                try:
                    small.start()
                    small_kib, _ = asyncio.run(warmed_rss(small, listener, hold))
                finally:
                    small.stop()
            t = cls(idle_dir, origin_port, 1, fixed=fixed, capacity=count, **target_kwargs)
            try:
                t.start()
                m = asyncio.run(idle_run(t, count, min_wait, listener, hold))
            finally:
                t.stop()
            min_wait = max(min_wait, m["waited_s"])
            m["prealloc_per_conn_bytes"] = (
                0.0 if small_kib is None else (m["before_kib"] - small_kib) * 1024 / count)
            out[(protocol, route, t.name)] = m
            print(f"idle {protocol} {route} {t.name}: {m}", flush=True)
    return out


BALANCE_CONNS = 256
BALANCE_MODES = [("keep-alive", []), ("new connection per request", ["Connection: close"])]


def settled_worker_requests(target, before, served, deadline_s=10.0):
    """Requests per worker since `before`, read once the workers' counters
    (reported to the master every second) cover the `served` requests, plus
    one more report so that no worker's last second is missing."""
    end = time.monotonic() + deadline_s
    while True:
        now = worker_requests(target.admin_port)
        if sum(now.values()) - sum(before.values()) >= served or time.monotonic() > end:
            break
        time.sleep(0.2)
    time.sleep(1.2)
    now = worker_requests(target.admin_port)
    return [now.get(w, 0) - before.get(w, 0) for w in sorted(now)]


def balance_run(target, headers, duration, threads):
    """Requests per worker of one wrk -c256 run, and their largest deviation
    from the mean (a fraction)."""
    before = worker_requests(target.admin_port)
    cmd = wrk_command(target.port, "/", BALANCE_CONNS, headers, duration, threads)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    r = parse_wrk(out.stdout, out.stderr)
    counts = settled_worker_requests(target, before, r["requests"])
    mean = sum(counts) / len(counts) if counts else 0
    max_dev = max(abs(c - mean) for c in counts) / mean if mean else float("inf")
    return {"counts": counts, "max_dev": max_dev, "errors": r["errors"],
            "command": shown(cmd)}


def run_cells(args, cells, targets, origin_stats):
    results = {}
    for name, path, conns, headers, upload in cells:
        for rnd in range(args.rounds):
            for t in targets:
                stats = origin_stats if t.name != "origin" else None
                r = run_wrk(t, path, conns, headers, upload, args.duration, args.threads,
                            targets[0], stats)
                results.setdefault((name, t.name), []).append(r)
                reuse = f"  reuse {reuse_pct([r]):7.3f} %" if r["upstream"] else ""
                print(f"{name:38} round {rnd + 1} {t.name:8} {r['rps']:>10,.0f} req/s "
                      f"p99 {r['p99_us'] / 1000:7.2f} ms  errors {r['errors']:>5}  "
                      f"cpu {r['cpu_us_per_req']:6.1f} us/req "
                      f"({r['kernel_us_per_req']:.1f} kernel){reuse}", flush=True)
    return results


def run_balance(args, shared, reuseport):
    """{(mode, target name): [run, ...]}, shared and reuseport interleaved."""
    balance = {}
    for rnd in range(args.rounds):
        for mode, headers in BALANCE_MODES:
            for t in (shared, reuseport):
                b = balance_run(t, headers, args.duration, args.threads)
                balance.setdefault((mode, t.name), []).append(b)
                print(f"balance {mode:28} round {rnd + 1} {t.name:18} {b['counts']} "
                      f"max deviation {b['max_dev'] * 100:.1f} %  errors {b['errors']}", flush=True)
    return balance


def run_interleaved(cells, rounds, targets, run, show):
    """{(cell name, target name): [result, ...]}: starts each target (in
    front of the started origin, whose port it is given) when there are
    cells, runs `run(cell, target)` for each cell, round by round, every
    target in turn within a round (so that the machine's noise hits every
    target alike), `show(cell, round, target, result)` printing each as it
    comes, then stops the targets."""
    results = {}
    for t in targets:
        if cells:
            t.start()
    for cell in cells:
        for rnd in range(rounds):
            for t in targets:
                r = run(cell, t)
                results.setdefault((cell[0], t.name), []).append(r)
                show(cell, rnd + 1, t, r)
    for t in targets:
        t.stop()
    return results


def write_report(out, report):
    """Writes the Markdown report to out and prints it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(report)
    print(report)


def select_cells(spec, cells):
    """The cells a --cells value names: 'all', 'none' or 1-based numbers
    separated by commas."""
    if spec in ("all", "none"):
        return list(cells) if spec == "all" else []
    return [cells[int(i) - 1] for i in spec.split(",")]


def make_workdir(prefix):
    """A temporary directory for one run's configurations and logs."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    # nginx's workers run as nobody: they must reach their temp directories.
    workdir.chmod(0o755)
    return workdir


def add_side_by_side_args(ap, out):
    """The options of tls.py and h2.py that bench.py's cells do not have:
    --cells, --targets (a list) and --out (default bench/results/<out>)."""
    ap.add_argument("--cells", default="all", help="comma-separated cell numbers (1-based), 'all' or 'none'")
    ap.add_argument("--targets", default="prefork,nginx,haproxy", type=lambda s: s.split(","),
                    help="the proxies to run, comma-separated")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / out))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    # Off by default, as each proxy ships. Pinned, every proxy's keep-alive p99
    # drops by a third here, but new connections slow by a quarter for all of
    # them: wrk and the origin share the two cores.
    ap.add_argument("--cpu-affinity", choices=("auto", "off"), default="off",
                    help="pin each proxy's workers (threads) to CPUs: prefork's worker_cpu_affinity, "
                    "nginx's worker_cpu_affinity, HAProxy's cpu-map (the origin and wrk stay unpinned)")
    ap.add_argument("--idle", type=int, default=10000, help="connections in the idle cell (0: skip)")
    ap.add_argument("--no-balance", action="store_true", help="skip the balance cell")
    ap.add_argument("--cells", default="all",
                    help="comma-separated wrk cell numbers (1-based), 'all' or 'none'")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.md"))
    return ap.parse_args()


def main():
    args = parse_args()
    cells = select_cells(args.cells, CELLS)
    workdir = make_workdir("prefork-bench-")
    origin = Origin(workdir, args.workers)
    origin.start()
    pin = args.cpu_affinity == "auto"
    targets = [origin] + [cls(workdir, origin.port, args.workers, pin) for cls in (Prefork, Nginx, Haproxy)]
    reuseport = PreforkReuseport(workdir, origin.port, args.workers, pin)
    results, memory, balance = {}, {}, {}
    try:
        if cells or not args.no_balance:
            for t in targets[1:] + [reuseport]:
                t.start()
        results = run_cells(args, cells, targets, OriginStats(origin.port))
        if not args.no_balance:
            balance = run_balance(args, targets[1], reuseport)
        if args.idle:
            memory = idle_cell(workdir, origin.port, args.idle)
    finally:
        for t in [reuseport] + targets[::-1]:
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    write_report(args.out, render(args, cells, targets, results, memory, balance))


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def fmt_range(values, f="{:,.0f}"):
    return f"{f.format(statistics.median(values))} ({f.format(min(values))}–{f.format(max(values))})"


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def reuse_pct(runs):
    """Upstream connection reuse over runs: 1 - new connections / requests."""
    new = sum(r["upstream"]["new_conns"] for r in runs)
    reqs = sum(r["upstream"]["requests"] for r in runs)
    return (1 - new / reqs) * 100 if reqs else 0.0


def fmt_errors(runs):
    total = {k: sum(r[k] for r in runs) for k in ("connect", "read", "write", "status", "timeout")}
    detail = ", ".join(f"{n} {k}" for k, n in total.items() if n)
    return f"{sum(total.values())} ({detail})" if detail else "0"


def cpu_model():
    """The CPU's model name, for the report's machine line."""
    return next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")), platform.processor())


def header_lines(args):
    return [
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}; "
        f"{args.workers} workers/threads per proxy (one in the idle cell), "
        f"{'each pinned to a CPU' if args.cpu_affinity == 'auto' else 'not pinned'}; "
        f"wrk -t{args.threads}, {args.duration} s per run, "
        f"{args.rounds} interleaved rounds; medians (min–max).",
        f"Versions: {version([str(RELEASE / 'prefork'), '--version'])}; {version(['nginx', '-v'])}; "
        f"{version(['haproxy', '-v'])}; {version(['wrk', '--version'])}.",
        "",
        "Run: `" + shlex.join(["bench/run.sh"] + sys.argv[1:]) + "`",
    ]


def best_peer(results, name):
    """The peer (nginx or HAProxy) with the higher median req/s in a cell."""
    return max(("nginx", "haproxy"), key=lambda p: median_of(results[(name, p)], "rps"))


def cells_table(cells, targets, results):
    lines = ["| cell | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/req (of which kernel) "
             "| prefork ÷ best peer |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, *_ in cells:
        peer_rps = median_of(results[(name, best_peer(results, name))], "rps")
        for t in targets:
            runs = results[(name, t.name)]
            ratio = f"{median_of(runs, 'rps') / peer_rps:.2f}×" if t.name == "prefork" else ""
            lines.append(
                f"| {name} | {t.name} | {fmt_range([r['rps'] for r in runs])} | "
                f"{median_of(runs, 'p50_us') / 1000:.2f} | {median_of(runs, 'p99_us') / 1000:.2f} | "
                f"{median_of(runs, 'p999_us') / 1000:.2f} | {fmt_errors(runs)} | "
                f"{median_of(runs, 'cpu_us_per_req'):.1f} ({median_of(runs, 'kernel_us_per_req'):.1f}) "
                f"| {ratio} |")
    return lines


def budget_table(cells, results):
    """How far removing prefork's user-space work could take it here. wrk,
    the origin and the proxy share the machine's cores: a run that serves R
    req/s keeps them busy R × (wrk + origin + proxy CPU per request). At the
    same busy share, with the proxy's user time gone and everything else as
    measured, it would serve R × total ÷ (total − proxy user): an upper bound
    on what any user-space optimisation can give on this machine."""
    lines = ["What prefork's user-space work costs it here (µs per request, medians of prefork's runs; "
             "busy = share of the cores used by wrk, the origin and prefork together; ceiling = req/s "
             "at the same busy share with prefork's user time cut to zero):", "",
             "| cell | wrk | origin | prefork user | prefork kernel | busy | ceiling | ceiling ÷ best peer |",
             "|---|---|---|---|---|---|---|---|"]
    cores = os.cpu_count()
    for name, path, *_ in cells:
        if path != "/":
            continue
        pre = results[(name, "prefork")]
        peer_rps = median_of(results[(name, best_peer(results, name))], "rps")
        for r in pre:
            total = r["wrk_us_per_req"] + r["origin_us_per_req"] + r["cpu_us_per_req"]
            r["busy"] = total * r["rps"] / (cores * 1e6)
            r["ceiling_rps"] = r["rps"] * total / (total - r["user_us_per_req"])
        ceiling = median_of(pre, "ceiling_rps")
        lines.append(
            f"| {name} | {median_of(pre, 'wrk_us_per_req'):.1f} | {median_of(pre, 'origin_us_per_req'):.1f} "
            f"| {median_of(pre, 'user_us_per_req'):.1f} | {median_of(pre, 'kernel_us_per_req'):.1f} "
            f"| {median_of(pre, 'busy') * 100:.0f} % | {ceiling:,.0f} | {ceiling / peer_rps:.2f}× |")
    return lines


def reuse_table(cells, results):
    lines = ["Upstream connection reuse: connections the origin accepted and requests it served "
             "between 25 % and 75 % of each run (its `GET /stats`), summed over the rounds; "
             "reuse = 1 − new connections ÷ requests.", "",
             "| cell | proxy | new upstream connections | requests | reuse |", "|---|---|---|---|---|"]
    for name, *_ in cells:
        for proxy in ("prefork", "nginx", "haproxy"):
            runs = results[(name, proxy)]
            new = sum(r["upstream"]["new_conns"] for r in runs)
            reqs = sum(r["upstream"]["requests"] for r in runs)
            lines.append(f"| {name} | {proxy} | {new:,} | {reqs:,} | {reuse_pct(runs):.3f} % |")
    return lines


def balance_table(balance):
    lines = [f"Balance: requests per prefork worker under `wrk -c{BALANCE_CONNS} /` (deltas of "
             "`prefork_requests_total` per `worker` from the admin listener's `/metrics`), one "
             "shared listening socket vs `reuseport = true`.", "",
             "| mode | listener | requests per worker, each round | max deviation from the mean | errors |",
             "|---|---|---|---|---|"]
    for (mode, name), runs in balance.items():
        counts = "; ".join(" / ".join(f"{c:,}" for c in b["counts"]) for b in runs)
        listener = "`reuseport = true`" if name == "prefork-reuseport" else "shared"
        devs = [b["max_dev"] * 100 for b in runs]
        lines.append(f"| {mode} | {listener} | {counts} | ±{fmt_range(devs, '{:.1f}')} % | "
                     f"{sum(b['errors'] for b in runs)} |")
    return lines


def fmt_bytes(n):
    """n bytes as B, KiB or MiB."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    if abs(n) < 1 << 20:
        return f"{n / 1024:.2f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def idle_table(args, memory, what="keep-alive connections"):
    lines = [f"Idle {what}: {args.idle:,} to one worker (thread) of each target, one "
             "request each, then idle. RSS is the worker's (HAProxy's process), read once prefork "
             "counts them all as parked and every target's RSS stayed within "
             f"{SETTLE_TOLERANCE_KIB} KiB for {SETTLE_WINDOW_S:.0f} s (each peer waiting at least as "
             "long as prefork); before = after 64 connections came and went, settled. Sized ahead = "
             "what the target's RSS grew by when sized for them (nginx's worker_connections, "
             f"HAProxy's maxconn) rather than for {SMALL_CAPACITY:,}, before any arrived; prefork sizes "
             "nothing ahead. Kernel memory: the target's own sockets' buffers (received, queued and "
             "reserved bytes, `ss -tm`); of the whole machine and for both ends of each connection "
             "(client and server are on loopback), socket buffers as /proc/net/sockstat's TCP `mem` "
             "(pages; the kernel counts them in steps of up to 1 MiB per CPU) before → with them "
             "(per connection), and the slab caches' active objects (/proc/slabinfo: sockets, inodes, "
             "files, epoll items, ...). Upstream: connections from the target to the origin still open "
             "(its pool).", "",
             "| protocol | route | target | worker RSS before → with them | per connection | sized ahead, "
             "per connection | target's socket buffers per connection | kernel socket buffers, both "
             "ends | kernel slab per connection, both ends | upstream | waited | still open |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (protocol, route, name), m in memory.items():
        prealloc = fmt_bytes(m["prealloc_per_conn_bytes"]) if name != "prefork" else "none"
        waited = f"{m['waited_s']:.0f} s" + ("" if m["settled"] else " (not settled)")
        if m["parked"] is not None:
            waited += f", {m['parked']:,} parked"
        slab, server = (("–" if m[k] is None else fmt_bytes(m[k]))
                        for k in ("slab_per_conn_bytes", "server_buffers_per_conn_bytes"))
        upstream = "–" if m["upstream"] is None else f"{m['upstream']:,}"
        lines.append(
            f"| {protocol} | {route} | {name} | {m['before_kib'] / 1024:.1f} → "
            f"{m['after_kib'] / 1024:.1f} MiB | **{fmt_bytes(m['per_conn_bytes'])}** | {prealloc} | "
            f"{server} | {fmt_bytes(m['tcp_before'])} → {fmt_bytes(m['tcp_after'])} "
            f"({fmt_bytes(m['tcp_per_conn_bytes'])}) | {slab} | {upstream} | {waited} | "
            f"{args.idle - m['closed']:,} |")
    return lines


def verdict(met):
    return "**met**" if met else "**not met**"


def cell_targets(cells, results):
    """Rows (target, measured, met) for the req/s, p99 and CPU targets."""
    rows = []
    for name, path, *_ in cells:
        pre, peer = results[(name, "prefork")], best_peer(results, name)
        ratio = median_of(pre, "rps") / median_of(results[(name, peer)], "rps")
        if path == "/":
            p99_peers = min(median_of(results[(name, p)], "p99_us") for p in ("nginx", "haproxy"))
            p99 = median_of(pre, "p99_us")
            rows.append((f"{name}: req/s ≥ 1.2× the better peer, p99 no worse than the peers' best",
                         f"{ratio:.2f}× {peer}; p99 {p99 / 1000:.2f} ms vs {p99_peers / 1000:.2f} ms",
                         ratio >= 1.2 and p99 <= p99_peers))
        else:
            rows.append((f"{name}: req/s ≥ 1.0× the better peer", f"{ratio:.2f}× {peer}", ratio >= 1.0))
        cpu = median_of(pre, "cpu_us_per_req") / median_of(results[(name, "nginx")], "cpu_us_per_req")
        rows.append((f"{name}: CPU per request ≤ 0.8× nginx", f"{cpu:.2f}×", cpu <= 0.8))
    return rows


def idle_targets(memory, rows):
    """Rows (target, measured, met): for each IdleRow measured, prefork's
    worker RSS per idle connection at most nginx's."""
    out = []
    for protocol, route, *_ in rows:
        pre, peer = memory.get((protocol, route, "prefork")), memory.get((protocol, route, "nginx"))
        if pre is not None and peer is not None:
            out.append((f"idle {protocol} connection ({route}): worker RSS at most nginx's",
                        f"{fmt_bytes(pre['per_conn_bytes'])} vs {fmt_bytes(peer['per_conn_bytes'])}",
                        pre["per_conn_bytes"] <= peer["per_conn_bytes"]))
    return out


def other_targets(cells, results, memory, balance):
    """Rows (target, measured, met) for errors, memory, reuse and balance."""
    rows = []
    with_errors = [f"{t} in {c}: {fmt_errors(runs)}" for (c, t), runs in results.items()
                   if sum(r["errors"] for r in runs)]
    rows.append(("no wrk errors for any target in any cell", "; ".join(with_errors) or "none",
                 not with_errors))
    for protocol, route, *_ in IDLE_ROWS:
        pre = memory.get((protocol, route, "prefork"))
        if pre is not None:
            kib = pre["per_conn_bytes"] / 1024
            rows.append((f"< 10 KiB of worker memory per idle keep-alive connection ({protocol}, {route})",
                         f"{kib:.2f} KiB", kib < 10))
    rows += idle_targets(memory, IDLE_ROWS)
    for name, *_ in cells:
        pct = reuse_pct(results[(name, "prefork")])
        rows.append((f"{name}: upstream connection reuse > 99.9 %", f"{pct:.3f} %", pct > 99.9))
    for (mode, name), runs in balance.items():
        if name == "prefork-reuseport":
            dev = statistics.median(b["max_dev"] for b in runs) * 100
            rows.append((f"balance with `reuseport = true`, {mode}: within ±10 % of the mean",
                         f"±{dev:.1f} % (median of rounds)", dev <= 10))
    return rows


def goals_table(whose, rows):
    """The report's table of targets: rows (target, measured, met), under a
    line naming whose targets they are and how many were met."""
    met = sum(ok for *_, ok in rows)
    lines = [f"{whose}, computed from this run ({met} of {len(rows)} met):", "",
             "| target | measured | |", "|---|---|---|"]
    return lines + [f"| {t} | {m} | {verdict(ok)} |" for t, m, ok in rows]


def commands_list(title, results):
    """The report's closing list of the load commands the results ran
    (each result's `command`), under title; none without results."""
    commands = sorted({r["command"] for runs in results.values() for r in runs})
    return ["", title, ""] + [f"- `{c}`" for c in commands] if commands else []


def targets_table(cells, results, memory, balance):
    rows = cell_targets(cells, results) + other_targets(cells, results, memory, balance)
    return goals_table("Issues 5's and 19's targets", rows)


def render(args, cells, targets, results, memory, balance):
    lines = header_lines(args)
    if cells:
        lines += [""] + cells_table(cells, targets, results)
        lines += [""] + budget_table(cells, results)
        lines += [""] + reuse_table(cells, results)
    if balance:
        lines += [""] + balance_table(balance)
    if memory:
        lines += [""] + idle_table(args, memory)
    lines += [""] + targets_table(cells, results, memory, balance)
    commands = sorted({r["command"] for runs in results.values() for r in runs} |
                      {b["command"] for runs in balance.values() for b in runs})
    if commands:
        lines += ["", "wrk commands (PORT: the target's port; `UPLOAD_BYTES=1048576` in the environment "
                  "for the upload cell):", ""] + [f"- `{c}`" for c in commands]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())

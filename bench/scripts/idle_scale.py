#!/usr/bin/env python3
"""Many idle keep-alive connections on one prefork worker (issue 19).

Starts prefork with one worker (`--workers` for more) and a `respond` route,
then opens `--connections` keep-alive connections (100,000 by default), one
request each, from client processes that each bind their own loopback
source address (127.0.0.2 and up: one address has only the ephemeral port
range's ports, one process only RLIMIT_NOFILE descriptors). With them all
idle it reports:

- the worker's RSS per idle connection, once prefork counts them all as
  parked and the RSS has settled (as bench.py's idle cell: unchanged for
  longer than jemalloc's purge steps, with a deadline);
- the kernel's memory per connection: the buffers of prefork's sockets
  (`ss -tm`), and for both ends TCP socket buffers (/proc/net/sockstat's
  `mem`, in pages) and slab objects (/proc/slabinfo);
- the workers' CPU time while the connections idle (utime + stime from
  /proc/PID/stat over `--cpu-seconds`);
- the latency of a request sent on each of `--wake` idle connections chosen
  at random, one after the other (each must be answered);
- how many connections the server closed meanwhile (none should be).

It raises RLIMIT_NOFILE, soft and hard, for itself and for prefork, which
inherits it. Raising the hard limit needs CAP_SYS_RESOURCE (root may go up
to fs.nr_open): where that is missing and one worker would need more
descriptors than the hard limit, it stops and says so (`--workers` spreads
the connections over more workers). Loopback only; it stops only the
processes it started (by pid), also on failure. Build first
(`cargo build --release --bin prefork --bin origin`), then:

    python3 bench/scripts/idle_scale.py [--connections 100000] [--workers 1]
        [--wake 200] [--cpu-seconds 10] [--out bench/results/idle_scale.md]
"""

import argparse
import asyncio
import math
import multiprocessing
import os
import platform
import random
import select
import shlex
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (RELEASE, ROOT, Prefork, cpu_model, cpu_times, established, fmt_bytes,  # noqa: E402
                   kernel_slab, raise_nofile, settled_rss, sockstat_tcp, version, wait_until, warmed_rss)

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, World!"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Connections a client process opens before it reads their responses: fewer
# than the listener's backlog (1024) even with every process at it at once.
BATCH = 64
# Descriptors a process needs besides its connections.
SPARE_FDS = 256
# Connections per client process at most (each has its own source address).
PER_CLIENT = 16000
# How long opening every connection, and prefork counting them all as
# parked, may take.
OPEN_DEADLINE_S = 600.0
PARK_DEADLINE_S = 60.0
# How long one request on a woken connection may take to be answered.
WAKE_TIMEOUT_S = 10.0


def read_response(sock):
    """Reads one `Hello, World!` response from sock; fails on anything else."""
    buf = b""
    while not buf.endswith(BODY):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    if not buf.startswith(b"HTTP/1.1 200 "):
        raise ConnectionError(f"unexpected response {buf[:64]!r}")


def open_connections(source, port, count):
    """count connections from source to 127.0.0.1:port, each with one
    request answered, BATCH at a time."""
    socks = []
    while len(socks) < count:
        batch = []
        for _ in range(min(BATCH, count - len(socks))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            batch.append(s)
            # The port is then chosen at connect, for the whole 4-tuple.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            s.settimeout(WAKE_TIMEOUT_S)
            s.connect(("127.0.0.1", port))
            s.sendall(REQUEST)
        for s in batch:
            read_response(s)
        socks += batch
    return socks


def closed_by_server(socks):
    """How many of socks are readable (closed by the server, or sent
    something unasked) right now."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLRDHUP)
    return len(poller.poll(0))


def wake(socks, indexes):
    """Seconds from sending a request on each of socks[indexes] (one after the
    other) to its whole response; None where it was not answered."""
    out = []
    for i in indexes:
        start = time.perf_counter()
        try:
            socks[i].sendall(REQUEST)
            read_response(socks[i])
            out.append(time.perf_counter() - start)
        except OSError:
            out.append(None)
    return out


def client(pipe, source, port, count):
    """A client process: opens its connections, answers `check`, `wake` and
    `close` on pipe, and resets its connections (no TIME_WAIT left on the
    source ports) when told to close or when the parent goes away."""
    socks = []
    try:
        socks = open_connections(source, port, count)
        pipe.send(("opened", len(socks)))
        while True:
            cmd, arg = pipe.recv()
            if cmd == "check":
                pipe.send(("closed", closed_by_server(socks)))
            elif cmd == "wake":
                pipe.send(("woke", wake(socks, arg)))
            else:
                break
    except (OSError, EOFError) as e:
        try:
            pipe.send(("error", f"{source}: {e!r} after {len(socks)} connections"))
        except OSError:
            pass
    finally:
        linger = struct.pack("ii", 1, 0)
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            s.close()


class Clients:
    """The client processes, stopped (by pid) by close() whatever start()
    got to."""

    def __init__(self, connections, per_client):
        groups = math.ceil(connections / per_client)
        if groups > 252:
            raise SystemExit(f"{groups} client processes would need source addresses past 127.0.0.254")
        self.sizes = [connections // groups + (i < connections % groups) for i in range(groups)]
        self.sources = [f"127.0.0.{2 + i}" for i in range(groups)]
        self.pipes, self.procs = [], []

    def start(self, port):
        ctx = multiprocessing.get_context("fork")
        for source, size in zip(self.sources, self.sizes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=client, args=(theirs, source, port, size), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def receive(self, pipe, want, deadline_s):
        if not pipe.poll(deadline_s):
            raise RuntimeError(f"a client process did not answer within {deadline_s:.0f} s")
        kind, value = pipe.recv()
        if kind != want:
            raise RuntimeError(f"a client process failed: {value}")
        return value

    def wait_opened(self):
        end = time.monotonic() + OPEN_DEADLINE_S
        return sum(self.receive(p, "opened", max(0.0, end - time.monotonic())) for p in self.pipes)

    def closed_by_server(self):
        for p in self.pipes:
            p.send(("check", None))
        return sum(self.receive(p, "closed", 60) for p in self.pipes)

    def wake(self, count, rng):
        """Latencies of requests on count connections chosen at random (None
        where one was not answered), one client process after the other."""
        chosen = sorted(rng.sample(range(sum(self.sizes)), count))
        out, first = [], 0
        for pipe, size in zip(self.pipes, self.sizes):
            mine = [i - first for i in chosen if first <= i < first + size]
            first += size
            if mine:
                pipe.send(("wake", mine))
                out += self.receive(pipe, "woke", WAKE_TIMEOUT_S * len(mine) + 10)
        return out

    def close(self):
        for p in self.pipes:
            try:
                p.send(("close", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def progress(msg):
    print(f"idle_scale: {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=1, help="prefork workers sharing the connections")
    ap.add_argument("--wake", type=int, default=200, help="idle connections to send a request on")
    ap.add_argument("--cpu-seconds", type=float, default=10.0, help="how long the idle CPU is measured")
    ap.add_argument("--seed", type=int, default=19, help="which connections are woken")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "idle_scale.md"))
    return ap.parse_args()


def check_limits(args):
    """Raises RLIMIT_NOFILE for the busiest worker; returns connections per
    client process, or stops when the machine cannot hold the run."""
    per_worker = math.ceil(args.connections / args.workers)
    # The load board keeps a worker at most 4 (plus 1/16) connections ahead.
    ahead = per_worker // 16 + 4 if args.workers > 1 else 0
    needed = per_worker + ahead + SPARE_FDS
    limit = raise_nofile(needed)
    if limit < needed:
        workers = math.ceil(args.connections / ((limit - SPARE_FDS) * 15 / 16))
        raise SystemExit(
            f"one worker would hold {per_worker:,} connections and needs {needed:,} descriptors, but "
            f"RLIMIT_NOFILE stays at {limit:,}: raising its hard limit needs CAP_SYS_RESOURCE (root "
            f"may go up to fs.nr_open). Run as such, or with --workers {workers} or fewer connections.")
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return min(PER_CLIENT, limit - SPARE_FDS, high - low + 1 - 1000)


def measure(args, prefork, per_client):
    pids = prefork.worker_pids()
    before_kib, _ = asyncio.run(warmed_rss(prefork))
    tcp0 = sockstat_tcp()
    slab0 = kernel_slab()
    start = time.monotonic()
    clients = Clients(args.connections, per_client)
    try:
        clients.start(prefork.port)
        progress(f"opening {args.connections:,} connections from {len(clients.sizes)} client processes")
        opened = clients.wait_opened()
        progress(f"opened {opened:,} in {time.monotonic() - start:.1f} s; waiting until they are parked")
        r = {"opened": opened, "open_s": time.monotonic() - start,
             "sources": f"{clients.sources[0]}–{clients.sources[-1]}", "clients": len(clients.procs)}
        answered = time.monotonic()
        asyncio.run(wait_until(lambda: prefork.parked() >= opened, PARK_DEADLINE_S, 0.5))
        r["parked"] = prefork.parked()
        r["parked_s"] = time.monotonic() - answered
        progress(f"{r['parked']:,} parked; waiting until the worker's RSS settles")
        after_kib, _, r["settled"] = asyncio.run(settled_rss(pids))
        r["settle_s"] = time.monotonic() - answered
        tcp1 = sockstat_tcp()
        slab1 = kernel_slab()
        server = established(f"( sport = :{prefork.port} )")
        r["server_buffers_per_conn"] = None if server is None else sum(server) / opened
        r["server_sockets"] = None if server is None else len(server)
        r.update(before_kib=before_kib, after_kib=after_kib,
                 rss_per_conn=(after_kib - before_kib) * 1024 / opened,
                 tcp0=tcp0, tcp1=tcp1, tcp_per_conn=(tcp1 - tcp0) / opened,
                 slab_per_conn=None if slab0 is None else (slab1 - slab0) / opened)
        progress(f"RSS {after_kib / 1024:.1f} MiB; measuring the CPU while idle")
        cpu0, master0, t0 = cpu_times(pids), cpu_times([prefork.proc.pid]), time.monotonic()
        time.sleep(args.cpu_seconds)
        cpu1, master1, t1 = cpu_times(pids), cpu_times([prefork.proc.pid]), time.monotonic()
        r["idle_s"] = t1 - t0
        r["worker_cpu_s"] = sum(cpu1) - sum(cpu0)
        r["master_cpu_s"] = sum(master1) - sum(master0)
        r["closed"] = clients.closed_by_server()
        progress(f"waking {args.wake} connections")
        r["latencies"] = clients.wake(min(args.wake, opened), random.Random(args.seed))
        return r
    finally:
        clients.close()


def report(args, r):
    answered = [t for t in r["latencies"] if t is not None]
    ms = [t * 1000 for t in answered]
    wake = (f"{len(answered)} of {len(r['latencies'])} answered; median {statistics.median(ms):.2f} ms, "
            f"max {max(ms):.2f} ms" if ms else f"none of {len(r['latencies'])} answered")
    slab, server = (("–" if r[k] is None else fmt_bytes(r[k]))
                    for k in ("slab_per_conn", "server_buffers_per_conn"))
    settled = "settled" if r["settled"] else "not settled"
    rows = [
        ("connections opened, one request each", f"{r['opened']:,} in {r['open_s']:.1f} s, from "
         f"{r['clients']} client processes on {r['sources']}"),
        ("counted as parked", f"{r['parked']:,}, {r['parked_s']:.1f} s after the last was answered"),
        ("worker RSS before → with them", f"{r['before_kib'] / 1024:.1f} → {r['after_kib'] / 1024:.1f} MiB "
         f"({settled} {r['settle_s']:.0f} s after the last was answered)"),
        ("**worker RSS per idle connection**", f"**{fmt_bytes(r['rss_per_conn'])}**"),
        ("buffers of prefork's sockets per connection (`ss -tm`)",
         server if r["server_sockets"] is None else f"{server} ({r['server_sockets']:,} sockets)"),
        ("kernel socket buffers (sockstat TCP `mem`), both ends", f"{fmt_bytes(r['tcp0'])} → "
         f"{fmt_bytes(r['tcp1'])}: {fmt_bytes(r['tcp_per_conn'])} per connection"),
        ("kernel slab per connection, both ends", slab),
        ("worker CPU while they idle", f"{r['worker_cpu_s'] * 1000:.0f} ms in {r['idle_s']:.1f} s "
         f"({r['worker_cpu_s'] / r['idle_s'] * 100:.2f} % of a core); master {r['master_cpu_s'] * 1000:.0f} ms"),
        ("connections the server closed meanwhile", f"{r['closed']:,}"),
        (f"a request on each of {len(r['latencies'])} idle connections chosen at random, one at a time",
         wake),
    ]
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}; "
        f"{version([str(RELEASE / 'prefork'), '--version'])}; {args.workers} worker(s), `respond` route.",
        "",
        "Run: `" + shlex.join(["python3", "bench/scripts/idle_scale.py"] + sys.argv[1:]) + "`",
        "",
        "| measure | value |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines + [""])


def main():
    args = parse_args()
    per_client = check_limits(args)
    workdir = Path(tempfile.mkdtemp(prefix="prefork-idle-scale-"))
    # No origin: the route answers itself (the upstream is never asked).
    prefork = Prefork(workdir, 1, args.workers, fixed=True, capacity=args.connections)
    try:
        prefork.start()
        r = measure(args, prefork, per_client)
    finally:
        prefork.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out = report(args, r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(out)
    print(out)
    if r["closed"] or None in r["latencies"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

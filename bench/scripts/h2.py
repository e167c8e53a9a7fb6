#!/usr/bin/env python3
"""HTTP/2 side by side: prefork, nginx and HAProxy serving h2 (issue 17).

Every proxy runs one worker (HAProxy: nbthread 1), gets the same ECDSA
P-256 certificate as in tls.py and proxies to the same origin over HTTP/1.1
keep-alive, with three listeners: plain HTTP/1.1 (the start-up check), TLS
offering h2 by ALPN (prefork `http2 = true` with `tls = true`, nginx
`listen ... ssl http2`, HAProxy `bind ... ssl crt ... alpn h2,http/1.1`) and
h2c with prior knowledge (prefork `http2 = true`, nginx `listen ... http2`,
HAProxy `bind ... proto h2`). Cells, interleaved by rounds (prefork, nginx,
HAProxy), with h2load from nghttp2-client:

- `h2load -c64 -m10` on `/`, over TLS and over h2c;
- 1 MiB responses, `h2load -c16 -m1` on `/bytes/1048576`, over TLS and h2c;
- idle HTTP/2 connections (`--idle N`, 0 skips), over TLS and over h2c: N
  connections to each proxy that each did one request (a fixed response)
  and then stay idle, held by the small client below (h2load cannot hold
  them); worker RSS per connection and the kernel's socket memory
  (/proc/net/sockstat), as bench.py's idle cell for HTTP/1.1.

CPU per request is the user + system time of the proxy's worker processes
(from /proc) over the requests h2load saw done. The report gives medians
(min–max) of the rounds, prefork's ratios to the better peer and to nginx,
and issue 17's targets, each computed as met or not met. Build first
(`cargo build --release --bin prefork --bin origin`), then:

    python3 bench/scripts/h2.py [--duration 5] [--rounds 3] [--idle 5000]
        [--cells 1,2|all|none] [--targets prefork,nginx,haproxy]
        [--out bench/results/h2.md]
"""

import argparse
import asyncio
import os
import re
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (IDLE_BATCH, RELEASE, Haproxy, IdleRow, Nginx, Origin, Prefork,  # noqa: E402
                   add_side_by_side_args, children_cpu_seconds, commands_list, cpu_model, cpu_times,
                   fmt_range, goals_table, idle_cell, idle_table, idle_targets, make_workdir,
                   run_interleaved, select_cells, version, write_report)
from tls import SNI, make_certificates  # noqa: E402

# (name, transport, path, connections, streams per connection)
CELLS = [
    ("h2 over TLS -c64 -m10 /", "tls", "/", 64, 10),
    ("h2c -c64 -m10 /", "h2c", "/", 64, 10),
    ("h2 over TLS, 1 MiB responses -c16 -m1", "tls", "/bytes/1048576", 16, 1),
    ("h2c, 1 MiB responses -c16 -m1", "h2c", "/bytes/1048576", 16, 1),
]
PEERS = ("nginx", "haproxy")
H2LOAD_MISSING = "h2load not found: install it with `apt-get install nghttp2-client`"


def h2load_command(target, transport, path, conns, streams, duration, threads):
    scheme, port = ("https", target.tls_port) if transport == "tls" else ("http", target.h2c_port)
    return ["h2load", f"-t{threads}", f"-c{conns}", f"-m{streams}", f"-D{duration}",
            f"{scheme}://127.0.0.1:{port}{path}"]


REQUESTS = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", re.M)
STATUSES = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
FINISHED = re.compile(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", re.M)
PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)


def parse_h2load(stdout, stderr):
    """h2load's summary: requests done, succeeded, failed, errored and timed
    out, non-2xx responses, req/s and the protocol it spoke."""
    req, st, fin = REQUESTS.search(stdout), STATUSES.search(stdout), FINISHED.search(stdout)
    if not (req and st and fin):
        raise RuntimeError(f"h2load failed: {stdout}\n{stderr}")
    _, _, done, ok, failed, errored, timeout = map(int, req.groups())
    proto = PROTOCOL.search(stdout)
    return {"done": done, "succeeded": ok, "failed": failed, "errored": errored, "timeout": timeout,
            "non_2xx": sum(map(int, st.groups()[1:])), "rps": float(fin[3]),
            "protocol": proto[1] if proto else "?"}


def run_h2load(target, cell, duration, threads):
    """One h2load run of cell against target, with the CPU per request of
    target's workers (user and kernel) and of h2load."""
    _, transport, path, conns, streams = cell
    cmd = h2load_command(target, transport, path, conns, streams, duration, threads)
    pids = target.worker_pids()
    cpu0, client0 = cpu_times(pids), children_cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu1, client1 = cpu_times(pids), children_cpu_seconds()
    r = parse_h2load(out.stdout, out.stderr)
    per_req = 1e6 / max(r["done"], 1)
    r["user_us"] = (cpu1[0] - cpu0[0]) * per_req
    r["kernel_us"] = (cpu1[1] - cpu0[1]) * per_req
    r["cpu_us"] = r["user_us"] + r["kernel_us"]
    r["client_us"] = (client1 - client0) * per_req
    # A stream that did not end with a 2xx, or a run that did not speak HTTP/2.
    r["errors"] = r["failed"] + r["errored"] + r["timeout"] + r["non_2xx"]
    r["expected_protocol"] = "h2" if transport == "tls" else "h2c"
    if r["protocol"] != r["expected_protocol"]:
        r["errors"] = max(r["errors"], 1)
    r["command"] = shlex.join(cmd[:-1] + [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", cmd[-1])])
    return r


# A minimal HTTP/2 client for the idle cell (the standard library has none):
# the preface, an empty SETTINGS, one GET as a HEADERS frame, then it reads
# frames, acknowledging SETTINGS and PING, until the response's stream ends.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def get_block(tls):
    """HPACK for GET / with :authority bench: static-table entries 2
    (:method GET), 7 or 6 (:scheme https or http) and 4 (:path /), then
    :authority (entry 1's name) as a literal without indexing."""
    return bytes([0x82, 0x87 if tls else 0x86, 0x84, 0x01, 5]) + b"bench"


async def h2_get(reader, writer, tls):
    """GET / as stream 1 on a new connection; fails unless the response's
    body says Hello, World!."""
    writer.write(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                         get_block(tls)))
    body = b""
    while True:
        head = await reader.readexactly(9)
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
        if kind == SETTINGS and not flags & ACK:
            writer.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            writer.write(frame(PING, ACK, 0, payload))
        elif kind in (GOAWAY, RST_STREAM):
            raise RuntimeError(f"HTTP/2 frame {kind} while waiting for the response: {payload!r}")
        elif stream == 1:
            if kind == DATA:
                body += payload
            if kind in (DATA, HEADERS) and flags & END_STREAM:
                break
    if b"Hello, World!" not in body:
        raise RuntimeError(f"unexpected HTTP/2 response body {body!r}")


async def open_h2(port, ctx):
    """A connection that did one request and now idles, h2 over TLS with
    ctx (ALPN h2 required), else h2c with prior knowledge."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=SNI if ctx else None)
    if ctx and writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        raise RuntimeError(f"port {port} did not choose h2 by ALPN")
    await h2_get(reader, writer, ctx is not None)
    return reader, writer


def h2_holder(ctx):
    """IdleRow.hold for HTTP/2 (over TLS with ctx, else h2c)."""
    async def hold(port, count):
        conns = []
        while len(conns) < count:
            batch = [open_h2(port, ctx) for _ in range(min(IDLE_BATCH, count - len(conns)))]
            conns += await asyncio.wait_for(asyncio.gather(*batch), 60)
        return conns
    return hold


def idle_rows(ca):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    return [IdleRow("HTTP/2 over TLS", "fixed response", True, "tls_port", h2_holder(ctx)),
            IdleRow("h2c", "fixed response", True, "h2c_port", h2_holder(None))]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per h2load run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="h2load threads")
    ap.add_argument("--idle", type=int, default=5000, help="idle HTTP/2 connections per row (0: skip)")
    add_side_by_side_args(ap, "h2.md")
    return ap.parse_args()


def main():
    args = parse_args()
    if shutil.which("h2load") is None:
        sys.exit(H2LOAD_MISSING)
    # Stopped (say by timeout), it still stops the proxies it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("h2.py: stopped by SIGTERM"))
    cells = select_cells(args.cells, CELLS)
    workdir = make_workdir("prefork-h2-")
    files, ca = make_certificates(workdir)
    origin = Origin(workdir, 1)
    rows = idle_rows(ca)
    targets = []
    results, memory = {}, {}
    try:
        origin.start()
        targets = [cls(workdir, origin.port, 1, tls=files, http2=True) for cls in (Prefork, Nginx, Haproxy)
                   if cls.name in args.targets]
        results = run_interleaved(cells, args.rounds, targets,
                                  lambda cell, t: run_h2load(t, cell, args.duration, args.threads), show)
        if args.idle:
            memory = idle_cell(workdir, origin.port, args.idle, rows, args.targets, tls=files, http2=True)
    finally:
        for t in targets + [origin]:
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    write_report(args.out, render(args, cells, targets, results, memory, rows))


def show(cell, rnd, t, r):
    print(f"{cell[0]:40} round {rnd} {t.name:8} {r['rps']:>10,.0f} req/s  {r['protocol']}  "
          f"failed {r['failed']} errored {r['errored']} timeout {r['timeout']} non-2xx {r['non_2xx']}  "
          f"cpu {r['cpu_us']:7.1f} us/req ({r['kernel_us']:.1f} kernel)", flush=True)


def median_rps(results, cell, name):
    return statistics.median(r["rps"] for r in results[(cell, name)])


def median_cpu(results, cell, name):
    return statistics.median(r["cpu_us"] for r in results[(cell, name)])


def best_peer(results, cell):
    peers = [p for p in PEERS if (cell, p) in results]
    return max(peers, key=lambda p: median_rps(results, cell, p), default=None)


def cells_table(cells, targets, results):
    lines = ["| cell | proxy | req/s | failed / errored / timed out / non-2xx streams | CPU µs/req "
             "(kernel) | h2load CPU µs/req | req/s ÷ best peer | req/s ÷ nginx | CPU ÷ nginx's |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, *_ in cells:
        peer = best_peer(results, name)
        has_nginx = (name, "nginx") in results
        for t in targets:
            runs = results[(name, t.name)]
            errs = " / ".join(str(sum(r[k] for r in runs)) for k in ("failed", "errored", "timeout",
                                                                     "non_2xx"))
            spoke = sorted({r["protocol"] for r in runs if r["protocol"] != r["expected_protocol"]})
            if spoke:
                errs += f" (spoke {', '.join(spoke)})"
            ratios = ["", "", ""]
            if t.name == "prefork":
                if peer:
                    ratios[0] = f"{median_rps(results, name, t.name) / median_rps(results, name, peer):.2f}× {peer}"
                if has_nginx:
                    ratios[1] = f"{median_rps(results, name, t.name) / median_rps(results, name, 'nginx'):.2f}×"
            if has_nginx and t.name != "nginx":
                ratios[2] = f"{median_cpu(results, name, t.name) / median_cpu(results, name, 'nginx'):.2f}×"
            lines.append(f"| {name} | {t.name} | {fmt_range([r['rps'] for r in runs])} | {errs} | "
                         f"{median_cpu(results, name, t.name):.1f} "
                         f"({statistics.median(r['kernel_us'] for r in runs):.1f}) | "
                         f"{statistics.median(r['client_us'] for r in runs):.1f} | {' | '.join(ratios)} |")
    return lines


def goals(args, cells, results, memory, rows):
    """Issue 17's targets (and issue 19's idle HTTP/2 row): (target,
    measured, met)."""
    out = []
    if "prefork" not in args.targets:
        return out
    for name, *_ in cells:
        peer = best_peer(results, name)
        if peer:
            speed = median_rps(results, name, "prefork") / median_rps(results, name, peer)
            out.append((f"{name}: req/s ≥ 1.0× the better peer", f"{speed:.2f}× {peer}", speed >= 1.0))
        if (name, "nginx") in results:
            cpu = median_cpu(results, name, "prefork") / median_cpu(results, name, "nginx")
            out.append((f"{name}: CPU per request ≤ 0.9× nginx's", f"{cpu:.2f}×", cpu <= 0.9))
    with_errors = [f"{t} in {c}" for (c, t), runs in results.items() if sum(r["errors"] for r in runs)]
    if cells:
        out.append(("no failed, errored or non-2xx stream for any proxy",
                    "; ".join(with_errors) or "none", not with_errors))
    return out + idle_targets(memory, rows)


def render(args, cells, targets, results, memory, rows):
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), shared with h2load and the origin; one "
        f"worker per proxy (HAProxy: nbthread 1), not pinned; h2load -t{args.threads}, "
        f"{args.duration} s per run, {args.rounds} interleaved rounds; medians (min–max). Same "
        "ECDSA P-256 certificate for every proxy; upstream: the origin over HTTP/1.1 keep-alive. "
        "CPU: user + system time of the proxy's worker processes over the requests done.",
        f"Versions: {version([str(RELEASE / 'prefork'), '--version'])}; {version(['nginx', '-v'])}; "
        f"{version(['haproxy', '-v'])}; {version(['h2load', '--version'])}.",
        "",
        "Run: `" + shlex.join(["bench/run.sh", "h2"] + sys.argv[1:]) + "`",
    ]
    if cells:
        lines += [""] + cells_table(cells, targets, results)
    if memory:
        lines += [""] + idle_table(args, memory, "HTTP/2 connections")
    rows = goals(args, cells, results, memory, rows)
    if rows:
        lines += [""] + goals_table("Issue 17's targets (and issue 19's idle HTTP/2 row)", rows)
    lines += commands_list("h2load commands (PORT: the proxy's TLS or h2c port):", results)
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""TLS side by side: prefork, nginx and HAProxy terminating TLS (issue 16).

Every proxy gets the same ECDSA P-256 certificate (made here with openssl,
signed by a CA made here) on a TLS listener beside its plain one, TLS 1.2
and 1.3, and proxies to the same origin as in bench.py (2 workers/threads
each, not pinned). Cells, interleaved by rounds (prefork, nginx, HAProxy):

- keep-alive over TLS: `wrk -c64 https://…/`;
- 1 MiB responses over TLS: `wrk -c16 https://…/bytes/1048576`;
- a new connection per request with a full handshake, TLS 1.3 and TLS 1.2:
  `tlsload --mode full` (bench/src/bin/tlsload.rs), 16 connections in
  flight (`--client-threads`), as many as the 1 MiB cell's wrk: with 2, each
  proxy slept and woke at every step of every handshake, and the cells
  measured the scheduler as much as the proxies;
- a new connection per request that resumes its session, TLS 1.3 and 1.2:
  `tlsload --mode resume`, which keeps the tickets it is given (wrk and
  `openssl s_time -reuse` do not resume TLS 1.3) and reports how many
  connections resumed: with 2 workers, the share a worker other than the
  issuer could resume;
- a new connection per request without TLS, to the plain listener
  (`tlsload --mode plain`, same threads, same request): what a connection
  costs each proxy before any TLS. The report subtracts it from the
  handshake cells' CPU: TLS's own CPU per connection, prefork's against
  nginx's;
- idle TLS connections (`--idle N`, 0 skips): worker RSS per idle
  connection, one worker each, after one request on each.

CPU per request (or per connection) is the proxy's user + system time
(master and workers, from /proc) over what was served. The report ends with
the issue's targets, each computed as met or not met. Build first
(`cargo build --release --bin prefork --bin origin --bin tlsload`), then:

    python3 bench/scripts/tls.py [--duration 6] [--rounds 3] [--idle 2000]
        [--targets prefork,nginx,haproxy] [--out bench/results/tls.md]
"""

import argparse
import os
import asyncio
import json
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (RELEASE, Haproxy, Nginx, Origin, Prefork, TlsFiles, add_side_by_side_args,  # noqa: E402
                   commands_list, cpu_model, cpu_times, fmt_bytes, fmt_range, goals_table,
                   make_workdir, run_interleaved, run_wrk, select_cells, settled_rss, version,
                   write_report)

SNI = "bench.test"
# (name, kind, argument): kind "wrk" takes (path, connections); "tlsload"
# takes (mode, TLS version).
CELLS = [
    ("TLS keep-alive -c64 /", "wrk", ("/", 64)),
    ("TLS 1 MiB responses -c16", "wrk", ("/bytes/1048576", 16)),
    ("TLS 1.3 full handshake per request", "tlsload", ("full", "1.3")),
    ("TLS 1.3 resumed session per request", "tlsload", ("resume", "1.3")),
    ("TLS 1.2 full handshake per request", "tlsload", ("full", "1.2")),
    ("TLS 1.2 resumed session per request", "tlsload", ("resume", "1.2")),
    ("plain HTTP new connection per request", "tlsload", ("plain", None)),
]
PLAIN_CELL = CELLS[-1][0]
PEERS = ("nginx", "haproxy")


def run(cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def make_certificates(workdir):
    """A CA and a leaf for SNI (and 127.0.0.1) signed by it, both ECDSA
    P-256: (TlsFiles of the leaf, the CA's PEM path)."""
    d = Path(workdir) / "tls"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem",
         "-days", "30", "-subj", "/CN=prefork bench CA"])
    run(["openssl", "req", *ec, "-keyout", d / "leaf.key", "-out", d / "leaf.csr",
         "-subj", f"/CN={SNI}"])
    (d / "ext").write_text(f"subjectAltName=DNS:{SNI},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "x509", "-req", "-in", d / "leaf.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "leaf.pem", "-days", "30", "-extfile", d / "ext"])
    combined = d / "combined.pem"
    combined.write_text((d / "leaf.pem").read_text() + (d / "leaf.key").read_text())
    for f in d.iterdir():
        f.chmod(0o644)
    return TlsFiles(d / "leaf.pem", d / "leaf.key", combined), d / "ca.pem"


def run_tlsload(target, ca, mode, tls_version, duration, threads):
    """One tlsload run on target's TLS listener (mode "plain": on its plain
    one), with the proxy's CPU per connection."""
    if mode == "plain":
        cmd = [str(RELEASE / "tlsload"), "--addr", f"127.0.0.1:{target.port}", "--mode", mode]
    else:
        cmd = [str(RELEASE / "tlsload"), "--addr", f"127.0.0.1:{target.tls_port}", "--ca", str(ca),
               "--sni", SNI, "--mode", mode, "--tls", tls_version]
    cmd += ["--threads", str(threads), "--duration", str(duration)]
    pids = target.pids()
    cpu0 = cpu_times(pids)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu1 = cpu_times(pids)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not line.startswith("{"):
        raise RuntimeError(f"tlsload failed: {out.stdout}\n{out.stderr}")
    r = json.loads(line)
    per = 1e6 / max(r["connections"], 1)
    r["rate"] = r["connections_per_s"]
    r["cpu_us"] = (cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1]) * per
    r["kernel_us"] = (cpu1[1] - cpu0[1]) * per
    r["resumed_pct"] = None if mode == "plain" else 100.0 * r["resumed"] / max(r["connections"], 1)
    shown = ["tlsload"] + [{str(ca): "CA.pem", f"127.0.0.1:{target.tls_port}": "127.0.0.1:PORT",
                            f"127.0.0.1:{target.port}": "127.0.0.1:PLAIN_PORT"}.get(a, a)
                           for a in cmd[1:]]
    r["command"] = shlex.join(shown)
    return r


def run_cell(args, cell, target, ca, origin):
    name, kind, arg = cell
    if kind == "wrk":
        path, conns = arg
        r = run_wrk(target, path, conns, [], 0, args.duration, args.threads, origin, tls=True)
        r["rate"], r["cpu_us"], r["kernel_us"] = r["rps"], r["cpu_us_per_req"], r["kernel_us_per_req"]
        r["resumed_pct"] = None
        return r
    mode, tls_version = arg
    return run_tlsload(target, ca, mode, tls_version, args.duration, args.client_threads)


async def hold_idle_tls(port, count, ctx):
    """count TLS keep-alive connections, one request each, 128 at a time."""
    conns = []
    while len(conns) < count:
        batch = []
        for _ in range(min(128, count - len(conns))):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                           server_hostname=SNI)
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            batch.append((reader, writer))
        for reader, _ in batch:
            await asyncio.wait_for(reader.readuntil(b"Hello, World!"), 10)
        conns += batch
    return conns


async def idle_tls_run(target, ca, count, min_wait_s):
    ctx = ssl.create_default_context(cafile=str(ca))
    pids = target.worker_pids()
    for _, w in await hold_idle_tls(target.tls_port, 32, ctx):
        w.close()
    before, _, _ = await settled_rss(pids)
    conns = await hold_idle_tls(target.tls_port, count, ctx)
    answered = time.monotonic()
    after, _, steady = await settled_rss(pids, min_s=min_wait_s)
    waited = time.monotonic() - answered
    closed = sum(r.at_eof() for r, _ in conns)
    for _, w in conns:
        w.close()
    return {"before_kib": before, "after_kib": after, "per_conn_bytes": (after - before) * 1024 / count,
            "waited_s": waited, "settled": steady, "closed": closed}


def idle_tls_cell(args, workdir, origin_port, files, ca):
    """{target name: idle measurement}, one worker each, a fixed response;
    each peer waits at least as long as prefork did."""
    out, min_wait = {}, 0.0
    for cls in [c for c in (Prefork, Nginx, Haproxy) if c.name in args.targets]:
        t = cls(workdir, origin_port, 1, fixed=True, capacity=args.idle, tls=files)
        try:
            t.start()
            m = asyncio.run(idle_tls_run(t, ca, args.idle, min_wait))
        finally:
            t.stop()
        min_wait = max(min_wait, m["waited_s"])
        out[t.name] = m
        print(f"idle TLS {t.name}: {m}", flush=True)
    return out


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--client-threads", type=int, default=16,
                    help="tlsload threads, each with one connection in flight")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle", type=int, default=2000, help="idle TLS connections (0: skip)")
    add_side_by_side_args(ap, "tls.md")
    return ap.parse_args()


def main():
    args = parse_args()
    cells = select_cells(args.cells, CELLS)
    workdir = make_workdir("prefork-tls-")
    files, ca = make_certificates(workdir)
    origin = Origin(workdir, args.workers)
    targets = []
    results, idle = {}, {}
    try:
        origin.start()
        targets = [cls(workdir, origin.port, args.workers, tls=files) for cls in (Prefork, Nginx, Haproxy)
                   if cls.name in args.targets]
        results = run_interleaved(cells, args.rounds, targets,
                                  lambda cell, t: run_cell(args, cell, t, ca, origin), show)
        if args.idle:
            idle = idle_tls_cell(args, workdir, origin.port, files, ca)
    finally:
        for t in targets + [origin]:
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    write_report(args.out, render(args, cells, targets, results, idle))


def show(cell, rnd, t, r):
    resumed = "" if r["resumed_pct"] is None else f"  resumed {r['resumed_pct']:5.1f} %"
    print(f"{cell[0]:38} round {rnd} {t.name:8} {r['rate']:>10,.0f}/s  "
          f"errors {r['errors']:>5}  cpu {r['cpu_us']:7.1f} us{resumed}", flush=True)


def best_peer(results, cell):
    peers = [p for p in PEERS if (cell, p) in results]
    return max(peers, key=lambda p: statistics.median(r["rate"] for r in results[(cell, p)]), default=None)


def tls_own_cpu(cells, results):
    """Lines of the report: each handshake cell's CPU per connection less
    the plain cell's, for prefork and nginx (when both ran)."""
    def median_cpu(name, proxy):
        return statistics.median(r["cpu_us"] for r in results[(name, proxy)])

    if any((PLAIN_CELL, p) not in results for p in ("prefork", "nginx")):
        return []
    plain = {p: median_cpu(PLAIN_CELL, p) for p in ("prefork", "nginx")}
    lines = ["", "TLS's own CPU per connection: each handshake cell's CPU less the plain cell's "
             f"(the same connections without TLS: prefork {plain['prefork']:.1f} µs, nginx "
             f"{plain['nginx']:.1f} µs, {plain['prefork'] / plain['nginx']:.2f}×).", "",
             "| cell | prefork µs | nginx µs | prefork ÷ nginx |", "|---|---|---|---|"]
    for name, kind, _ in cells:
        if kind != "tlsload" or name == PLAIN_CELL:
            continue
        own = {p: median_cpu(name, p) - plain[p] for p in ("prefork", "nginx")}
        lines.append(f"| {name} | {own['prefork']:.1f} | {own['nginx']:.1f} | "
                     f"{own['prefork'] / own['nginx']:.2f}× |")
    return lines


def render(args, cells, targets, results, idle):
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu_model()}); {args.workers} workers/threads "
        f"per proxy, not pinned; {args.duration} s per run, {args.rounds} interleaved rounds; "
        f"medians (min–max). Same ECDSA P-256 certificate, TLS 1.2 and 1.3 on every proxy; "
        f"tlsload offers X25519, P-256 and P-384 (as an OpenSSL 3.0 client does).",
        f"Versions: {version([str(RELEASE / 'prefork'), '--version'])}; {version(['nginx', '-v'])}; "
        f"{version(['haproxy', '-v'])}; {version(['openssl', 'version'])}.",
        "",
        "Run: `" + shlex.join(["python3", "bench/scripts/tls.py"] + sys.argv[1:]) + "`",
        "",
        "| cell | proxy | per second | CPU µs per request or connection (kernel) | resumed | errors "
        "| prefork ÷ best peer |",
        "|---|---|---|---|---|---|---|",
    ]
    goals = []
    for name, kind, _ in cells:
        peer = best_peer(results, name)
        for t in targets:
            runs = results[(name, t.name)]
            rate = [r["rate"] for r in runs]
            cpu = statistics.median(r["cpu_us"] for r in runs)
            kernel = statistics.median(r["kernel_us"] for r in runs)
            resumed = ("–" if runs[0]["resumed_pct"] is None
                       else f"{statistics.median(r['resumed_pct'] for r in runs):.1f} %")
            ratio = ""
            if t.name == "prefork" and peer:
                ratio = f"{statistics.median(rate) / statistics.median(r['rate'] for r in results[(name, peer)]):.2f}× {peer}"
            lines.append(f"| {name} | {t.name} | {fmt_range(rate)} | {cpu:.1f} ({kernel:.1f}) | {resumed} | "
                         f"{sum(r['errors'] for r in runs)} | {ratio} |")
        if name != PLAIN_CELL and "prefork" in args.targets and peer and (name, "nginx") in results:
            pre = results[(name, "prefork")]
            speed = statistics.median(r["rate"] for r in pre) / statistics.median(
                r["rate"] for r in results[(name, peer)])
            cpu = statistics.median(r["cpu_us"] for r in pre) / statistics.median(
                r["cpu_us"] for r in results[(name, "nginx")])
            speed_goal, cpu_goal = (1.0, 0.9) if kind == "wrk" else (1.3, 0.5)
            goals.append((f"{name}: ≥ {speed_goal}× the better peer", f"{speed:.2f}× {peer}", speed >= speed_goal))
            goals.append((f"{name}: CPU ≤ {cpu_goal}× nginx's", f"{cpu:.2f}×", cpu <= cpu_goal))
    lines += tls_own_cpu(cells, results)
    if idle:
        lines += ["", f"Idle TLS connections: {args.idle:,} to one worker (thread) of each proxy, one request "
                  "each (a fixed response), then idle; worker RSS once it stayed within 16 KiB for 12 s, each "
                  "peer waiting at least as long as prefork.", "",
                  "| proxy | worker RSS before → with them | per connection | waited | closed by the server |",
                  "|---|---|---|---|---|"]
        for name, m in idle.items():
            lines.append(f"| {name} | {m['before_kib'] / 1024:.1f} → {m['after_kib'] / 1024:.1f} MiB | "
                         f"**{fmt_bytes(m['per_conn_bytes'])}** | {m['waited_s']:.0f} s"
                         f"{'' if m['settled'] else ' (not settled)'} | {m['closed']:,} |")
        if "prefork" in idle and "nginx" in idle:
            pre, ngx = idle["prefork"]["per_conn_bytes"], idle["nginx"]["per_conn_bytes"]
            goals.append(("idle TLS connection: worker RSS at most nginx's",
                          f"{fmt_bytes(pre)} vs {fmt_bytes(ngx)}", pre <= ngx))
    if goals:
        lines += [""] + goals_table("Issue 16's targets", goals)
    lines += commands_list("Commands (PORT: the proxy's TLS port; PLAIN_PORT: its plain one):", results)
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()

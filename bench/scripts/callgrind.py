#!/usr/bin/env python3
"""Instructions per proxied request in a prefork worker, from callgrind.

Wall-clock numbers are noisy on a shared machine; instruction counts are
not. This runs prefork (one worker) under `valgrind --tool=callgrind` in
front of the may_minihttp origin, drives exactly N requests through it,
stops it with SIGQUIT and reads the worker's instruction count. Each mode
runs with N1 and N2 requests and reports (Ir(N2) - Ir(N1)) / (N2 - N1),
which cancels start-up and shut-down costs.

A request costs more when the worker looks for bytes that have not arrived
yet (one more wake-up), and how often that happens depends on the load
other processes put on the machine: each pair of runs is repeated
(--repeat) and the lowest count is reported (the noise only adds), with the
median and the highest.

Modes:
  keepalive  4 connections, N/4 `GET /` on each (taken in turn)
  close      N connections, one `GET /` with `Connection: close` on each
  h2         one h2c connection (prior knowledge), N `GET /` streams one
             after another (h2load -c1 -m1; needs nghttp2-client)

Requests are sent one at a time, so the counts repeat from run to run.

Builds nothing: expects target/release/prefork and target/release/origin
(`cargo build --release --bin prefork --bin origin`). Loopback only; signals
only the processes it started. The callgrind files of the larger run are
kept (their path is printed) for `callgrind_annotate`.
"""

import argparse
import os
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RELEASE, prefork_toml  # noqa: E402

CLIENTS = 4
# Generous: everything under valgrind runs ~50x slower.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 60.0
IO_TIMEOUT_S = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(sock, pending):
    """Reads one response with a Content-Length body from sock; returns
    (status, bytes left over after it)."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before a response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside a response body")
        rest += chunk
    return status, rest[length:]


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def keepalive_client(port, total):
    """`total` requests over CLIENTS connections, taken in turn."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = [connect(port) for _ in range(CLIENTS)]
    pending = [b""] * CLIENTS
    try:
        for i in range(total):
            c = i % CLIENTS
            socks[c].sendall(request)
            status, pending[c] = read_response(socks[c], pending[c])
            if status != 200:
                raise RuntimeError(f"status {status}")
    finally:
        for sock in socks:
            sock.close()


def close_client(port, total):
    """`total` requests, each on a connection of its own."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    for _ in range(total):
        with connect(port) as sock:
            sock.sendall(request)
            status, _ = read_response(sock, b"")
            if status != 200:
                raise RuntimeError(f"status {status}")


def drive(mode, port, total):
    """Sends exactly `total` requests, one at a time: the worker then sees
    the same sequence of events for every request (concurrent clients
    would let it batch a varying number of events per wake-up, which makes
    the counts vary from run to run)."""
    if mode == "h2":
        h2_client(port, total)
        return
    client = keepalive_client if mode == "keepalive" else close_client
    client(port, total)


def h2_client(port, total):
    """`total` streams on one h2c connection, one at a time."""
    out = subprocess.run(["h2load", "-n", str(total), "-c", "1", "-m", "1", "-t", "1",
                          f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=IO_TIMEOUT_S * 20, check=True)
    if f"{total} succeeded" not in out.stdout:
        raise RuntimeError(f"h2load: not every stream succeeded:\n{out.stdout}")


def wait_answers(port, proc):
    """Waits until GET / answers 200 through prefork (one request, sent
    before the counted ones: it is part of the start-up cost)."""
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prefork exited with {proc.returncode} during start-up")
        try:
            close_client(port, 1)
            return
        except (OSError, RuntimeError):
            time.sleep(0.2)
    raise RuntimeError(f"prefork did not answer on port {port} within {START_DEADLINE_S} s")


def stop(proc, sig):
    if proc.poll() is None:
        proc.send_signal(sig)


def reap(proc, deadline_s):
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_config(workdir, port, origin_port, http2):
    cfg = workdir / "prefork.toml"
    # Root workers (when run as root): valgrind writes each worker's profile
    # into the output directory from the worker itself.
    text = prefork_toml(workdir, "prefork", port, origin_port, 1,
                        settings='user = "root"' if os.geteuid() == 0 else "")
    if http2:
        # The listener's last key: h2c by its preface besides HTTP/1.1 (only
        # in h2 mode: the look at the preface is a cost of its own).
        text = text.replace("[upstreams.o]", "http2 = true\n[upstreams.o]", 1)
    cfg.write_text(text)
    return cfg


def worker_profile(outdir):
    """(path, instructions) of the worker's callgrind file."""
    found = []
    for path in outdir.glob("callgrind.*"):
        cmd = ir = None
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("cmd:"):
                    cmd = line[4:].split()
                elif line.startswith(("summary:", "totals:")):
                    ir = int(line.split()[1])
        if cmd and len(cmd) > 1 and cmd[1] == "worker" and ir is not None:
            found.append((path, ir))
    if len(found) != 1:
        raise RuntimeError(f"expected one worker profile in {outdir}, found {len(found)}")
    return found[0]


def measure(mode, requests, outdir, origin_port):
    """Runs prefork under callgrind for `requests` requests of `mode`;
    returns the worker's (callgrind file, instructions)."""
    outdir.mkdir(parents=True)
    port = free_port()
    cfg = write_config(outdir, port, origin_port, mode == "h2")
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
           f"--callgrind-out-file={outdir}/callgrind.%p",
           str(RELEASE / "prefork"), "-c", str(cfg)]
    log = open(outdir / "valgrind.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=outdir)
    try:
        wait_answers(port, proc)
        started = time.monotonic()
        drive(mode, port, requests)
        took = time.monotonic() - started
        # SIGQUIT: graceful stop; the master waits for its worker.
        stop(proc, signal.SIGQUIT)
        reap(proc, STOP_DEADLINE_S)
    finally:
        stop(proc, signal.SIGKILL)
        reap(proc, STOP_DEADLINE_S)
        log.close()
    path, ir = worker_profile(outdir)
    print(f"  {mode}: {requests} requests in {took:.1f} s, worker {ir:,} Ir", file=sys.stderr)
    return path, ir


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="close,keepalive",
                    help="comma-separated: close, keepalive, h2 (default close,keepalive)")
    ap.add_argument("--n1", type=int, default=2000, help="requests in the smaller run")
    ap.add_argument("--n2", type=int, default=6000, help="requests in the larger run")
    ap.add_argument("--repeat", type=int, default=3, help="pairs of runs per mode")
    ap.add_argument("--out", help="directory for the kept callgrind files "
                    "(default: a new temporary directory)")
    args = ap.parse_args()
    if args.n2 <= args.n1:
        ap.error("--n2 must be larger than --n1")
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in ("close", "keepalive", "h2"):
            ap.error(f"unknown mode {m}")
    for binary in ("prefork", "origin"):
        if not (RELEASE / binary).exists():
            sys.exit(f"{RELEASE / binary} missing: cargo build --release --bin prefork --bin origin")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind missing (apt-get install valgrind)")
    if "h2" in modes and shutil.which("h2load") is None:
        sys.exit("h2load missing (apt-get install nghttp2-client)")

    keep = Path(args.out or tempfile.mkdtemp(prefix="prefork-callgrind-"))
    keep.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="prefork-callgrind-small-"))
    origin_port = free_port()
    origin = subprocess.Popen(
        [str(RELEASE / "origin"), "--addr", f"127.0.0.1:{origin_port}", "--name", "o"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    summary = []
    try:
        for mode in modes:
            per = []
            for i in range(args.repeat):
                _, small = measure(mode, args.n1, scratch / f"{mode}-{i}", origin_port)
                path, large = measure(mode, args.n2, keep / f"{mode}-{i}", origin_port)
                per.append((large - small) / (args.n2 - args.n1))
            summary.append(f"{mode}: {min(per):,.0f} instructions per request "
                           f"(lowest of {len(per)}; median {statistics.median(per):,.0f}, "
                           f"highest {max(per):,.0f}; worker, {args.n2} - {args.n1} requests)")
    finally:
        stop(origin, signal.SIGTERM)
        reap(origin, 10)
        shutil.rmtree(scratch, ignore_errors=True)
    for line in summary:
        print(line)
    print(f"profiles of the {args.n2}-request runs: {keep}/<mode>-<run>/callgrind.<pid> "
          f"(the worker's: grep -l '^cmd:.* worker' ...; then callgrind_annotate --inclusive=yes)")


if __name__ == "__main__":
    main()

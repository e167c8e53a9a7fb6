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
  tls13-full, tls12-full
             N connections over TLS 1.3 (or 1.2), one `GET /` with
             `Connection: close` on each, every one a full handshake
             (Python's ssl, OpenSSL's default client order: with this
             machine's OpenSSL 3.0, X25519, and AES-256-GCM-SHA384 first
             on TLS 1.2; an ECDSA P-256 certificate made here). A TLS 1.3
             client is still given a ticket (prefork sends one to every
             client that can resume); the TLS 1.2 one refuses tickets, so
             its session goes to the session cache instead
  tls13-resume, tls12-resume
             the same, each connection resuming the session of the one
             before (TLS 1.3 and TLS 1.2 tickets); every one must resume

Requests are sent one at a time, so the counts repeat from run to run.

Builds nothing: expects target/release/prefork and target/release/origin
(`cargo build --release --bin prefork --bin origin`). Loopback only; signals
only the processes it started. The callgrind files of the larger run are
kept (their path is printed) for `callgrind_annotate`.
"""

import argparse
import os
import ssl
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
from tls import SNI, make_certificates  # noqa: E402

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


TLS_MODES = {
    "tls13-full": (ssl.TLSVersion.TLSv1_3, False),
    "tls13-resume": (ssl.TLSVersion.TLSv1_3, True),
    "tls12-full": (ssl.TLSVersion.TLSv1_2, False),
    "tls12-resume": (ssl.TLSVersion.TLSv1_2, True),
}
MODES = ("close", "keepalive", "h2", *TLS_MODES)


def tls_client(port, total, mode, ca):
    """`total` requests over TLS, each on a connection of its own: with
    resume, each resumes the session the one before it was given."""
    version, resume = TLS_MODES[mode]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.minimum_version = ctx.maximum_version = version
    if not resume:
        # No TLS 1.2 ticket to make, as a client that never comes back.
        ctx.options |= ssl.OP_NO_TICKET
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    session = None
    for i in range(total):
        with connect(port) as raw, ctx.wrap_socket(raw, server_hostname=SNI,
                                                   session=session) as sock:
            sock.sendall(request)
            status, _ = read_response(sock, b"")
            if status != 200:
                raise RuntimeError(f"status {status}")
            if resume:
                if session is not None and not sock.session_reused:
                    raise RuntimeError(f"{mode}: connection {i} did not resume")
                # After the response: TLS 1.3 tickets come after the handshake.
                session = sock.session


def drive(mode, port, total, ca):
    """Sends exactly `total` requests, one at a time: the worker then sees
    the same sequence of events for every request (concurrent clients
    would let it batch a varying number of events per wake-up, which makes
    the counts vary from run to run)."""
    if mode == "h2":
        h2_client(port, total)
        return
    if mode in TLS_MODES:
        tls_client(port, total, mode, ca)
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


def wait_answers(port, proc, mode, ca):
    """Waits until GET / answers 200 through prefork (one request, sent
    before the counted ones: it is part of the start-up cost)."""
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prefork exited with {proc.returncode} during start-up")
        try:
            if mode in TLS_MODES:
                tls_client(port, 1, mode, ca)
            else:
                close_client(port, 1)
            return
        except (OSError, RuntimeError, ssl.SSLError):
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


def write_config(workdir, port, origin_port, http2, tls):
    """prefork's configuration; with tls (a TlsFiles), its listener speaks
    TLS."""
    cfg = workdir / "prefork.toml"
    # Root workers (when run as root): valgrind writes each worker's profile
    # into the output directory from the worker itself.
    text = prefork_toml(workdir, "prefork", port, origin_port, 1,
                        settings='user = "root"' if os.geteuid() == 0 else "")
    if http2:
        # The listener's last key: h2c by its preface besides HTTP/1.1 (only
        # in h2 mode: the look at the preface is a cost of its own).
        text = text.replace("[upstreams.o]", "http2 = true\n[upstreams.o]", 1)
    if tls:
        text = text.replace("[upstreams.o]", "tls = true\n[upstreams.o]", 1)
        text += f'\n[[certificates]]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
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


def measure(mode, requests, outdir, origin_port, certs):
    """Runs prefork under callgrind for `requests` requests of `mode`;
    returns the worker's (callgrind file, instructions). certs: (TlsFiles,
    the CA's path) for the TLS modes."""
    outdir.mkdir(parents=True)
    port = free_port()
    tls, ca = certs if mode in TLS_MODES else (None, None)
    cfg = write_config(outdir, port, origin_port, mode == "h2", tls)
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
           f"--callgrind-out-file={outdir}/callgrind.%p",
           str(RELEASE / "prefork"), "-c", str(cfg)]
    log = open(outdir / "valgrind.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=outdir)
    try:
        wait_answers(port, proc, mode, ca)
        started = time.monotonic()
        drive(mode, port, requests, ca)
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
                    help=f"comma-separated, of: {', '.join(MODES)} (default close,keepalive)")
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
        if m not in MODES:
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
    certs = make_certificates(scratch) if any(m in TLS_MODES for m in modes) else None
    origin_port = free_port()
    origin = subprocess.Popen(
        [str(RELEASE / "origin"), "--addr", f"127.0.0.1:{origin_port}", "--name", "o"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    summary = []
    try:
        for mode in modes:
            per = []
            for i in range(args.repeat):
                _, small = measure(mode, args.n1, scratch / f"{mode}-{i}", origin_port, certs)
                path, large = measure(mode, args.n2, keep / f"{mode}-{i}", origin_port, certs)
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

#!/usr/bin/env python3
"""What routing costs with many routes: 1 route against 10,000.

prefork runs with one worker and `respond` routes only (no origin), once
with a single route (`h000000.example`) and once with ROUTES routes:
ROUTES/2 exact hosts `h000000.example` ... then ROUTES/2 wildcards
`*.w0000.example` ... Requests go to the first host, the last exact host, a
name under the last wildcard (`x.w4999.example`) and a host no route
matches (`u000000.example`, 404): every request's host has the same length,
so that the rest of the request costs the same in every case. They are
measured three ways:

- instructions per request in the worker, from callgrind (the primary
  evidence: deterministic, where wall-clock numbers on a shared machine are
  not): one prefork per configuration under valgrind, its worker's
  callgrind instrumentation switched on once it answers, its counters
  dumped and zeroed (`callgrind_control`) before each case and after N1 and
  N2 more keep-alive requests (one at a time over 4 connections): (Ir(N2) -
  Ir(N1)) / (N2 - N1). The worker's once-a-second counter report
  (`prefork_worker::process::report::report`) is left out (`--toggle-collect`): how
  often it runs depends on how fast valgrind goes, not on the requests;
- req/s with wrk (-c32, one thread) in rounds: both configurations run
  throughout, and each case runs on the large one right next to its
  reference on the 1-route one (which goes first alternates from round to
  round); the ratio of each pair, then the median over the rounds. The
  reference of a routed case is the 1-route configuration's routed
  request; of the unmatched host, its unmatched one (a 404 is not answered
  as a 200 is). wrk counts each 404 as an error, so "errors" leave those
  out;
- how long `prefork -t` takes to check each configuration, and a hot
  reload (SIGHUP, the last exact route's body changed) until the worker has
  logged that it took the new configuration; with callgrind, also the
  instructions `prefork -t` takes.

Build first (`cargo build --release --bin prefork`), then (about 7 minutes
with the defaults):

    python3 bench/scripts/routing.py [--routes 10000] [--rounds 5] [--duration 5]
        [--n1 2000 --n2 6000] [--repeat 1] [--no-callgrind] [--no-wrk]

PREFORK_RELEASE_DIR=DIR measures another build (say, before a change).
Loopback only; signals only the processes it started. The report also goes
to bench/results/routing.md.
"""

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RELEASE, ROOT, Target, children, free_port, run_wrk  # noqa: E402
from callgrind import connect, reap, stop  # noqa: E402

CLIENTS = 4
# The worker's once-a-second counter report, left out of the counts: after
# a rename it would silently count again (see has_function).
REPORT_FN = "prefork_worker::process::report::report"
WRK_CONNS = 32
# Everything under valgrind runs ~50x slower, and so does reading a large
# configuration.
START_DEADLINE_S = 300.0
STOP_DEADLINE_S = 120.0
RELOAD_DEADLINE_S = 60.0
UNMATCHED = "u000000.example"
# Most routes: the wildcards' numbers have 4 digits.
MAX_ROUTES = 20000


def exact_host(i):
    return f"h{i:06d}.example"


def wildcard(i):
    return f"*.w{i:04d}.example"


def cases(routes):
    """(name, Host) of the requests measured on a configuration of `routes`
    routes."""
    if routes == 1:
        return [("first host", exact_host(0)), ("unmatched host", UNMATCHED)]
    half = routes // 2
    return [("first host", exact_host(0)), ("last exact host", exact_host(half - 1)),
            ("last wildcard host", wildcard(routes - half - 1).replace("*", "x")),
            ("unmatched host", UNMATCHED)]


def reference(case):
    """The 1-route case a case is compared with."""
    return "unmatched host" if case == "unmatched host" else "first host"


def routing_toml(workdir, name, port, routes, last_body="ok"):
    """One worker, `routes` respond routes (see the module's doc), the last
    exact one answering `last_body`."""
    lines = [
        "workers = 1",
        'worker_cpu_affinity = "off"',
        "keepalive_requests = 1000000",
        f'pid_file = "{workdir}/{name}.pid"',
        "[log]",
        f'error_log = "{workdir}/{name}-error.log"',
        'access_log = "off"',
        "[[listen]]",
        f'addr = "127.0.0.1:{port}"',
    ]
    half = max(routes // 2, 1)
    hosts = [exact_host(i) for i in range(half)] + [wildcard(i) for i in range(routes - half)]
    for i, host in enumerate(hosts):
        body = last_body if i == half - 1 else "ok"
        lines += ["[[routes]]", f'host = "{host}"', f'respond = {{ body = "{body}" }}']
    return "\n".join(lines) + "\n"


def get(port, host, sock=None):
    """(status, body) of GET / with `host`, on `sock` if given (kept open)."""
    own = sock is None
    sock = sock or connect(port)

    def more(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside a response")
        return data + chunk

    try:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data = more(data)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body = more(body)
        if len(body) > length:
            raise RuntimeError(f"{len(body) - length} bytes after the response")
        return int(lines[0].split()[1]), body
    finally:
        if own:
            sock.close()


def wait_answers(port, proc, host, deadline_s):
    """Waits until GET / for `host` answers 200."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prefork exited with {proc.returncode} during start-up")
        try:
            if get(port, host)[0] == 200:
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"prefork did not answer on port {port} within {deadline_s} s")


class RoutingPrefork(Target):
    """prefork with a configuration of `routes` routes."""

    def __init__(self, workdir, routes):
        super().__init__(workdir, None, 1)
        self.routes = routes
        self.name = f"prefork-{routes}-routes"
        self.config = self.workdir / f"{self.name}.toml"
        self.error_log = self.workdir / f"{self.name}-error.log"

    def write_config(self, last_body="ok"):
        self.config.write_text(routing_toml(self.workdir, self.name, self.port, self.routes, last_body))

    def command(self):
        self.write_config()
        return [str(RELEASE / "prefork"), "-c", str(self.config)]

    def start(self):
        log = open(self.workdir / f"{self.name}.log", "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        wait_answers(self.port, self.proc, exact_host(0), START_DEADLINE_S)


def wrk_rounds(args, one, many):
    """{case: ([run on `one`, ...], [run on `many`, ...])}, a round's runs at
    the same index. Both configurations run throughout (the idle one
    sleeps); each case runs on `many` right next to its reference on `one`
    (the first of the two alternating from round to round), so that the
    machine's drift hits both runs of a pair alike."""
    results = {}
    try:
        for t in (one, many):
            t.start()
        for rnd in range(args.rounds):
            for case, host in cases(many.routes):
                pair = [(one, reference(case), dict(cases(1))[reference(case)]), (many, case, host)]
                runs = {}
                for t, name, h in pair if rnd % 2 == 0 else pair[::-1]:
                    r = run_wrk(t, "/", WRK_CONNS, [f"Host: {h}"], 0, args.duration, args.threads)
                    if h == UNMATCHED:
                        r["errors"] -= r["status"]
                    runs[t.routes] = r
                    print(f"round {rnd + 1} {t.routes:>6} routes {name:18} {r['rps']:>9,.0f} req/s "
                          f"cpu {r['cpu_us_per_req']:5.1f} us/req  errors {r['errors']}", flush=True)
                ones, manys = results.setdefault(case, ([], []))
                ones.append(runs[one.routes])
                manys.append(runs[many.routes])
    finally:
        for t in (one, many):
            t.stop()
    return results


def callgrind_control(pid, option):
    out = subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, text=True,
                         timeout=STOP_DEADLINE_S)
    if out.returncode != 0:
        raise RuntimeError(f"callgrind_control {option} {pid}: {out.stdout}{out.stderr}")


def dump(pid, workdir):
    """Has callgrind dump (and zero) the counters of process `pid`; returns
    the instructions since the previous dump (or since instrumentation was
    switched on)."""
    before = set(workdir.glob(f"callgrind.{pid}.*"))
    callgrind_control(pid, "--dump")
    new = set(workdir.glob(f"callgrind.{pid}.*")) - before
    if len(new) != 1:
        raise RuntimeError(f"callgrind_control --dump {pid}: {len(new)} new dumps")
    with open(new.pop()) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))


def send(port, host, requests):
    """`requests` keep-alive requests for `host`, one at a time over CLIENTS
    connections taken in turn (opened before, so not counted)."""
    expected = 404 if host == UNMATCHED else 200
    socks = [connect(port) for _ in range(CLIENTS)]
    try:
        for i in range(requests):
            status, body = get(port, host, socks[i % CLIENTS])
            if status != expected or (status == 200 and body != b"ok"):
                raise RuntimeError(f"{host}: status {status}, body {body!r}")
    finally:
        for s in socks:
            s.close()


def callgrind_config(args, workdir, routes):
    """{case: instructions per request} of one prefork with `routes` routes
    under callgrind. It starts uninstrumented (valgrind alone is fast enough
    for a worker reading 10,000 routes to report ready in time); once it
    answers, the worker's instrumentation is switched on and its counters
    are dumped (and zeroed) before each case and after N1 and N2 more
    requests: (Ir(N2) - Ir(N1)) / (N2 - N1)."""
    workdir.mkdir(parents=True)
    port = free_port()
    cfg = workdir / "prefork.toml"
    cfg.write_text(routing_toml(workdir, "prefork", port, routes))
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
           f"--toggle-collect={REPORT_FN}", "--collect-atstart=yes",
           f"--callgrind-out-file={workdir}/callgrind.%p",
           str(RELEASE / "prefork"), "-c", str(cfg)]
    log = open(workdir / "valgrind.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=workdir)
    per_request = {}
    try:
        wait_answers(port, proc, exact_host(0), START_DEADLINE_S)
        (worker,) = children(proc.pid)
        callgrind_control(worker, "--instr=on")
        for case, host in cases(routes):
            dump(worker, workdir)
            counts = []
            for n in (args.n1, args.n2):
                send(port, host, n)
                counts.append(dump(worker, workdir))
            per_request[case] = (counts[1] - counts[0]) / (args.n2 - args.n1)
            print(f"callgrind {routes:>6} routes {case:18} {per_request[case]:>9,.0f} instructions "
                  f"per request ({args.n1}: {counts[0]:,}, {args.n2}: {counts[1]:,})", flush=True)
        # SIGQUIT: graceful stop; the master waits for its worker.
        stop(proc, signal.SIGQUIT)
        reap(proc, STOP_DEADLINE_S)
    finally:
        stop(proc, signal.SIGKILL)
        reap(proc, STOP_DEADLINE_S)
        log.close()
    return per_request


def callgrind_cases(args, workdir):
    """{(routes, case): instructions per request, lowest of --repeat}."""
    per_request = {}
    for routes in (1, args.routes):
        for i in range(args.repeat):
            for case, n in callgrind_config(args, workdir / f"{routes}-{i}", routes).items():
                per_request[(routes, case)] = min(per_request.get((routes, case), n), n)
    return per_request


def check_instructions(target, workdir):
    """Instructions `prefork -t` takes on target's configuration."""
    workdir.mkdir(parents=True)
    target.write_config()
    out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/callgrind.out",
                          str(RELEASE / "prefork"), "-t", "-c", str(target.config)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"prefork -t failed: {out.stdout}{out.stderr}")
    with open(workdir / "callgrind.out") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))


def check_time(target, runs=5):
    """Median seconds `prefork -t` takes on target's configuration."""
    target.write_config()
    took = []
    for _ in range(runs):
        started = time.monotonic()
        out = subprocess.run([str(RELEASE / "prefork"), "-t", "-c", str(target.config)],
                             capture_output=True, text=True, timeout=120)
        took.append(time.monotonic() - started)
        if out.returncode != 0:
            raise RuntimeError(f"prefork -t failed: {out.stdout}{out.stderr}")
    return statistics.median(took)


def reload_times(target, runs=5):
    """Seconds from SIGHUP to the worker's "configuration replaced", each
    reload changing the last exact route's body (checked afterwards)."""
    last = exact_host(max(target.routes // 2, 1) - 1)
    took = []
    target.start()
    try:
        for i in range(runs):
            body = f"v{i}"
            before = target.error_log.read_text().count("configuration replaced")
            target.write_config(last_body=body)
            started = time.monotonic()
            target.proc.send_signal(signal.SIGHUP)
            end = started + RELOAD_DEADLINE_S
            while target.error_log.read_text().count("configuration replaced") <= before:
                if time.monotonic() > end:
                    raise RuntimeError(f"no reload within {RELOAD_DEADLINE_S} s")
                time.sleep(0.002)
            took.append(time.monotonic() - started)
            status, got = get(target.port, last)
            if (status, got) != (200, body.encode()):
                raise RuntimeError(f"after the reload {last} answers {status} {got!r}, not {body}")
    finally:
        target.stop()
    return took


def fmt_rps(runs):
    v = [r["rps"] for r in runs]
    return f"{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})"


def report(args, m):
    """The Markdown report of the measures in `m` (see main)."""
    big = args.routes
    lines = [f"Routing with 1 and {big:,} routes ({big // 2:,} exact hosts, {big - big // 2:,} wildcards), "
             f"one worker, `respond` routes; build: {RELEASE}.", ""]
    ir = m.get("ir")
    if ir:
        lines += [f"Instructions per request in the worker (callgrind, keep-alive, "
                  f"{args.n2} - {args.n1} requests, lowest of {args.repeat}; counter reports left out):", "",
                  f"| request | 1 route | {big:,} routes | ratio |", "|---|---:|---:|---:|"]
        for case, _ in cases(big):
            one = ir.get((1, case))
            mine = ir[(big, case)]
            base = ir[(1, reference(case))]
            lines.append(f"| {case} | {f'{one:,.0f}' if one else '–'} | {mine:,.0f} | {mine / base:.3f} |")
        lines.append("")
    wrk = m.get("wrk")
    if wrk:
        lines += [f"req/s (wrk -t{args.threads} -c{WRK_CONNS} -d{args.duration}s, {args.rounds} rounds, "
                  "median (min–max)), each case next to its reference on 1 route; ratio: median over the "
                  "rounds of the pair's ratio:", "",
                  f"| request | reference on 1 route | {big:,} routes | ratio | CPU µs/req (1 / {big:,}) | errors |",
                  "|---|---:|---:|---:|---:|---:|"]
        for case, _ in cases(big):
            base, mine = wrk[case]
            ratios = [a["rps"] / b["rps"] for a, b in zip(mine, base)]
            cpu_one = statistics.median(r["cpu_us_per_req"] for r in base)
            cpu_big = statistics.median(r["cpu_us_per_req"] for r in mine)
            lines.append(f"| {case} | {reference(case)}: {fmt_rps(base)} | {fmt_rps(mine)} | "
                         f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) | "
                         f"{cpu_one:.1f} / {cpu_big:.1f} | {sum(r['errors'] for r in base + mine)} |")
        lines.append("")
    header = ["configuration", "`prefork -t` (median of 5)"]
    if ir:
        header.append("`prefork -t`, instructions")
    header.append("hot reload, SIGHUP to \"configuration replaced\" (median, min–max of 5)")
    lines += ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for routes in (1, big):
        r = m["reloads"][routes]
        row = [f"{routes:,} route{'s' if routes > 1 else ''}", f"{m['checks'][routes] * 1000:.0f} ms"]
        if ir:
            row.append(f"{m['check_ir'][routes]:,}")
        row.append(f"{statistics.median(r) * 1000:.0f} ms ({min(r) * 1000:.0f}–{max(r) * 1000:.0f})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def has_function(binary, name):
    """Whether `binary` defines the function `name` (demangled), so that
    callgrind's --toggle-collect names one that exists."""
    out = subprocess.run(["nm", "-C", str(binary)], capture_output=True, text=True, check=True).stdout
    return any(line.split(" ", 2)[-1] == name for line in out.splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, default=10000, help="routes in the large configuration")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--n1", type=int, default=2000, help="requests in the smaller callgrind step")
    ap.add_argument("--n2", type=int, default=6000, help="requests in the larger callgrind step")
    ap.add_argument("--repeat", type=int, default=1, help="callgrind runs per configuration")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-wrk", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routing.md"))
    args = ap.parse_args()
    if not 4 <= args.routes <= MAX_ROUTES:
        ap.error(f"--routes must be between 4 and {MAX_ROUTES}")
    if args.n2 <= args.n1:
        ap.error("--n2 must be larger than --n1")
    if not (RELEASE / "prefork").exists():
        sys.exit(f"{RELEASE / 'prefork'} missing: cargo build --release --bin prefork")
    if not args.no_callgrind and shutil.which("valgrind") is None:
        sys.exit("valgrind missing (apt-get install valgrind)")
    if not args.no_callgrind and not has_function(RELEASE / "prefork", REPORT_FN):
        sys.exit(f"{RELEASE / 'prefork'} has no function {REPORT_FN}: update REPORT_FN")
    if not args.no_wrk and shutil.which("wrk") is None:
        sys.exit("wrk missing (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="prefork-routing-"))
    targets = [RoutingPrefork(workdir, routes) for routes in (1, args.routes)]
    m = {}
    try:
        m["checks"] = {t.routes: check_time(t) for t in targets}
        m["reloads"] = {t.routes: reload_times(t) for t in targets}
        for t in targets:
            print(f"{t.routes:>6} routes: prefork -t {m['checks'][t.routes] * 1000:.0f} ms, hot reload "
                  f"{', '.join(f'{s * 1000:.0f}' for s in m['reloads'][t.routes])} ms", flush=True)
        if not args.no_wrk:
            m["wrk"] = wrk_rounds(args, *targets)
        if not args.no_callgrind:
            m["check_ir"] = {t.routes: check_instructions(t, workdir / f"check-{t.routes}") for t in targets}
            m["ir"] = callgrind_cases(args, workdir / "callgrind")
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    text = report(args, m)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    sys.exit(main())

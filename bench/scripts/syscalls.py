#!/usr/bin/env python3
"""System calls, context switches and CPU per request of prefork, nginx and
HAProxy, each configured as bench.py configures them, on loopback.

Two cells: keep-alive (`wrk -t1 -c64 /`) and a new connection per request
(the same with `-H 'Connection: close'`). Each (round, cell, proxy) gets two
wrk runs at full speed:

- a traced run: `perf stat` counts the workers' system calls by type from the
  `syscalls:sys_enter_<name>` tracepoints, the failed ones from
  `syscalls:sys_exit_<name>` filtered on `ret < 0`, and all of them (and the
  EAGAINs) from `raw_syscalls`. Counting is enabled and disabled through
  perf's control pipe exactly around the wrk run. strace is not used: it
  stops the process at every call, which changes how work gets batched.
- an untraced run: voluntary and involuntary context switches (deltas of
  /proc/PID/task/*/status) and user and kernel CPU time (/proc/PID/stat),
  since the tracepoints themselves cost kernel time; and the TCP segments
  sent per request (the `Tcp: OutSegs` delta of /proc/net/snmp: wrk's, the
  proxy's and the origin's sockets together, each loopback segment counted
  once, as it leaves).

Everything is counted on the workers only (prefork's and nginx's worker
processes, HAProxy's one process with its threads); the masters idle. With
--rounds above 1, every number is the median of the rounds. Not in CI. Needs
perf (with the syscalls tracepoints: root or a low perf_event_paranoid),
wrk, nginx, HAProxy and the release binaries
(`cargo build --release --bin prefork --bin origin`), then:

    python3 bench/scripts/syscalls.py [--duration 4] [--rounds 1]
        [--targets prefork,nginx,haproxy] [--workers 2]

Prints a Markdown table and writes it to bench/results/syscalls.md.
"""

import argparse
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (RELEASE, ROOT, Haproxy, Nginx, Origin, Prefork, children,  # noqa: E402
                   cpu_model, cpu_times, parse_wrk, shown, version, wrk_command)

PERF = "perf"
TARGETS = {"prefork": Prefork, "nginx": Nginx, "haproxy": Haproxy}
CELLS = [("keep-alive", []), ("close", ["Connection: close"])]
CONNS = 64
WARMUP_S = 1
EAGAIN = 11
# The system calls a proxy on epoll may make, counted one by one (those this
# kernel has no tracepoint for are left out); the others are counted together
# as "other" (all of raw_syscalls minus these).
SYSCALLS = [
    "read", "readv", "recvfrom", "recvmsg", "recvmmsg",
    "write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile64", "splice",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "poll", "ppoll", "select", "pselect6",
    "io_uring_enter",
    "accept", "accept4", "connect", "socket", "shutdown", "close",
    "setsockopt", "getsockopt", "getsockname", "getpeername", "fcntl", "ioctl",
    "futex", "sched_yield", "clock_gettime", "gettimeofday", "nanosleep", "clock_nanosleep",
    "timer_settime", "timerfd_settime", "rt_sigprocmask", "rt_sigreturn", "kill", "tgkill",
    "brk", "mmap", "munmap", "mremap", "madvise", "mprotect", "openat", "newfstat", "newfstatat",
    "getpid", "gettid", "getrusage", "prctl",
]
CTX = re.compile(r"^(voluntary|nonvoluntary)_ctxt_switches:\s+(\d+)$", re.M)
STOP_DEADLINE_S = 10.0
ACK_DEADLINE_S = 30.0


def check_tools():
    """Fails with what is missing and how to get it."""
    missing = [t for t in ("wrk", "nginx", "haproxy", PERF) if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (bench/run.sh installs wrk, nginx-light and haproxy "
                 "with apt-get; perf comes with linux-perf)")
    for b in ("prefork", "origin"):
        if not (RELEASE / b).exists():
            sys.exit(f"{RELEASE / b} is missing: cargo build --release --bin prefork --bin origin")
    probe = subprocess.run([PERF, "stat", "-e", "syscalls:sys_enter_read", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        sys.exit("perf cannot count the syscalls tracepoints here "
                 f"(`perf stat -e syscalls:sys_enter_read true` failed: {probe.stderr.strip()}); "
                 "run as root, or lower /proc/sys/kernel/perf_event_paranoid and mount tracefs")


def available_syscalls():
    """The names in SYSCALLS this kernel has a syscalls:sys_enter_ tracepoint for."""
    out = subprocess.run([PERF, "list", "syscalls:sys_enter_*"], capture_output=True, text=True,
                         timeout=30).stdout
    have = set(re.findall(r"syscalls:sys_enter_(\w+)", out))
    return [s for s in SYSCALLS if s in have]


def perf_events(syscalls):
    """[(key, perf arguments)] in the order perf stat prints them."""
    events = []
    for s in syscalls:
        events.append((("calls", s), ["-e", f"syscalls:sys_enter_{s}"]))
        events.append((("failed", s), ["-e", f"syscalls:sys_exit_{s}", "--filter", "ret < 0"]))
    events.append((("calls", "*"), ["-e", "raw_syscalls:sys_enter"]))
    events.append((("failed", "*"), ["-e", "raw_syscalls:sys_exit", "--filter", "ret < 0"]))
    events.append((("eagain", "*"), ["-e", "raw_syscalls:sys_exit", "--filter", f"ret == -{EAGAIN}"]))
    return events


def ctx_switches(pids):
    """(voluntary, involuntary) context switches of every thread of pids."""
    vol = invol = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            for kind, n in CTX.findall(status):
                if kind == "voluntary":
                    vol += int(n)
                else:
                    invol += int(n)
    return vol, invol


def wait_workers(target, count, deadline_s=15.0):
    """The worker pids of target once all `count` workers run (HAProxy: its
    one process)."""
    if isinstance(target, Haproxy):
        return [target.proc.pid]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pids = children(target.proc.pid)
        if len(pids) == count:
            return sorted(pids)
        time.sleep(0.05)
    raise RuntimeError(f"{target.name}: {count} workers did not start")


def run_wrk(port, headers, duration):
    cmd = wrk_command(port, "/", CONNS, headers, duration, 1)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    r = parse_wrk(out.stdout, out.stderr)
    if r["errors"]:
        raise RuntimeError(f"wrk reported errors: {r}")
    return r, shown(cmd)


class PerfStat:
    """`perf stat` attached to pids, started disabled; enable() and disable()
    go through its control pipe and return once perf acknowledges."""

    def __init__(self, pids, events, out):
        self.events, self.out, self.stderr = events, out, None
        ctl_r, self.ctl_w = os.pipe()
        self.ack_r, ack_w = os.pipe()
        self.cmd = [PERF, "stat", "-x,", "-o", str(out), "-D", "-1", "--control", f"fd:{ctl_r},{ack_w}"]
        for _, args in events:
            self.cmd += args
        self.cmd += ["-p", ",".join(map(str, pids))]
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, pass_fds=(ctl_r, ack_w))
        finally:
            os.close(ctl_r)
            os.close(ack_w)

    def command(self):
        """The command as the report shows it."""
        cmd = self.cmd[:]
        cmd[cmd.index("-o") + 1] = "OUT"
        cmd[cmd.index("--control") + 1] = "fd:CTL,ACK"
        cmd[-1] = "WORKER_PIDS"
        return shlex.join(cmd)

    def _send(self, what):
        os.write(self.ctl_w, what + b"\n")
        # perf answers "ack\n" once done; if it died, the read ends on EOF
        # (its end of the pipe closes with it).
        ready, _, _ = select.select([self.ack_r], [], [], ACK_DEADLINE_S)
        if not ready or not os.read(self.ack_r, 16).startswith(b"ack"):
            raise RuntimeError(f"perf stat did not acknowledge {what!r}: {self.stop_output()}")

    def enable(self):
        self._send(b"enable")

    def disable(self):
        self._send(b"disable")

    def stop_output(self):
        """Stops perf (SIGINT makes it write its counts) and returns its stderr."""
        if self.stderr is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                _, err = self.proc.communicate(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            self.stderr = err.decode(errors="replace").strip()
        return self.stderr

    def close(self):
        self.stop_output()
        for fd in (self.ctl_w, self.ack_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def counts(self):
        """{key: count}, read from perf's output once it stopped."""
        lines = [l.split(",") for l in self.out.read_text().splitlines()
                 if l and not l.startswith("#") and "," in l]
        if len(lines) != len(self.events):
            raise RuntimeError(f"perf stat printed {len(lines)} counts for {len(self.events)} events")
        counts = {}
        for (key, args), fields in zip(self.events, lines):
            if fields[2] != args[1]:
                raise RuntimeError(f"perf stat printed {fields[2]} where {args[1]} was expected")
            if not fields[0].isdigit():
                raise RuntimeError(f"perf stat could not count {args[1]}: {fields[0]}")
            counts[key] = int(fields[0])
        return counts


def traced_run(target, pids, headers, duration, events, workdir):
    """{("calls"|"failed"|"eagain", syscall or "*"): count per request}, and the run."""
    perf = PerfStat(pids, events, workdir / "perf.csv")
    try:
        perf.enable()
        r, cmd = run_wrk(target.port, headers, duration)
        perf.disable()
    finally:
        perf.close()
    n = max(r["requests"], 1)
    per_req = {k: v / n for k, v in perf.counts().items()}
    return per_req, r, cmd, perf.command()


def tcp_out_segments():
    """Segments sent by every TCP socket of this network namespace."""
    lines = [l.split() for l in Path("/proc/net/snmp").read_text().splitlines() if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def untraced_run(target, pids, headers, duration):
    """Context switches, CPU µs and TCP segments per request, and the run."""
    ctx0, cpu0, segs0 = ctx_switches(pids), cpu_times(pids), tcp_out_segments()
    r, cmd = run_wrk(target.port, headers, duration)
    ctx1, cpu1, segs1 = ctx_switches(pids), cpu_times(pids), tcp_out_segments()
    n = max(r["requests"], 1)
    return {"voluntary": (ctx1[0] - ctx0[0]) / n, "involuntary": (ctx1[1] - ctx0[1]) / n,
            "user_us": (cpu1[0] - cpu0[0]) * 1e6 / n, "kernel_us": (cpu1[1] - cpu0[1]) * 1e6 / n,
            "segments": (segs1 - segs0) / n}, r, cmd


def measure(args, targets, workdir, events):
    """{(proxy, cell): [round result, ...]} and the commands run."""
    results, commands = {}, set()
    pids = {t.name: wait_workers(t, args.workers) for t in targets}
    for t in targets:
        for _, headers in CELLS:
            run_wrk(t.port, headers, WARMUP_S)
    for rnd in range(args.rounds):
        for cell, headers in CELLS:
            for t in targets:
                per_req, traced, cmd, perf_cmd = traced_run(t, pids[t.name], headers, args.duration,
                                                            events, workdir)
                plain, untraced, _ = untraced_run(t, pids[t.name], headers, args.duration)
                if wait_workers(t, args.workers) != pids[t.name]:
                    raise RuntimeError(f"{t.name}'s workers changed during the run")
                commands |= {cmd, perf_cmd}
                res = dict(per_req, **plain, rps_traced=traced["rps"], rps=untraced["rps"])
                results.setdefault((t.name, cell), []).append(res)
                print(f"round {rnd + 1} {cell:10} {t.name:8} {untraced['rps']:>9,.0f} req/s "
                      f"({traced['rps']:,.0f} traced)  syscalls {per_req[('calls', '*')]:.2f}/req  "
                      f"cpu {plain['user_us']:.1f}+{plain['kernel_us']:.1f} us/req", flush=True)
    return results, commands


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def fmt(x):
    if x == 0:
        return "0"
    return "<0.01" if x < 0.005 else f"{x:.2f}"


def with_failed(calls, failed):
    return fmt(calls) + (f" ({fmt(failed)} failed)" if failed else "")


def render(args, names, results, syscalls, commands):
    cols = [(n, c) for c, _ in CELLS for n in names]
    heads = [f"{n} {c}" for n, c in cols]
    lines = [
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}; "
        f"{args.workers} workers/threads per proxy; wrk -t1 -c{CONNS}, {args.duration} s per run, "
        f"{args.rounds} interleaved round(s)" + ("; medians." if args.rounds > 1 else "."),
        f"Versions: {version([str(RELEASE / 'prefork'), '--version'])}; {version(['nginx', '-v'])}; "
        f"{version(['haproxy', '-v'])}; {version(['wrk', '--version'])}; {version([PERF, '--version'])}.",
        "",
        "Run: `" + shlex.join(["python3", "bench/scripts/syscalls.py"] + sys.argv[1:]) + "`",
        "",
        "Per request, in the proxies' workers. System calls: counts from perf's syscalls tracepoints "
        "in a traced run (in parentheses: how many returned an error). Context switches and CPU: "
        "from /proc in a separate untraced run, with the TCP segments sent by every socket (wrk's, "
        "the proxy's, the origin's) from /proc/net/snmp. keep-alive: `wrk -c64 /`; close: the same "
        "with `Connection: close`.",
        "",
        "| per request | " + " | ".join(heads) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    listed_calls = {c: 0.0 for c in cols}
    listed_failed = {c: 0.0 for c in cols}
    for s in syscalls:
        calls = {c: med(results[c], ("calls", s)) for c in cols}
        failed = {c: med(results[c], ("failed", s)) for c in cols}
        for c in cols:
            listed_calls[c] += calls[c]
            listed_failed[c] += failed[c]
        if any(calls.values()):
            row(s, [with_failed(calls[c], failed[c]) for c in cols])
    other = {c: med(results[c], ("calls", "*")) - listed_calls[c] for c in cols}
    other_failed = {c: med(results[c], ("failed", "*")) - listed_failed[c] for c in cols}
    if any(v >= 0.005 for v in other.values()):
        row("other", [with_failed(max(other[c], 0), max(other_failed[c], 0)) for c in cols])
    row("**all system calls**", [
        f"**{fmt(med(results[c], ('calls', '*')))}** ({fmt(med(results[c], ('failed', '*')))} failed, "
        f"{fmt(med(results[c], ('eagain', '*')))} EAGAIN)" for c in cols])
    row("context switches, voluntary", [fmt(med(results[c], "voluntary")) for c in cols])
    row("context switches, involuntary", [fmt(med(results[c], "involuntary")) for c in cols])
    row("TCP segments sent (all sockets)", [fmt(med(results[c], "segments")) for c in cols])
    row("CPU µs, user", [f"{med(results[c], 'user_us'):.2f}" for c in cols])
    row("CPU µs, kernel", [f"{med(results[c], 'kernel_us'):.2f}" for c in cols])
    row("req/s untraced (traced)", [f"{med(results[c], 'rps'):,.0f} ({med(results[c], 'rps_traced'):,.0f})"
                                    for c in cols])
    lines += ["", "Commands (PORT: the proxy's port; WORKER_PIDS: its workers; perf's counting is "
              "enabled through its control pipe only while wrk runs):", ""]
    lines += [f"- `{c}`" for c in sorted(commands)] + [""]
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=1, help="with more than 1, medians")
    ap.add_argument("--targets", default="prefork,nginx,haproxy", help="comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="workers (HAProxy: threads) per proxy")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "syscalls.md"))
    args = ap.parse_args()
    names = args.targets.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown or args.duration < 1 or args.rounds < 1 or args.workers < 1:
        ap.error(f"unknown targets {unknown}" if unknown else "duration, rounds and workers must be ≥ 1")
    return args, names


def main():
    args, names = parse_args()
    check_tools()
    syscalls = available_syscalls()
    events = perf_events(syscalls)
    workdir = Path(tempfile.mkdtemp(prefix="prefork-syscalls-"))
    # nginx's workers run as nobody: they must reach their temp directories.
    workdir.chmod(0o755)
    started = []
    try:
        origin = Origin(workdir, args.workers)
        started.append(origin)
        origin.start()
        targets = []
        for n in names:
            t = TARGETS[n](workdir, origin.port, args.workers)
            started.append(t)
            t.start()
            targets.append(t)
        results, commands = measure(args, targets, workdir, events)
    finally:
        for t in reversed(started):
            t.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = render(args, names, results, syscalls, commands)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    sys.exit(main())

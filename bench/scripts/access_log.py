#!/usr/bin/env python3
"""Throughput with the access log on against off (issue: logging must never
block the event loop; the drop must stay under 10 %).

Runs prefork three ways in front of the may_minihttp origin, interleaved
round by round so the machine's noise hits each alike: access log off,
`combined` to a file, and `json` to a file. Reports the median req/s of each
and the drop against "off". Build first (bench/run.sh does, or
`cargo build --release --bin prefork --bin origin`), then:

    python3 bench/scripts/access_log.py [--duration 10] [--rounds 5] [--conns 64]
"""

import argparse
import statistics
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RELEASE, Origin, Prefork, prefork_toml, run_wrk  # noqa: E402


class LoggingPrefork(Prefork):
    """prefork with `access_log` set to a file in `fmt` (None: off)."""

    def __init__(self, workdir, origin_port, workers, fmt):
        super().__init__(workdir, origin_port, workers)
        self.fmt = fmt
        self.name = f"prefork-log-{fmt or 'off'}"

    def command(self):
        sub = self.workdir / self.name
        sub.mkdir(exist_ok=True)
        access = f'"{sub}/access.log"\naccess_log_format = "{self.fmt}"' if self.fmt else '"off"'
        cfg = sub / "prefork.toml"
        cfg.write_text(prefork_toml(sub, "prefork", self.port, self.origin_port, self.workers,
                                    access_log=access))
        return [str(RELEASE / "prefork"), "-c", str(cfg)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="prefork-logbench-"))
    origin = Origin(workdir, args.workers)
    targets = []
    try:
        origin.start()
        targets = [LoggingPrefork(workdir, origin.port, args.workers, f) for f in (None, "combined", "json")]
        rps = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            for t in targets:
                # One at a time: the two cores go to the prefork under test.
                t.start()
                try:
                    r = run_wrk(t, "/", args.conns, [], 0, args.duration, args.threads)
                finally:
                    t.stop()
                rps[t.name].append(r["rps"])
                print(f"round {rnd + 1} {t.name:22} {r['rps']:>10,.0f} req/s  errors {r['errors']}", flush=True)
        base = statistics.median(rps[targets[0].name])
        print(f"\nwrk -t{args.threads} -c{args.conns} -d{args.duration}s, {args.workers} workers, "
              f"median of {args.rounds} rounds")
        print("| access log | req/s (median) | min-max | vs off |")
        print("| --- | ---: | ---: | ---: |")
        for t in targets:
            v = rps[t.name]
            med = statistics.median(v)
            print(f"| {t.fmt or 'off'} | {med:,.0f} | {min(v):,.0f}-{max(v):,.0f} | "
                  f"{(med / base - 1) * 100:+.1f} % |")
    finally:
        for t in targets:
            t.stop()
        origin.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

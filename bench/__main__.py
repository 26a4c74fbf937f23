"""The benchmarks in one run: `python -m bench` (what `bench/run` calls after installing nginx and
wrk). Prints every figure next to a baseline measured in the same run, with PASS/MISS against
the targets; --markdown writes the table for docs/performance.md. Figures, not tests: a MISS
does not fail the command."""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from bench import costs, polls, scrape, soak
from bench.report import Report
from bench.tools import Steal

SECTIONS = ("scrape", "polls", "payload", "memory", "soak")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return (f"{os.cpu_count()} vCPU ({cpu}), {memory / 2**20:.0f} GiB RAM, {platform.platform()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a scaled-down run (about a minute) that checks the benchmarks work")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    quick = args.quick
    report = Report()
    steal = Steal()
    started = time.monotonic()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="pcx-bench-") as tmp:
        work = Path(tmp)
        if "scrape" in chosen:
            print("== scrape throughput and latency against nginx and the naive peer")
            scrape.run(report, scrape.Settings(rounds=1, seconds=1, naive_seconds=1) if quick
                       else scrape.Settings(), work / "scrape")
        if "polls" in chosen:
            print("== poll scaling, and scrape latency during a poll")
            settings = polls.Settings(tenant_counts=(1, 10), busy_rounds=1, busy_seconds=1,
                                      active_relationships=200) if quick else polls.Settings()
            polls.scaling(report, settings, work / "polls")
            polls.scrape_while_polling(report, settings, work / "busy")
            polls.access_assignments_round(report, settings, work / "access")
        cost_settings = costs.Settings(date_counts=(1, 1000), repeats=1, large_tenants=5, large_dates=100,
                                       large_rounds=1, scrape_seconds=1) if quick else costs.Settings()
        if "payload" in chosen:
            print("== parse and render costs")
            costs.payload_costs(report, cost_settings)
        if "memory" in chosen:
            print("== memory")
            costs.memory(report, cost_settings, work / "memory")
        if "soak" in chosen:
            polls_wanted, scrapes_wanted = (40, 200) if quick else (2000, 50_000)
            print(f"== soak: {polls_wanted} polls, {scrapes_wanted} scrapes")
            soak.report(soak.soak(polls_wanted, scrapes_wanted, random.randrange(2**32)), time.monotonic(),
                        report)
    print(report.table())
    elapsed = time.monotonic() - started
    footer = (f"\n{len(report.rows)} figures, {sum(1 for r in report.rows if r.passed)} PASS, "
              f"{len(report.misses)} MISS; {elapsed / 60:.1f} min; the hypervisor took "
              f"{steal.percent():.1f}% of CPU time from this machine meanwhile (steal)")
    if args.markdown:
        args.markdown.write_text(f"Machine: {machine()}\n\n{report.markdown()}{footer.strip()}\n")
        print(f"wrote {args.markdown}")
    # The last line: what a glance at the end of a run, or `tail -1`, must not miss.
    missed = "; ".join(f"{row.figure} ({row.value}, target {row.target})" for row in report.misses)
    print(footer + (f"\nMISS: {missed}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

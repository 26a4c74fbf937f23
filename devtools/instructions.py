"""Instruction counts of hot work, under valgrind's callgrind: a guard that machine noise cannot hide.

    python -m devtools.instructions            measure and compare with the committed baseline
    python -m devtools.instructions --write    measure and write a new baseline (commit it on its own,
                                               with the figures in the commit message)

Wall-clock figures on a shared 2-core machine wander by 20%; the instructions a run executes do not
(two runs of `import exporter.cli` differ in the seventh digit). What is counted:

- serve_imports: `import exporter.cli`, what `partnercenter-exporter` loads before it reads a config;
- parse_render_10000_dates: one tenant's delegatedAdminStatistics answer with 10,000 dates in each
  list, parsed and rendered (text and gzip), as a first poll does it. Counted as the difference
  between a run that only loads the payload and one that also parses and renders it.

The test tier compares both with the baseline and fails above +5% (tests/test_instructions_e2e.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "fixtures" / "instructions.json"
TOLERANCE = 0.05  # above +5% of the baseline is a regression
DATES = 10_000
TODAY = dt.date(2026, 12, 1)  # fixed: the payload and its rendering are the same in every run

_LOAD = f"""
import datetime as dt, json
from exporter.collectors import dap_statistics
from exporter.exposition import Renderer, gzip_end, gzip_pieces, segments
from exporter.model import Snapshot, SourceView
raw = open({{payload!r}}, "rb").read()
today = dt.date({TODAY.year}, {TODAY.month}, {TODAY.day})
"""
_PARSE_RENDER = """
stats = dap_statistics.parse_statistics(json.loads(raw), today)
snapshot = Snapshot((SourceView("t", "dap_statistics", data=stats, attempted=True, last_poll_success=True,
                                last_success_time=1_800_000_000.0, last_duration=0.2),))
pieces = Renderer().render(snapshot, today=today, thresholds=(30, 60, 90), poll_interval=300)
head, compressor = gzip_pieces(pieces)
body = segments(pieces), head + gzip_end(compressor)
"""
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


class ValgrindMissing(RuntimeError):
    pass


def count(code: str) -> int:
    """Instructions `python -c code` executes under callgrind (hash seed fixed, .pyc files warm)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing("valgrind is not installed: apt-get install valgrind")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    # Once without valgrind, so every .pyc exists: compiling is not what is measured.
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONDONTWRITEBYTECODE": ""},
                   check=True, capture_output=True)
    result = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
                             sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    match = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"callgrind failed (exit {result.returncode}): {result.stderr[-1000:]}")
    return int(match.group(1))


def payload(directory: Path) -> Path:
    """The fixed 10,000-date answer, written as JSON bytes to a file."""
    from exporter.simulator.data import spread_customers, statistics_payload

    path = directory / "statistics.json"
    path.write_bytes(json.dumps(statistics_payload("t", spread_customers(DATES, TODAY), "https://x")).encode())
    return path


@dataclasses.dataclass(frozen=True)
class Counts:
    serve_imports: int
    parse_render_10000_dates: int


def measure(extra_import: str = "", extra_work: str = "") -> Counts:
    """Both counts; `extra_import` and `extra_work` add code to each (to show the guard failing)."""
    with tempfile.TemporaryDirectory(prefix="pcx-instructions-") as tmp:
        load = _LOAD.format(payload=str(payload(Path(tmp)))) + extra_import
        return Counts(serve_imports=count("import exporter.cli\n" + extra_import),
                      parse_render_10000_dates=count(load + _PARSE_RENDER + extra_work) - count(load))


def environment() -> str:
    """What the counts depend on besides the code: the interpreter and the machine's architecture."""
    return f"{platform.python_implementation()} {platform.python_version()} {platform.machine()}"


def regressions(measured: Counts, baseline: dict[str, object]) -> list[str]:
    """One line per count above the baseline by more than TOLERANCE; empty when all are within it."""
    lines = []
    for name, value in dataclasses.asdict(measured).items():
        base = baseline["counts"][name]  # type: ignore[index]
        if value > base * (1 + TOLERANCE):
            lines.append(f"{name}: {value:,} instructions, {value / base - 1:+.1%} over the baseline "
                         f"{base:,} (limit +{TOLERANCE:.0%})")
    return lines


def load_baseline() -> dict[str, object]:
    baseline: dict[str, object] = json.loads(BASELINE.read_text())
    return baseline


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.instructions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the measured counts as the new baseline")
    args = parser.parse_args()
    measured = measure()
    for name, value in dataclasses.asdict(measured).items():
        print(f"{name}: {value:,} instructions")
    if args.write:
        BASELINE.write_text(json.dumps({"environment": environment(), "counts": dataclasses.asdict(measured)},
                                       indent=2) + "\n")
        print(f"wrote {BASELINE.relative_to(ROOT)}")
        return 0
    baseline = load_baseline()
    problems = regressions(measured, baseline)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

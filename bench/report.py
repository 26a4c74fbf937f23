"""The table every benchmark adds its rows to: figure, baseline, ratio, target and PASS/MISS."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    passed: bool | None = None  # None: no target for this figure

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "MISS")


class Report:
    def __init__(self, echo: Callable[[str], None] = print) -> None:
        self.rows: list[Row] = []
        self._echo = echo

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self._echo(f"  {row.figure}: {row.value}" + (f" | baseline {row.baseline}" if row.baseline else "")
                   + (f" | {row.ratio}" if row.ratio else "")
                   + (f" | target {row.target} {row.verdict}" if row.target else ""))

    def table(self) -> str:
        headers = ("figure", "value", "baseline (same run)", "ratio", "target", "")
        widths = [max(len(h), *(len(c) for c in column)) for h, column in zip(
            headers, zip(*[self._cells(r) for r in self.rows], strict=True), strict=True)] \
            if self.rows else [len(h) for h in headers]
        lines, section = [], None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines.append(f"\n== {section}")
                lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
            cells = self._cells(row)
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def markdown(self) -> str:
        lines, section = [], None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines += ["", f"### {section}", "",
                          "| figure | value | baseline (same run) | ratio | target | |",
                          "|---|---|---|---|---|---|"]
            lines.append("| " + " | ".join(self._cells(row)) + " |")
        return "\n".join(lines).lstrip("\n") + "\n"

    @staticmethod
    def _cells(row: Row) -> tuple[str, str, str, str, str, str]:
        return row.figure, row.value, row.baseline, row.ratio, row.target, row.verdict

    @property
    def misses(self) -> list[Row]:
        return [r for r in self.rows if r.passed is False]

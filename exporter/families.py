"""Metric declarations: each family's name, type, help and label names, written once.

A declaration renders its own HELP/TYPE lines and sample lines, byte for byte as
prometheus_client would (the property tests compare the two), and gives the prometheus_client
family for the same samples, which is the reference the fast path is checked and measured against.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from prometheus_client.core import Metric

CACHED = "Cached from the last successful poll."

# One sample: its label values, in the family's label order, and its value.
Row = tuple[Sequence[str], float]


def _go_string(value: float) -> str:
    """A value as prometheus_client writes it (prometheus_client.utils.floatToGoString: Go's float
    formatting); tests/test_properties.py checks the two agree for any float. Written out here so
    that serving needs no `import prometheus_client` (exporter.selfmetrics says why)."""
    number = float(value)
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if math.isnan(number):
        return "NaN"
    text = repr(number)
    point = text.find(".")
    # From 1e7 on, Go writes an exponent where Python's repr still writes every digit.
    if number > 0 and point > 6:
        digits = text[:point] + text[point + 1:]
        mantissa = f"{digits[0]}.{digits[1:]}".rstrip("0").rstrip(".")
        return f"{mantissa}e+{point - 1:02d}"
    return text


@functools.lru_cache(maxsize=65536)
def count_text(value: int) -> str:
    return _go_string(value)


def label_text(value: str) -> str:
    """A label value escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Tenant names, dates and thresholds repeat on every line: each is escaped once.
_label_cached = functools.lru_cache(maxsize=65536)(label_text)


class Family:
    """One metric family's declaration."""

    def __init__(self, name: str, kind: Literal["gauge", "counter"], help: str,
                 labels: Sequence[str] = ()) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = tuple(labels)
        self.sample_name = f"{name}_total" if kind == "counter" else name
        escaped_help = help.replace("\\", "\\\\").replace("\n", "\\n")
        self.header = (f"# HELP {self.sample_name} {escaped_help}\n"
                       f"# TYPE {self.sample_name} {kind}\n").encode()
        self.line: Callable[[Sequence[str], float], str] = _line_writer(self.sample_name, self.labels)

    def __repr__(self) -> str:
        return f"Family({self.name!r})"

    def text(self, rows: Iterable[Row]) -> str:
        """The sample lines of these rows, in order."""
        line = self.line
        return "".join([line(values, value) for values, value in rows])

    def reference(self, rows: Iterable[Row] = ()) -> Metric:
        """The prometheus_client family holding the same samples."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        family: Metric
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=list(self.labels))
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
        for values, value in rows:
            family.add_metric(list(values), value)
        return family


def _line_writer(sample_name: str, labels: tuple[str, ...]) -> Callable[[Sequence[str], float], str]:
    """A function writing one sample line of this family, as fast as a hand-written f-string.

    Rendering is most of a poll's CPU: a general formatter (a loop over the labels, then `%`)
    took 2.5 times as long. So, as dataclasses and namedtuple do, the writer's source is made
    from the declaration. Label names are Prometheus names ([a-zA-Z_][a-zA-Z0-9_]*), so the
    source holds nothing but them, the sample name and indexes.
    """
    if not all(name.isidentifier() for name in (sample_name, *labels)):
        raise ValueError(f"{sample_name}: metric and label names must be Prometheus names")
    # prometheus_client writes labels sorted by name, whatever order they were declared in.
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    pairs = ",".join(f'{labels[i]}="{{esc(l{i})}}"' for i in order)
    # Counts repeat a lot, so their text is remembered; timestamps and durations hardly repeat.
    value = "{cnt(x) if type(x) is int else flt(x)}"
    text = f"{sample_name}{{{{{pairs}}}}} {value}\n" if labels else f"{sample_name} {value}\n"
    unpack = "".join(f"l{i}, " for i in range(len(labels))) or "()"
    source = (f"def line(v, x):\n"
              f"    try:\n"
              f"        {unpack} = v\n"
              f"    except ValueError:\n"
              f"        raise ValueError(f'{sample_name}: {{v!r}} for labels {','.join(labels)}') from None\n"
              f"    return f{text!r}\n")
    namespace: dict[str, Callable[[Sequence[str], float], str]] = {}
    exec(source, {"esc": _label_cached, "cnt": count_text, "flt": _go_string},  # noqa: S102 - see docstring
         namespace)
    return namespace["line"]


class Samples(Protocol):
    """Where a kind's samples go: text lines for /metrics, or rows for the reference."""

    def add(self, family: Family, values: Sequence[str], value: float) -> None: ...

    def extend(self, family: Family, rows: Iterable[Row]) -> None:
        """Many samples of one family at once: the loop runs in C on the fast path."""


class Lines:
    """Samples as text lines per family: the fast path."""

    def __init__(self) -> None:
        self.lines: collections.defaultdict[Family, list[str]] = collections.defaultdict(list)

    def add(self, family: Family, values: Sequence[str], value: float) -> None:
        self.lines[family].append(family.line(values, value))

    def extend(self, family: Family, rows: Iterable[Row]) -> None:
        self.lines[family].extend(itertools.starmap(family.line, rows))


class Rows:
    """Samples as rows per family, for prometheus_client's families."""

    def __init__(self) -> None:
        self.rows: dict[Family, list[Row]] = {}

    def add(self, family: Family, values: Sequence[str], value: float) -> None:
        self.rows.setdefault(family, []).append((values, value))

    def extend(self, family: Family, rows: Iterable[Row]) -> None:
        self.rows.setdefault(family, []).extend(rows)


def bool_label(value: bool) -> str:
    return "true" if value else "false"

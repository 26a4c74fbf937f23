"""What a collector kind hands the pipeline: how to build its client, its data type, its metric
declarations and samples, its status-page figures and its log summary; and what a join of two
kinds hands it. The registry (exporter.collectors) holds them; nothing else names a kind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from exporter.client import ApiClient, TokenSource
from exporter.endpoints import Endpoints
from exporter.families import Family, Samples
from exporter.model import SourceView, ThresholdBuckets

D = TypeVar("D")


@dataclass(frozen=True)
class Context:
    """What samples and figures may depend on besides the data: the date and the thresholds."""

    today: dt.date
    buckets: ThresholdBuckets

    @property
    def thresholds(self) -> tuple[int, ...]:
        return self.buckets.thresholds


@dataclass(frozen=True)
class SourceSettings:
    """What a kind's client is built from, for one tenant."""

    tenant: str
    http: httpx.Client
    endpoints: Endpoints
    tokens: TokenSource  # the tenant's sign-in, for Partner Center
    graph_tokens: TokenSource  # for Microsoft Graph: the tenant's sign-in or graph_auth


@dataclass(frozen=True)
class Kind(Generic[D]):
    """One upstream kind: `collectors: [<name>]` in the config."""

    name: str
    build: Callable[[SourceSettings], ApiClient[D]]
    families: tuple[Family, ...]  # in exposition order
    samples: Callable[[Samples, str, D, Context], None]  # (out, tenant, data, context)
    figures: Callable[[D, Context], str]  # the status page's figures cell, HTML-safe
    summary: Callable[[D], Mapping[str, int]]  # the headline figure of a poll, for the log
    uses_graph: bool = False  # read with graph_tokens, so graph_auth applies to it
    # Kinds it cannot run without, each with why (config errors quote it).
    requires: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Join:
    """Metrics that need several kinds' data of one tenant.

    samples and figures get the data of `inputs`, then of `optional`, then the context. An optional
    kind the tenant does not run comes as None; nothing is written until every input, and every
    optional kind the tenant runs, has data, so a join never changes its meaning while a kind's
    first poll is still under way.
    """

    name: str
    inputs: tuple[str, ...]
    families: tuple[Family, ...]
    samples: Callable[..., None]  # (out, tenant, *data, ctx)
    # Appended to the first input's status-page figures: (*data, ctx).
    figures: Callable[..., str] = lambda *data: ""
    optional: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*self.inputs, *self.optional)

    def data(self, views: Sequence[SourceView]) -> list[Any] | None:
        """The data this join reads from one tenant's views, in order; None while any is missing."""
        ran = {view.collector: view.data for view in views}
        values = [ran.get(name) for name in self.kinds]
        missing = [name for name, value in zip(self.kinds, values, strict=True)
                   if value is None and (name in self.inputs or name in ran)]
        return None if missing else values


class Registry:
    """The collector kinds in their exposition order, and the joins between them."""

    def __init__(self, kinds: Iterable[Kind[Any]], joins: Iterable[Join] = ()) -> None:
        self._kinds: dict[str, Kind[Any]] = {}
        self._joins: list[Join] = []
        for kind in kinds:
            self.register(kind)
        for join in joins:
            self.register_join(join)

    def register(self, kind: Kind[Any]) -> None:
        """Add a kind after the others (a test's toy kind, or a new module's one line)."""
        if kind.name in self._kinds:
            raise ValueError(f"collector kind {kind.name} is registered already")
        self._kinds[kind.name] = kind

    def register_join(self, join: Join) -> None:
        unknown = [name for name in join.kinds if name not in self._kinds]
        if unknown:
            raise ValueError(f"join {join.name} needs unregistered kinds {unknown}")
        self._joins.append(join)

    def unregister(self, name: str) -> None:
        self._kinds.pop(name)
        self._joins = [join for join in self._joins if name not in join.kinds]

    def __getitem__(self, name: str) -> Kind[Any]:
        return self._kinds[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def order(self, name: str) -> int:
        """Where a kind stands: on /metrics, the status page and in a tenant's config."""
        names = self.names
        return names.index(name) if name in names else len(names)

    def families(self) -> tuple[Family, ...]:
        """Every kind's families, then every join's, in exposition order."""
        return (*(f for kind in self._kinds.values() for f in kind.families),
                *(f for join in self._joins for f in join.families))

    def samples(self, out: Samples, tenant: str, views: Sequence[SourceView], ctx: Context) -> None:
        """One tenant's samples of every kind and join that has data."""
        data = {view.collector: view.data for view in views if view.data is not None}
        for name, value in data.items():
            kind = self._kinds.get(name)
            if kind is not None:
                kind.samples(out, tenant, value, ctx)
        for join in self._joins:
            values = join.data(views)
            if values is not None:
                join.samples(out, tenant, *values, ctx)

    def figures(self, view: SourceView, views: Sequence[SourceView], ctx: Context) -> str:
        """The status page's figures for one view; joins add theirs to their first input's."""
        kind = self._kinds.get(view.collector)
        if view.data is None or kind is None:
            return "-"
        text = kind.figures(view.data, ctx)
        for join in self._joins:
            values = join.data(views) if join.inputs[0] == view.collector else None
            if values is not None:
                text += join.figures(*values, ctx)
        return text

    def summary(self, collector: str, data: object) -> Mapping[str, int]:
        kind = self._kinds.get(collector)
        return {} if kind is None else kind.summary(data)

"""Collector kinds come from the registry alone: a kind registered by a test runs end to end."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from exporter.app import App
from exporter.client import ApiClient
from exporter.collectors import REGISTRY, Context, Kind
from exporter.config import ConfigError, load_config
from exporter.families import CACHED, Family, Samples
from exporter.http.routes import landing_page

TOY = "toy_widgets"
WIDGETS = Family("partnercenter_toy_widgets", "gauge", f"Widgets of the tenant. {CACHED}", ["tenant"])


@dataclass(frozen=True)
class Widgets:
    count: int
    skipped_entries: int = 0


class WidgetsClient(ApiClient[Widgets]):
    collector = TOY
    resource = "widgets"

    def fetch(self) -> Widgets:
        return Widgets(7)


def _samples(out: Samples, tenant: str, data: Widgets, ctx: Context) -> None:
    out.add(WIDGETS, (tenant,), data.count)


def _summary(data: Widgets) -> Mapping[str, int]:
    return {"widgets": data.count}


TOY_KIND: Kind[Widgets] = Kind(
    name=TOY,
    build=lambda s: WidgetsClient(s.tenant, s.http, "https://widgets.invalid/", s.tokens),
    families=(WIDGETS,), samples=_samples, figures=lambda data, ctx: f"{data.count} widgets",
    summary=_summary)


@pytest.fixture
def toy() -> Iterator[Kind[Widgets]]:
    REGISTRY.register(TOY_KIND)
    try:
        yield TOY_KIND
    finally:
        REGISTRY.unregister(TOY)


def toy_config(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tenants": [{
        "name": "contoso", "tenant_id": "00000000-0000-0000-0000-0000000000aa",
        "client_id": "11111111-1111-1111-1111-111111111111", "collectors": [TOY],
        "auth": {"method": "client_credentials", "client_secret_file": str(secret)}}]}))
    return path


def test_an_unregistered_kind_is_an_unknown_collector(tmp_path: Path) -> None:
    """Without the registry line the config refuses the kind, so the next test's pass is the line's doing."""
    with pytest.raises(ConfigError, match=f"unknown collector '{TOY}'"):
        load_config(toy_config(tmp_path))


def test_a_kind_registered_by_a_test_is_polled_rendered_and_shown(
        toy: Kind[Widgets], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One registry call makes a kind configurable, polled, exported, summarised and shown."""
    caplog.set_level("INFO")
    app = App(load_config(toy_config(tmp_path)), config_path="c.yml", listen_address=None)
    snapshot = app.poll_once()
    body = app.publisher.current.body.decode()
    assert 'partnercenter_toy_widgets{tenant="contoso"} 7.0' in body
    assert f'partnercenter_exporter_poll_success{{collector="{TOY}",tenant="contoso"}} 1.0' in body
    assert body.index("# HELP partnercenter_toy_widgets") < body.index("# HELP partnercenter_exporter_")
    assert any(getattr(r, "widgets", None) == 7 for r in caplog.records)
    assert b"7 widgets" in landing_page(snapshot, now=0, thresholds=(90,))


def test_a_kind_is_registered_once(toy: Kind[Widgets]) -> None:
    """Registering a name twice is refused rather than silently replacing a kind."""
    with pytest.raises(ValueError, match="registered already"):
        REGISTRY.register(toy)


EXPORTER = Path(__file__).resolve().parent.parent / "exporter"
METRIC_NAME = re.compile(r"partnercenter_[a-z_]+")


def test_no_metric_name_is_spelled_twice() -> None:
    """Each metric name appears in one string literal in exporter/: its declaration."""
    seen: dict[str, list[str]] = {}
    for path in sorted(EXPORTER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in METRIC_NAME.findall(node.value):
                    seen.setdefault(name, []).append(f"{path.name}:{node.lineno}")
    assert len(seen) >= 27  # every family was found
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}

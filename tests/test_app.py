"""One config's pipeline: what a reload keeps, and the loop that applies SIGHUP's reloads."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.app import App, Controls, load_configs, run_until
from exporter.auth import TokenProvider
from exporter.config import Config, ConfigError, parse_config
from tests.conftest import CLIENT_ID, TENANT_ID

RAW: dict[str, Any] = {"tenants": [{"name": "contoso", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
                                    "auth": {"token_cache_file": "cache.json"}}]}


def _config(tmp_path: Path, change: Callable[[dict[str, Any]], None] = lambda raw: None) -> Config:
    raw = copy.deepcopy(RAW)
    change(raw)
    return parse_config(raw, environ={}, base_dir=tmp_path)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    built = App(_config(tmp_path), config_path=str(tmp_path / "config.yml"), listen_address=None)
    yield built
    built.stop()


def test_a_reload_that_rebuilds_a_tenant_carries_its_request_counts_over(app: App, tmp_path: Path) -> None:
    """A tenant rebuilt by a reload keeps its API request counts: they are counters, and a drop to 0
    would read as a counter reset to rate() and lose the requests made before the reload."""
    (before,) = app.sources
    before.requests_by_code.update({"200": 7, "429": 2})
    app.reload(_config(tmp_path, lambda raw: raw.update(request_timeout="10s")))
    (after,) = app.sources
    assert after is not before  # rebuilt: the shared HTTP settings changed
    assert after.requests_by_code == {"200": 7, "429": 2}


def test_sign_ins_at_start_run_two_per_poll_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With poll_concurrency 1, two tenants sign in at the same time beside the first round."""
    met = threading.Barrier(2, timeout=5)
    results: list[str] = []

    def sign_in_ahead(self: TokenProvider, *, scope: str | None = None) -> None:
        try:
            met.wait()
            results.append("met")
        except threading.BrokenBarrierError:
            results.append("alone")

    monkeypatch.setattr(TokenProvider, "sign_in_ahead", sign_in_ahead)

    def two_tenants(raw: dict[str, Any]) -> None:
        raw["poll_concurrency"] = 1
        other = copy.deepcopy(raw["tenants"][0])
        other.update(name="fabrikam", tenant_id=TENANT_ID.replace("0", "1"),
                     auth={"token_cache_file": "other.json"})
        raw["tenants"].append(other)

    built = App(_config(tmp_path, two_tenants), config_path=str(tmp_path / "config.yml"), listen_address=None)
    try:
        built.sign_in_ahead()
        deadline = time.monotonic() + 10
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        built.stop()
    assert results == ["met", "met"]


class _Recorder:
    """Stands in for the App that run_until drives: records reloads and failed loads."""

    retiring = False

    def __init__(self, controls: Controls, after: int) -> None:
        self.calls: list[str] = []
        self._controls, self._after = controls, after
        self.publisher = self

    def tidy(self) -> None:
        pass

    def loaded(self, config: str, ok: bool) -> None:
        self._record(f"loaded {config} {ok}")

    def reload(self, config: Config) -> None:
        self._record(f"reload {len(config.tenants)} tenant(s)")

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if len(self.calls) >= self._after:
            self._controls.stop()


def _loads(tmp_path: Path, *answers: Config | Exception) -> Callable[[], Config]:
    pending = list(answers)

    def load() -> Config:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return load


def test_run_until_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(tmp_path: Path) -> None:
    """On each reload signal run_until loads the config: a bad one is recorded as a failed load
    and not applied; the next good one is applied."""
    controls = Controls()
    recorder = _Recorder(controls, after=2)
    load = _loads(tmp_path, ConfigError(["tenants: required"]), _config(tmp_path))

    def signal_twice() -> None:
        controls.reload()
        while not recorder.calls:
            time.sleep(0.05)
        controls.reload()

    threading.Thread(target=signal_twice, daemon=True).start()
    run_until(recorder, controls, load)  # type: ignore[arg-type]
    assert recorder.calls == ["loaded config False", "reload 1 tenant(s)"]


def test_run_until_loads_nothing_without_a_reload_signal(tmp_path: Path) -> None:
    """Without SIGHUP run_until only tidies until stopped: no load, no reload."""
    controls = Controls()
    recorder = _Recorder(controls, after=1)
    threading.Timer(0.5, controls.stop).start()
    run_until(recorder, controls, _loads(tmp_path))  # type: ignore[arg-type]
    assert recorder.calls == []


def _config_with_a_shared_secret(tmp_path: Path) -> tuple[Path, Path]:
    """A config file whose client secret file others can read, and that file."""
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o644)
    (tmp_path / "c.yaml").write_text(
        f"tenants:\n- name: contoso\n  tenant_id: {TENANT_ID}\n  client_id: {CLIENT_ID}\n"
        "  auth: {method: client_credentials, client_secret_file: client-secret}\n")
    return tmp_path / "c.yaml", secret


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.warning for r in caplog.records if r.getMessage() == "config warning"]  # type: ignore[attr-defined]


def test_loading_the_configs_logs_each_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A config that loads with a warning (a secret file others can read) says so in the log at
    start, --config.check and login, which all load through load_configs."""
    config, secret = _config_with_a_shared_secret(tmp_path)
    with caplog.at_level("WARNING", logger="exporter"):
        load_configs(str(config), None)
    assert _warnings(caplog) == [f"tenants[0].auth.client_secret_file: {secret} is readable by others "
                                 f"(mode 0644); it holds a secret: run chmod 0400 {secret}"]


def test_a_reload_logs_the_new_configs_warning_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP's reload, loading as serve() wires it (through load_configs), says a reloaded
    config's warning once, as the start does."""
    config, _ = _config_with_a_shared_secret(tmp_path)
    controls = Controls()
    recorder = _Recorder(controls, after=1)
    controls.reload()
    with caplog.at_level("WARNING", logger="exporter"):
        run_until(recorder, controls, lambda: load_configs(str(config), None)[0])  # type: ignore[arg-type]
    assert len(_warnings(caplog)) == 1
    assert recorder.calls == ["reload 1 tenant(s)"]

"""The instruction-count guard: serve's start-up imports and parse + render of a fixed 10,000-date
payload, counted by callgrind, against the baseline committed in tests/fixtures/instructions.json."""

from __future__ import annotations

import pytest

from devtools import instructions
from tests.conftest import require_binary

pytestmark = pytest.mark.e2e


@pytest.fixture
def baseline() -> dict[str, object]:
    require_binary("valgrind")
    baseline = instructions.load_baseline()
    assert baseline["environment"] == instructions.environment(), (
        f"the baseline was counted on {baseline['environment']}, this is {instructions.environment()}: "
        "run `python -m devtools.instructions --write` here and commit the baseline on its own")
    return baseline


def test_instruction_counts_stay_within_5_percent_of_the_baseline(baseline: dict[str, object]) -> None:
    """Neither count is more than 5% above the committed baseline."""
    assert instructions.regressions(instructions.measure(), baseline) == []


def test_the_guard_fails_on_a_deliberate_regression(baseline: dict[str, object]) -> None:
    """A heavy import at start-up and a second json.loads of the payload each push their count past
    +5%, and the guard names both."""
    slower = instructions.measure(extra_import="import cryptography.x509\n", extra_work="json.loads(raw)\n")
    found = instructions.regressions(slower, baseline)
    assert [line.split(":")[0] for line in found] == ["serve_imports", "parse_render_10000_dates"]

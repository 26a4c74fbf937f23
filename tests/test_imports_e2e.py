"""What `serve` imports: a config pays only for what it uses (certificates, the vault, the demo's
simulator and basic auth are imported by the configs and commands that use them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.simulator import Simulator
from tests.conftest import free_port
from tests.helpers.e2e import ROOT, write_config

pytestmark = pytest.mark.e2e

# Every module of this package, and every other distribution's top-level package, that `serve`
# imports for one refresh_token tenant once it has polled and answered scrapes. The standard
# library is left out: its modules differ between Python versions.
SERVE_IMPORTS = ROOT / "tests" / "fixtures" / "serve-imports.txt"


def _imported(tmp_path: Path, config: Path) -> set[str]:
    out = tmp_path / "modules.txt"
    result = subprocess.run([sys.executable, "-m", "tests.helpers.imports", str(out), str(free_port()),
                             "--config.file", str(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    # urllib3 probes for backports.zstd: the namespace exists where another distribution made it.
    left_out = {*sys.stdlib_module_names, "tests", "cython_runtime", "backports"}
    return {name if name.startswith("exporter") else name.split(".")[0]
            for name in out.read_text().split()
            if name.split(".")[0] not in left_out and not name.startswith("_")}


def test_serve_imports_only_what_a_refresh_token_config_needs(sim: Simulator, tmp_path: Path) -> None:
    """`serve` with one refresh_token tenant imports exactly the pinned modules: a new import (a
    heavy library, the simulator, cryptography) fails here with its name."""
    imported = _imported(tmp_path, write_config(sim, tmp_path))
    expected = {line for line in SERVE_IMPORTS.read_text().splitlines() if line and not line.startswith("#")}
    assert "exporter.collectors.dap_statistics" in imported  # it did poll
    assert sorted(imported - expected) == [], (
        "serve imports more than before; import it where it is used, or add it to "
        f"{SERVE_IMPORTS.relative_to(ROOT)} with its RSS cost in the commit message")
    assert sorted(expected - imported) == [], f"no longer imported: update {SERVE_IMPORTS.relative_to(ROOT)}"

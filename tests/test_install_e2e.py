"""The install paths a newcomer follows, run as the documents write them, on a clean clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.helpers.docs import shell_blocks
from tests.helpers.e2e import http_get, installed_exporter_runs, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SYSTEMD_GUIDE = (ROOT / "deploy" / "systemd" / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def _commands(markdown: str, after: str) -> list[str]:
    """The commands of the first shell block after the text `after`, without their comments."""
    [block, *_] = shell_blocks(markdown[markdown.index(after):])
    return [line.split(" #")[0].strip() for line in block.splitlines() if line.strip()]


def _clone(tmp_path: Path) -> Path:
    clone = tmp_path / "partnercenter-exporter"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    return clone


def _pipx_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}


def test_readme_install_from_a_checkout_works(tmp_path: Path) -> None:
    """The README's install command, `pipx install .` in a clean clone, gives a working
    `partnercenter-exporter` (it prints its version and polls the demo once)."""
    require_binary("pipx")
    [install, *_] = _commands(README, "## Install and run")
    assert install == "pipx install ."
    clone = _clone(tmp_path)
    result = subprocess.run(install.split(), cwd=clone, env=_pipx_env(tmp_path), capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    installed_exporter_runs(tmp_path / "bin" / "partnercenter-exporter", tmp_path)


def test_systemd_guide_builds_a_wheel_and_installs_it_with_pipx(tmp_path: Path) -> None:
    """The systemd guide's step 1 (build the wheel in the checkout, pipx-install it as root), run
    from deploy/systemd of a clean clone with PIPX_HOME and PIPX_BIN_DIR in a temporary directory
    instead of /opt and /usr/local, installs an exporter that shows the checkout's commit."""
    require_binary("pipx")
    commands = _commands(SYSTEMD_GUIDE, "1. **The exporter**")
    build, install = commands[1], commands[2]
    assert install.startswith("sudo PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install ")
    clone = _clone(tmp_path)
    here = clone / "deploy" / "systemd"
    built = subprocess.run(["bash", "-c", build], cwd=here, capture_output=True, text=True, timeout=900,
                           check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    as_root = "sudo PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin "
    installed = subprocess.run(["bash", "-c", install.removeprefix(as_root)], cwd=here,
                               env=_pipx_env(tmp_path), capture_output=True, text=True, timeout=900,
                               check=False)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    exe = tmp_path / "bin" / "partnercenter-exporter"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    shown, _ = installed_exporter_runs(exe, tmp_path)
    assert commit in shown, shown


def test_readme_simulator_walkthrough_works(tmp_path: Path) -> None:
    """'Try it with the simulator', step by step: the simulator writes its config, `--once` prints
    metrics, `login` signs in with the device code flow and, with the README's curl standing in for
    the browser, the authorization code flow; the exporter then serves /metrics."""
    require_binary("curl")
    workdir = tmp_path / "pcsim"

    def local(command: str) -> str:
        return command.replace(".venv/bin/", f"{VENV_BIN}/").replace("/tmp/pcsim", str(workdir))

    [simulator] = _commands(README, "### Try it with the simulator")
    sim = subprocess.Popen(local(simulator).split(), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        printed = "".join(sim.stdout.readline() for _ in range(4))  # type: ignore[union-attr]
        assert f"config:    {workdir}/config.yaml" in printed
        once, device, auth_code, serve = _commands(README, "Then, in a second terminal:")
        shown = subprocess.run(["bash", "-o", "pipefail", "-c", local(once)], capture_output=True, text=True,
                               timeout=120, check=False)
        assert shown.returncode in (0, 141), shown.stderr  # 141: head closed the pipe, as it does
        assert "partnercenter_dap_customers{" in shown.stdout
        signed_in = subprocess.run(local(device).split(), capture_output=True, text=True, timeout=60,
                                   check=False)
        assert signed_in.returncode == 0, signed_in.stderr
        assert "Signed in as admin@" in signed_in.stdout + signed_in.stderr

        login = subprocess.Popen(local(auth_code).split(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        while not any("/oauth2/v2.0/authorize?" in line for line in lines):
            lines.append(login.stdout.readline())  # type: ignore[union-attr]
            assert lines[-1], "".join(lines)
        url = re.search(r"https://\S+", lines[-1]).group(0)  # type: ignore[union-attr]
        [curl] = _commands(README, "so ask `curl` where it goes")
        landed = subprocess.run(["bash", "-c", local(curl).replace("THE-URL-LOGIN-PRINTED", url)],
                                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        assert landed.startswith("http://localhost/?code=")
        out, _ = login.communicate(landed + "\n", timeout=60)
        assert login.returncode == 0, out
        assert "Signed in as admin@" in out

        serving = subprocess.Popen([*local(serve).split(), "--web.listen-address=127.0.0.1:0"],
                                   stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "listening" not in line:
                line = serving.stderr.readline()  # type: ignore[union-attr]
                assert line, "the exporter ended before it listened"
            address = re.search(r"127\.0\.0\.1:\d+", line).group(0)  # type: ignore[union-attr]

            def metrics() -> bytes | None:
                status, body = http_get(f"http://{address}/metrics")
                return body if status == 200 and b"partnercenter_dap_customers{" in body else None

            wait_for(metrics, 30, "metrics from the simulator")
        finally:
            serving.terminate()
            serving.communicate(timeout=10)
    finally:
        sim.terminate()
        sim.communicate(timeout=10)

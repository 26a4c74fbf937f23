"""deploy/systemd: units that systemd's own tools accept, hardened, with flags the exporter knows."""

from __future__ import annotations

import ctypes
import errno
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.helpers.e2e import ROOT, exporter_command

pytestmark = pytest.mark.e2e

UNITS = ROOT / "deploy" / "systemd"
SERVICE = UNITS / "partnercenter-exporter.service"
ENTRY_POINT = "/usr/local/bin/partnercenter-exporter"


def installed_copy(tmp_path: Path, *, drop_in: bool = False) -> Path:
    """The units in a directory of their own, with ExecStart pointing at this checkout's entry point:
    `systemd-analyze verify` insists that the binary exists, and this machine has no pipx install."""
    binary = Path(sys.executable).parent / "partnercenter-exporter"
    assert binary.exists()
    service = tmp_path / SERVICE.name
    service.write_text(SERVICE.read_text().replace(ENTRY_POINT, str(binary)))
    shutil.copy(UNITS / "partnercenter-exporter.socket", tmp_path)
    if drop_in:
        (tmp_path / f"{SERVICE.name}.d").mkdir()
        shutil.copy(UNITS / "socket-activation.conf", tmp_path / f"{SERVICE.name}.d")
    return service


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("systemd-analyze"), "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The service, the socket and the socket-activation drop-in load without a single warning."""
    service = installed_copy(tmp_path, drop_in=True)
    result = verify(service, tmp_path / "partnercenter-exporter.socket")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_guides_flags_drop_in_verifies_cleanly_and_keeps_every_flag(tmp_path: Path) -> None:
    """The `Environment=` line deploy/systemd/README.md tells people to add with `systemctl edit`
    loads without a warning, and its one variable holds both flags: unquoted, systemd drops
    `--web.config.file`, and /metrics loses TLS and basic auth."""
    guide = (UNITS / "README.md").read_text()
    (line,) = re.findall(r"`(Environment=.*--web\.config\.file=[^`]*)`", guide)
    service = installed_copy(tmp_path)
    (tmp_path / f"{SERVICE.name}.d").mkdir()
    (tmp_path / f"{SERVICE.name}.d" / "flags.conf").write_text(f"[Service]\n{line}\n")
    result = verify(service)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    (assignment,) = shlex.split(line.removeprefix("Environment="))
    assert "--web.config.file=" in assignment.partition("=")[2]


def test_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening directive is reported (systemd ignores it)."""
    service = installed_copy(tmp_path)
    service.write_text(service.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    assert "Unknown key 'ProtectSytem'" in verify(service).stderr


@pytest.mark.parametrize("drop_in", [False, True], ids=["listening", "socket-activated"])
def test_service_exposure_is_two_or_better(tmp_path: Path, drop_in: bool) -> None:
    """`systemd-analyze security --offline=yes` rates the service at an exposure of 2.0 or lower."""
    service = installed_copy(tmp_path, drop_in=drop_in)
    result = subprocess.run([require_binary("systemd-analyze"), "security", "--offline=yes", str(service)],
                            capture_output=True, text=True, timeout=60, check=False)
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout[-2000:] + result.stderr
    assert float(score.group(1)) <= 2.0


def _exec_args(text: str, opts: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart=").replace("$PARTNERCENTER_EXPORTER_OPTS", opts))[1:]


def _opts(text: str) -> str:
    found: list[str] = re.findall(r"^Environment=PARTNERCENTER_EXPORTER_OPTS=(.*)$", text, re.M)
    return found[-1]


@pytest.mark.parametrize("drop_in", [False, True], ids=["listening", "socket-activated"])
def test_exec_start_flags_are_flags_the_exporter_takes(tmp_path: Path, drop_in: bool) -> None:
    """ExecStart with its options (the drop-in's too) passes the exporter's argument parser: with a
    valid config in place of /etc's, `--config.check` says OK."""
    config = tmp_path / "config.yml"
    config.write_text((ROOT / "tests" / "fixtures" / "config" / "minimal.good.yaml").read_text())
    (tmp_path / "state").mkdir()
    opts = _opts((UNITS / "socket-activation.conf").read_text() if drop_in else SERVICE.read_text())
    args = [arg.replace("/etc/partnercenter-exporter/config.yml", str(config))
            for arg in _exec_args(SERVICE.read_text(), opts)]
    assert ("--web.systemd-socket" in args) == drop_in
    result = subprocess.run(exporter_command(*args, "--config.check"), capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stderr


def test_sysusers_entry_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers, pointed at an empty root, creates the user and group the service runs as,
    with the state directory as its home."""
    (tmp_path / "etc").mkdir()
    result = subprocess.run([require_binary("systemd-sysusers"), f"--root={tmp_path}",
                             str(UNITS / "partnercenter-exporter.sysusers")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    user = re.search(r"^User=(\S+)$", SERVICE.read_text(), re.M)
    assert user
    [entry] = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
               if line.startswith(f"{user.group(1)}:")]
    assert entry[5] == "/var/lib/partnercenter-exporter"
    assert "StateDirectory=partnercenter-exporter" in SERVICE.read_text()


def test_exporter_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes; under the kernel's equivalent (PR_SET_MDWE, Linux
    6.3+) the demo still polls and prints its metrics, so no dependency needs W+X memory."""
    if "MemoryDenyWriteExecute=yes" not in SERVICE.read_text():
        pytest.fail("the unit no longer sets MemoryDenyWriteExecute=yes; drop this test with it")
    libc = ctypes.CDLL(None, use_errno=True)

    def refuse_exec_gain() -> None:
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            raise OSError(ctypes.get_errno(), "PR_SET_MDWE")

    try:
        result = subprocess.run(exporter_command("demo", "--once", "--log.level=error"),
                                capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                preexec_fn=refuse_exec_gain, check=False)
    except OSError as err:
        if err.errno == errno.EINVAL:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
        raise
    assert result.returncode == 0, result.stderr[-2000:]
    assert "partnercenter_exporter_build_info{" in result.stdout

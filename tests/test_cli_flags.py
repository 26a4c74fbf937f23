"""Bad --web.* flag values end in argparse's one error line (exit 2), never a traceback."""

from __future__ import annotations

import pytest

from exporter.cli import run


@pytest.mark.parametrize("value", ["127.0.0.1:99999", "127.0.0.1", "", "[::1:9867", "::1:9867"])
def test_a_bad_listen_address_is_one_error_line(capsys: pytest.CaptureFixture[str], value: str) -> None:
    """An out-of-range port, no port, nothing, or a half-bracketed or bare IPv6 address: exit 2."""
    with pytest.raises(SystemExit) as exited:
        run(["--config.file=/nonexistent.yml", f"--web.listen-address={value}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("usage:")  # argparse's usage, then one error line
    assert "Traceback" not in "\n".join(error)
    assert error[-1].startswith("partnercenter-exporter: error: argument --web.listen-address: expected "
                               "HOST:PORT with a port from 0 to 65535")


def test_a_telemetry_path_no_client_can_request_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-ASCII telemetry path (clients send it percent-encoded, so it never matches) is refused."""
    with pytest.raises(SystemExit) as exited:
        run(["--config.file=/nonexistent.yml", "--web.telemetry-path=/métriques"])
    assert exited.value.code == 2
    assert "use only ASCII letters, digits and - . _ ~ / in the path" in capsys.readouterr().err

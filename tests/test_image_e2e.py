"""The container image, built from the Dockerfile unchanged in a real engine (buildah) on a stand-in
for its base, and run: version, user, the demo from the host, HEALTHCHECK, where it can write."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.helpers import image
from tests.helpers.e2e import http_get, wait_for

ROOT = Path(__file__).resolve().parent.parent
# The image's HEALTHCHECK asks :9867; nothing else in the suite binds it.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, image.Container]]:
    for tool in ("buildah", "podman", "mmdebstrap"):
        require_binary(tool)
    image.stand_in_base(tmp_path_factory.mktemp("base"))
    tag = image.build(ROOT)
    container = image.Container(tag)
    yield tag, container
    container.remove()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def test_version_shows_the_build_arguments(built: tuple[str, image.Container]) -> None:
    """--version in the image names the checkout's version (the tag's) and its git commit, which
    scripts/build-image passed as build arguments."""
    tag, container = built
    result = container.run("partnercenter-exporter", "--version")
    assert result.returncode == 0, result.stderr
    version = tag.split(":", 1)[1]
    assert result.stdout.splitlines()[0].replace("+", "-") == f"partnercenter-exporter {version}"
    assert f"revision: {_git('rev-parse', 'HEAD')}" in result.stdout


def test_it_runs_as_a_non_root_user(built: tuple[str, image.Container]) -> None:
    """Commands in the image run as uid 10001, not root."""
    _, container = built
    assert container.config()["User"] == "10001:10001"
    assert container.run("python", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split() == \
        ["10001", "10001"]


def test_only_the_state_volume_is_writable(built: tuple[str, image.Container]) -> None:
    """The token cache's directory (/var/lib/partnercenter-exporter, the volume docs/deployment.md
    puts token_cache_file in) is writable; the config directory, the venv and / are not."""
    _, container = built
    probe = "import sys; open(sys.argv[1], 'w').write('x')"
    assert container.run("python", "-c", probe, "/var/lib/partnercenter-exporter/probe").returncode == 0
    for path in ("/etc/partnercenter-exporter-probe", "/opt/venv/probe", "/probe"):
        assert container.run("python", "-c", probe, path).returncode != 0, path


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _metrics(url: str) -> bytes | None:
    """The body once the demo has polled, else None (not up yet, or no data yet)."""
    try:
        status, body = http_get(url)
    except OSError:
        return None
    return body if status == 200 and b"partnercenter_dap_customers{" in body else None


def test_the_demo_answers_from_the_host_and_the_healthcheck_follows_health(
        built: tuple[str, image.Container]) -> None:
    """The demo in the image serves /metrics to the host on :9867; the image's own HEALTHCHECK
    command passes while it runs, and fails when nothing answers or /healthz says 503."""
    _, container = built
    check = container.config()["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    assert container.run(*check[1:]).returncode != 0  # nothing listens yet

    demo = subprocess.Popen(container.command("partnercenter-exporter", "demo", "--web.listen-address=:9867"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = wait_for(lambda: _metrics("http://127.0.0.1:9867/metrics"), 60, "the demo's metrics")
        assert b'partnercenter_exporter_poll_success{collector="dap_statistics"' in body
        assert container.run(*check[1:]).returncode == 0
    finally:
        demo.terminate()
        demo.wait(timeout=30)

    server = http.server.HTTPServer(("127.0.0.1", 9867), _Unhealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert container.run(*check[1:]).returncode != 0
    finally:
        server.shutdown()
        server.server_close()


def test_image_size_is_the_one_docs_deployment_reports(built: tuple[str, image.Container]) -> None:
    """docs/deployment.md states what the exporter adds to its base, to the nearest 10 MB."""
    tag, _ = built
    total, base = image.image_size(tag)
    added = round((total - base) / 1e6, -1)
    assert f"adds about {added:.0f} MB" in (ROOT / "docs" / "deployment.md").read_text()

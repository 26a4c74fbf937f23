"""--web.config.file: the exporter-toolkit format, strict keys, bcrypt basic auth, TLS settings."""

from __future__ import annotations

import base64
import http.client
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest

from exporter.config import ConfigError
from exporter.exposition import Publisher
from exporter.http.server import ExporterServer
from exporter.simulator.certs import generate_certs
from exporter.webconfig import BasicAuth, WebConfigFile, load_web_config
from tests.helpers.e2e import wait_for

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_full_web_config_loads(tmp_path: Path) -> None:
    """TLS with client verification, basic auth and headers load from one file."""
    certs = generate_certs(tmp_path)
    path = write(tmp_path, f"""
tls_server_config:
  cert_file: server.pem
  key_file: server-key.pem
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {HASH}
""")
    web = load_web_config(path)
    assert web.ssl_context is not None
    assert web.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert web.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.headers == {"Strict-Transport-Security": "max-age=31536000"}
    assert web.basic_auth.check(basic("prometheus", "pw"))
    assert certs.ca_file.exists()


def test_every_web_config_error_is_reported(tmp_path: Path) -> None:
    """Unknown keys, plain passwords, missing files and unsupported options are all reported."""
    path = write(tmp_path, """
tls_server_config:
  cert_file: missing.pem
  key_file: missing-key.pem
  client_auth_type: RequestClientCert
  cipher_suites: [TLS_AES_128_GCM_SHA256]
http_server_config:
  headers:
    Server: nginx
basic_auth_users:
  prometheus: plain-password
extra: true
""")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    errors = caught.value.errors
    assert any(e.startswith("extra: unknown key") for e in errors)
    assert any(e.startswith("tls_server_config.cert_file: file ") for e in errors)
    assert any(e.startswith("tls_server_config.key_file: file ") for e in errors)
    assert any("client_auth_type" in e and "cannot ask for a client certificate" in e for e in errors)
    assert any(e.startswith("tls_server_config.cipher_suites: not supported") for e in errors)
    assert any(e.startswith("http_server_config.headers.Server: not allowed") for e in errors)
    assert any(e.startswith("basic_auth_users.prometheus: must be a bcrypt hash") for e in errors)
    assert "plain-password" not in "\n".join(errors)
    assert len(errors) == 7


def test_tls_choices_of_the_wrong_type_are_config_errors(tmp_path: Path) -> None:
    """A list where a TLS version or client auth type belongs is a field error, not a crash
    (found by the property test)."""
    path = write(tmp_path, "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n"
                           "  client_auth_type: [RequireAndVerifyClientCert]\n  min_version: []\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    errors = caught.value.errors
    assert any(e.startswith("tls_server_config.client_auth_type: must be one of") for e in errors)
    assert any(e.startswith("tls_server_config.min_version: must be one of") for e in errors)


def test_basic_auth_rejects_wrong_unknown_and_malformed() -> None:
    """Wrong passwords, unknown users and malformed headers are refused."""
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check(basic("prometheus", "pw"))
    assert auth.check(basic("prometheus", "pw"))  # cached path
    assert not auth.check(basic("prometheus", "nope"))
    assert not auth.check(basic("grafana", "pw"))
    assert not auth.check("Basic !!!not-base64")
    assert not auth.check("Bearer abc")
    assert not auth.check(None)


def test_a_duplicate_key_in_the_web_config_is_an_error(tmp_path: Path) -> None:
    """The web config is read by the same strict loader as the main config: a key given twice is
    refused with its line, not silently overridden by the second one."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n  prometheus: '{hashed}'\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.errors == [
        "web.config.file: invalid YAML at line 3, column 3: duplicate key 'prometheus'"]


# --- Reload while running, over real sockets -------------------------------------------------

def scrape(port: int, context: ssl.SSLContext | None = None,
           headers: dict[str, str] | None = None) -> int:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5) if context
        else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def serve_web(start_server: Callable[..., ExporterServer]) -> Callable[[Path], ExporterServer]:
    return lambda path: start_server(Publisher((90,), poll_interval=60),
                                     web=WebConfigFile(path, recheck_interval=0))


def scrape_or_none(port: int, context: ssl.SSLContext) -> int | None:
    """The status of a TLS scrape, or None if the handshake fails (such as an untrusted cert)."""
    try:
        return scrape(port, context)
    except ssl.SSLError:
        return None


def client_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def test_mutual_tls_refuses_clients_without_a_certificate(
        tmp_path: Path, serve_web: Callable[[Path], ExporterServer]) -> None:
    """RequireAndVerifyClientCert: a scrape without a client certificate fails, with one it works."""
    certs = generate_certs(tmp_path)
    server = serve_web(write(tmp_path, "tls_server_config:\n  cert_file: server.pem\n"
                                       "  key_file: server-key.pem\n"
                                       "  client_auth_type: RequireAndVerifyClientCert\n"
                                       "  client_ca_file: ca.pem\n"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        scrape(server.port, client_context(certs.ca_file))
    assert scrape(server.port, client_context(
        certs.ca_file, (certs.client_cert_file, certs.client_key_file))) == 200


def test_rotated_certificate_is_served_without_restart(
        tmp_path: Path, serve_web: Callable[[Path], ExporterServer]) -> None:
    """Replacing cert_file and key_file on disk changes the certificate of the next connection."""
    old = generate_certs(tmp_path / "old")
    new = generate_certs(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("server.pem", "server-key.pem"):
        shutil.copy(old.ca_file.parent / name, live / name)
    server = serve_web(write(live, "tls_server_config:\n  cert_file: server.pem\n"
                                   "  key_file: server-key.pem\n"))
    assert scrape(server.port, client_context(old.ca_file)) == 200
    for name in ("server.pem", "server-key.pem"):
        shutil.copy(new.ca_file.parent / name, live / f".{name}")
        (live / f".{name}").replace(live / name)  # how cert-manager and certbot swap files
    wait_for(lambda: scrape_or_none(server.port, client_context(new.ca_file)) == 200, 5,
             "the new certificate")
    with pytest.raises(ssl.SSLCertVerificationError):
        scrape(server.port, client_context(old.ca_file))


def test_changed_password_applies_to_the_next_request(
        tmp_path: Path, serve_web: Callable[[Path], ExporterServer]) -> None:
    """Editing basic_auth_users takes effect on the next request, without a restart."""
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    server = serve_web(path)
    assert scrape(server.port, headers={"Authorization": basic("prometheus", "pw")}) == 200
    path.write_text("basic_auth_users:\n  prometheus: "
                    + bcrypt.hashpw(b"new-pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    # The edit is parsed off the event loop and applies as soon as it is: within the next requests.
    wait_for(lambda: scrape(server.port, headers={"Authorization": basic("prometheus", "pw")}) == 401,
             5, "the old password to stop working")
    assert scrape(server.port, headers={"Authorization": basic("prometheus", "new-pw")}) == 200


def test_broken_edit_keeps_the_previous_config_and_logs_once(
        tmp_path: Path, serve_web: Callable[[Path], ExporterServer],
        caplog: pytest.LogCaptureFixture) -> None:
    """A web config edited into an invalid state is logged once; the last good one stays in force."""
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    server = serve_web(path)
    path.write_text("basic_auth_users:\n  prometheus: plain-text-password\n")
    wait_for(lambda: scrape(server.port) and "web config reload failed" in caplog.text, 5,
             "the failed reload")
    for _ in range(3):
        assert scrape(server.port) == 401
        assert scrape(server.port, headers={"Authorization": basic("prometheus", "pw")}) == 200
    failures = [r for r in caplog.records if r.getMessage().startswith("web config reload failed")]
    assert len(failures) == 1
    assert "basic_auth_users.prometheus: must be a bcrypt hash" in failures[0].__dict__["errors"]
    assert "plain-text-password" not in caplog.text


def test_files_are_checked_at_most_once_per_recheck_interval(tmp_path: Path) -> None:
    """An edit is seen only once recheck_interval has passed since the last check, so requests
    do not stat the files every time."""
    now = [100.0]
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    reloads: list[Callable[[], None]] = []
    web = WebConfigFile(path, recheck_interval=1.0, monotonic=lambda: now[0], spawn=reloads.append)
    first = web.current()
    path.write_text("http_server_config:\n  headers:\n    X-Frame-Options: DENY\n")
    now[0] += 0.5
    assert web.current() is first
    assert reloads == []
    now[0] += 0.6
    assert web.current() is first  # the change is parsed elsewhere, not by the caller
    (reload,) = reloads
    reload()
    assert web.current().headers == {"X-Frame-Options": "DENY"}


def test_each_web_config_reload_is_reported_with_its_outcome(tmp_path: Path) -> None:
    """on_reload hears False for a broken edit and True once a good edit applies, so the reload
    gauge can follow; an unchanged file reports nothing."""
    now = [100.0]
    path = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    reloads: list[Callable[[], None]] = []
    outcomes: list[bool] = []
    web = WebConfigFile(path, recheck_interval=1.0, monotonic=lambda: now[0], spawn=reloads.append)
    web.on_reload = outcomes.append
    for text in ("basic_auth_users:\n  prometheus: plain\n", "http_server_config:\n  headers: {}\n"):
        path.write_text(text)
        now[0] += 1.1
        web.current()
        reloads.pop()()
    now[0] += 1.1
    web.current()
    assert (outcomes, reloads) == ([False, True], [])


def test_publisher_renders_each_config_files_last_load(tmp_path: Path) -> None:
    """Publisher.loaded sets the reload gauge and keeps the last success time across a failure."""
    clock = [1000.0]
    publisher = Publisher((90,), poll_interval=60, clock=lambda: clock[0])
    publisher.loaded("web", True)
    clock[0] = 2000.0
    publisher.loaded("web", False)
    body = publisher.current.body.decode()
    assert 'partnercenter_exporter_config_last_reload_successful{config="web"} 0.0' in body
    assert 'partnercenter_exporter_config_last_reload_success_timestamp_seconds{config="web"} 1000.0' in body

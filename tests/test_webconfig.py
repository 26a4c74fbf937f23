"""--web.config.file: the exporter-toolkit format, strict keys, bcrypt basic auth, TLS settings."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import bcrypt
import pytest

from exporter.config import ConfigError
from exporter.simulator.certs import generate_certs
from exporter.webconfig import BasicAuth, load_web_config

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

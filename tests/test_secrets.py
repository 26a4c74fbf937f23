"""No secret, password or token appears in logs, errors, /metrics, the status page or config.check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.simulator import Fault, Simulator
from exporter.simulator.app import ECHO
from exporter.simulator.assertions import write_client_certificate
from tests.conftest import CLIENT_ID, TENANT_ID
from tests.helpers.e2e import ExporterProcess, http_get, run_exporter, seeded_tenant, wait_for, write_config

pytestmark = pytest.mark.e2e

CLIENT_SECRET = "Cs7Q~b4rK9xZ2mV8pL5nW1jT6hY3gF0dSa"
PASSWORD = "Pw9!hunter2-correct-horse-battery"
APP_TENANT = "00000000-0000-0000-0000-0000000000bb"
APP_CLIENT = "22222222-2222-2222-2222-222222222222"


def leak_config(sim: Simulator, directory: Path) -> Path:
    """Three tenants, one per auth method, each with a distinctive secret."""
    sim.add_client(APP_CLIENT, secret=CLIENT_SECRET)
    sim.add_tenant(APP_TENANT, customers=10)
    (directory / "secret").write_text(CLIENT_SECRET)
    (directory / "password").write_text(PASSWORD)
    (directory / "seed").write_text(sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "a@contoso.test"))
    config = {
        "poll_interval": "1m", "request_timeout": "3s",
        "endpoints": sim.endpoints_config(),
        "tenants": [
            {"name": "sam", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
             "auth": {"token_cache_file": str(directory / "cache.json"),
                      "refresh_token_file": str(directory / "seed")}},
            {"name": "apponly", "tenant_id": APP_TENANT, "client_id": APP_CLIENT,
             "auth": {"method": "client_credentials", "client_secret_file": str(directory / "secret")}},
            {"name": "ropc", "tenant_id": APP_TENANT, "client_id": APP_CLIENT,
             "auth": {"method": "username_password", "username": "u@contoso.test",
                      "password_file": str(directory / "password"),
                      "client_secret_file": str(directory / "secret")}},
        ]}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_no_leak(secrets: list[str], outputs: dict[str, str]) -> None:
    for secret in secrets:
        core = re.sub(r"^sim-(at|rt)-", "", secret)
        for where, text in outputs.items():
            assert secret not in text, f"secret found in {where}"
            assert core[:8] not in text, f"8-character prefix of a secret found in {where}"


def test_secrets_never_leak(sim: Simulator, tmp_path: Path) -> None:
    """Across auth methods, failures and retries, no secret or 8-char prefix is ever shown."""
    config = leak_config(sim, tmp_path)
    outputs: dict[str, str] = {}
    proc = ExporterProcess(["--config.file", str(config), "--web.listen-address=127.0.0.1:0",
                            "--log.level=debug"], tmp_path / "exporter.log")
    try:
        proc.wait_ready()
        outputs["/metrics"] = http_get(proc.url + "/metrics")[1].decode()
        outputs["/"] = http_get(proc.url + "/")[1].decode()
    finally:
        proc.stop()
    outputs["debug log"] = proc.log
    assert "App+User tokens only" in outputs["debug log"]

    sim.invalidate_access_tokens()
    sim.inject(Fault("api", status=429, headers={"Retry-After": "1"}))
    sim.inject(Fault("token", status=400, body={"error": "invalid_grant",
                                                 "error_description": f"AADSTS50126: echo {PASSWORD}",
                                                 "error_codes": [50126]}))
    # Partner Center's error description is named in messages: one that echoes a secret is redacted.
    sim.inject(Fault("api", status=400, body={"code": 400, "description": f"bad request {CLIENT_SECRET}",
                                              "data": [], "source": "PartnerCenter"}))
    for i in range(3):
        once = run_exporter("--config.file", str(config), "--once", "--log.level=debug")
        outputs[f"--once #{i} stdout"] = once.stdout
        outputs[f"--once #{i} stderr"] = once.stderr
    check = run_exporter("--config.file", str(config), "--config.check")
    outputs["--config.check"] = check.stdout + check.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("request_timeout: 3s", "request_timeout: 3")
                   + f"extra_key: {CLIENT_SECRET[:4]}\n")
    bad_check = run_exporter("--config.file", str(bad), "--config.check")
    assert bad_check.returncode == 2
    outputs["--config.check (bad)"] = bad_check.stdout + bad_check.stderr

    assert len(sim.issued_tokens()) >= 4
    assert any("bad request [REDACTED]" in text for text in outputs.values()), "the echo was shown"
    assert_no_leak([CLIENT_SECRET, PASSWORD, *sim.issued_tokens()], outputs)


def test_literal_secret_in_config_is_refused_without_echo(tmp_path: Path) -> None:
    """A secret written into the YAML is refused and its value is not printed."""
    config = tmp_path / "c.yaml"
    config.write_text("tenants:\n- name: a\n  tenant_id: a.onmicrosoft.com\n"
                      f"  client_id: {APP_CLIENT}\n"
                      f"  auth: {{method: client_credentials, client_secret: {CLIENT_SECRET}}}\n")
    result = run_exporter("--config.file", str(config), "--config.check")
    assert result.returncode == 2
    assert "literal secrets are not allowed" in result.stderr
    assert_no_leak([CLIENT_SECRET], {"stderr": result.stderr, "stdout": result.stdout})


ECHO_TENANT = "00000000-0000-0000-0000-0000000000ee"
VAULT_TENANT = "00000000-0000-0000-0000-0000000000ef"
VAULT_APP = "55555555-5555-5555-5555-555555555555"


def test_credentials_echoed_by_each_upstream_never_show(tmp_path: Path) -> None:
    """Rotated refresh tokens (from a file and from Key Vault) and access tokens quoted back by the
    identity platform or Partner Center (both error shapes) are redacted in the log, /, and --once."""
    with Simulator(token_lifetime=60) as sim:
        sim.add_client(CLIENT_ID)
        sim.add_tenant(TENANT_ID, customers=10)
        sim.add_client(VAULT_APP)
        sim.register_certificate(VAULT_APP, write_client_certificate(tmp_path / "vault-app.pem"))
        sim.keyvault.grant(VAULT_APP)
        sim.add_tenant(VAULT_TENANT, customers=5)
        (tmp_path / "vault.seed").write_text(sim.issue_refresh_token(VAULT_TENANT, CLIENT_ID, "a@vault.test"))
        other = seeded_tenant(sim, tmp_path, "other", ECHO_TENANT, customers=10,
                              collectors=["dap_statistics", "gdap_relationships", "dap_customers"])
        vaulted: dict[str, object] = {"name": "vaulted", "tenant_id": VAULT_TENANT, "client_id": CLIENT_ID,
                   "collectors": ["dap_statistics"], "auth": {
                       "refresh_token_file": str(tmp_path / "vault.seed"),
                       "token_store": {"azure_key_vault": {
                           "vault_url": sim.vault_url, "secret_name": "pcx-vaulted",
                           "tenant_id": ECHO_TENANT, "client_id": VAULT_APP,
                           "client_certificate_file": str(tmp_path / "vault-app.pem")}}}}
        config = write_config(sim, tmp_path, collectors=["dap_statistics"], extra_tenants=[other, vaulted])
        first = run_exporter("--config.file", str(config), "--once")
        assert first.returncode == 0, first.stderr  # every refresh token has rotated

        # The identity platform quotes the refresh token it was sent, as a proxy or a 400 can.
        for tenant_id in (TENANT_ID, VAULT_TENANT):  # a refresh token from a file, and from a vault
            sim.inject(Fault("token", status=400, times=10**6, tenant=tenant_id, body={
                "error": "invalid_grant", "error_description": f"AADSTS9002313: Invalid request: {ECHO}"}))
        sim.inject(Fault("api", status=400, times=10**6, tenant=ECHO_TENANT, body={
            "error": {"code": "BadRequest", "message": f"Malformed request {ECHO}"}}))
        sim.inject(Fault("customers", status=400, times=10**6, tenant=ECHO_TENANT, body={
            "code": 400, "description": f"Bad request {ECHO}", "data": [], "source": "PartnerCenter"}))
        outputs: dict[str, str] = {}
        proc = ExporterProcess(["--config.file", str(config), "--web.listen-address=127.0.0.1:0",
                                "--log.level=debug"], tmp_path / "exporter.log")
        try:
            outputs["/"] = wait_for(lambda: (page := http_get(proc.url + "/")[1].decode()).count(
                "failing") >= 4 and page, 20, "every tenant to fail")
            outputs["/metrics"] = http_get(proc.url + "/metrics")[1].decode()
        finally:
            proc.stop()
        outputs["log"] = proc.log
        once = run_exporter("--config.file", str(config), "--once")
        outputs["--once"] = once.stdout + once.stderr

    assert once.returncode == 1
    for where in ("/", "log", "--once"):
        assert outputs[where].count("Invalid request: refresh_token=[REDACTED]") >= 2, \
            f"the token echoes did not reach {where}"
        assert "Bad request [REDACTED]" in outputs[where], f"the REST echo did not reach {where}"
    assert "Malformed request [REDACTED]" in outputs["log"]
    issued = sim.issued_tokens()
    assert len([t for t in issued if t.startswith("sim-rt-")]) >= 6  # seeds and their rotations
    assert_no_leak(issued, outputs)

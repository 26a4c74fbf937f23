"""Control characters from upstream or a paste reach no label value, log line or terminal raw."""

from __future__ import annotations

import io
import logging
import re
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import respx

from exporter.app import identity
from exporter.auth import LoginError, interactive_login
from exporter.collectors.dap_customers import DapCustomersClient
from exporter.exposition import render
from exporter.logs import Redactor, setup_logging
from exporter.model import Snapshot, SourceView
from exporter.simulator import Simulator
from tests.conftest import endpoints, tenant
from tests.helpers.samples import NOW, TODAY, FakeTokens

CUSTOMERS = "https://pc.test.invalid/CustomerServiceAdminApi/Web/v1/delegatedAdminCustomers"
# A display name a customer's own admin could set: ESC sequences that retitle a terminal and
# erase a line, NUL, DEL, a C1 control, a carriage return.
HOSTILE = "Evil\x1b]0;pwned\x07 Corp\x00\x7f\x85\r\x1b[2KSigned in as ceo@contoso"
# Every control character but the newline that ends each exposition line.
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@respx.mock
def test_a_display_name_with_control_characters_is_a_clean_label_value() -> None:
    """C0, DEL and C1 in a customer's name become U+FFFD (a carriage return a space) in /metrics."""
    respx.get(url__startswith=CUSTOMERS).mock(side_effect=[
        httpx.Response(200, json={"value": [{
            "customerTenantId": "00000000-0000-0000-0000-00000000c001", "organizationDisplayName": HOSTILE,
            "dapEnabled": True, "startDateTime": "2022-04-20T06:11:11.7227953Z"}]}),
        httpx.Response(200, json={"value": []})])
    data = DapCustomersClient("contoso", httpx.Client(), CUSTOMERS, FakeTokens(), clock=lambda: NOW).fetch()
    view = SourceView("contoso", "dap_customers", data=data, attempted=True, last_poll_success=True)
    body = render(Snapshot((view,)), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert not CONTROLS.search(body)
    cleaned = "Evil\ufffd]0;pwned\ufffd Corp\ufffd\ufffd\ufffd \ufffd[2KSigned in as ceo@contoso"
    assert f'customer_name="{cleaned}"' in body


@pytest.mark.parametrize(("fmt", "written"), [("logfmt", 'error="a\\u001b[2Kb\\u007f\\u0085\\rc"'),
                                             ("json", '"error": "a\\u001b[2Kb\\u007f\\u0085\\rc"')])
def test_each_log_format_escapes_every_control_character(fmt: str, written: str) -> None:
    """A log value with ESC, DEL or a C1 control is written with \\uXXXX escapes, on one line."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", fmt, stream, Redactor())
        logging.getLogger("exporter.test").warning("poll failed", extra={"error": "a\x1b[2Kb\x7f\x85\rc"})
    finally:
        root.handlers[:], root.level = saved
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert not CONTROLS.search(line)
    assert written in line


def test_a_crafted_paste_at_auth_code_login_prints_no_control_character(
        sim: Simulator, tmp_path: Path) -> None:
    """An error_description pasted back in the redirect URL (a fake "Signed in" line, a new window
    title) ends login with a message that carries no control character."""
    out = io.StringIO()

    def paste() -> str:
        url = re.search(r"https://\S+/oauth2/v2\.0/authorize\?\S+", out.getvalue())
        assert url is not None
        state = parse_qs(urlsplit(url.group(0)).query)["state"][0]
        return "http://localhost/?" + urlencode({"error": "access_denied\x1b[31m", "state": state,
                                                  "error_description": f"AADSTS65004: {HOSTILE}"})

    http = httpx.Client(verify=ssl.create_default_context(cafile=str(sim.certs.ca_file)), timeout=5)
    with http, pytest.raises(LoginError) as caught:
        interactive_login(identity(tenant(cache=tmp_path / "c.json"), endpoints(**sim.endpoints_config())),
                          http, out=out, flow="auth-code", read_line=paste)
    message = str(caught.value)
    assert "AADSTS65004" in message
    assert not CONTROLS.search(message)

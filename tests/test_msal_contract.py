"""What the exporter relies on in MSAL, pinned against the installed version: an MSAL upgrade that
changes a message text, a result field or the cache's call pattern fails here, by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
from msal.exceptions import MsalServiceError

from exporter.app import identity
from exporter.auth import (
    MSAL_AUTHORITY_WORD,
    MSAL_REPLAYED_STATUS,
    RecordingHttp,
    build_msal_app,
)
from exporter.token_store import FileTokenCache
from tests.conftest import DISCOVERY_URL, SCOPE, aad_error, endpoints, tenant, token_body


def app(config: Any, cache: Any = None) -> msal.ClientApplication:
    return build_msal_app(identity(config, endpoints()), RecordingHttp(httpx.Client()),
                          cache if cache is not None else msal.SerializableTokenCache(),
                          confidential=config.auth.client_secret is not None)


def test_a_replayed_error_status_is_in_the_exception_text(aad: Any) -> None:
    """MSAL answers a retry within its throttle window from its cache by raising MsalServiceError
    whose text holds `HTTP Error: <status>` (auth reads the status from it)."""
    aad.token.mock(return_value=httpx.Response(503, text="down"))
    client = app(tenant("client_credentials", secret="s"))
    with pytest.raises(MsalServiceError):
        client.acquire_token_for_client([SCOPE])
    with pytest.raises(MsalServiceError) as replayed:
        client.acquire_token_for_client([SCOPE])
    assert aad.token.call_count == 1
    match = MSAL_REPLAYED_STATUS.search(str(replayed.value))
    assert match is not None
    assert match.group(1) == "503"


def test_a_failed_discovery_is_a_value_error_naming_the_authority(aad: Any) -> None:
    """OpenID discovery refused: MSAL raises ValueError and its text has the word auth looks for."""
    aad.get(DISCOVERY_URL).mock(return_value=httpx.Response(400, json=aad_error("invalid_tenant", 90002)))
    with pytest.raises(ValueError, match=MSAL_AUTHORITY_WORD) as caught:
        app(tenant("client_credentials", secret="s"))
    assert MSAL_AUTHORITY_WORD in str(caught.value).lower()


def test_an_error_body_reaches_the_result_field_by_field(aad: Any) -> None:
    """A 400 from the token endpoint comes back as a dict with error, error_description and
    error_codes as the platform sent them, the fields the classifier reads."""
    body = aad_error("invalid_client", 7000215, "Invalid client secret provided.")
    aad.token.mock(return_value=httpx.Response(400, json=body))
    result = app(tenant("client_credentials", secret="s")).acquire_token_for_client([SCOPE])
    assert {key: result[key] for key in ("error", "error_description", "error_codes")} == \
        {key: body[key] for key in ("error", "error_description", "error_codes")}
    assert "access_token" not in result


def test_a_token_result_has_the_fields_auth_and_login_read(aad: Any) -> None:
    """A redeemed refresh token gives access_token, expires_in and id_token_claims with
    preferred_username (login prints it)."""
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2", expires_in=1234)))
    result = app(tenant()).acquire_token_by_refresh_token("rt-1", [SCOPE])
    assert result["access_token"] == "at-1"
    assert int(result["expires_in"]) == 1234
    assert result["id_token_claims"]["preferred_username"] == "admin@contoso.onmicrosoft.com"


def test_a_device_flow_gives_the_fields_login_prints(aad: Any) -> None:
    """initiate_device_flow passes user_code, verification_uri and message through."""
    device = {"device_code": "d", "user_code": "ABC-DEF", "verification_uri": "https://microsoft.com/devicelogin",
              "expires_in": 900, "interval": 5, "message": "To sign in, enter ABC-DEF"}
    aad.post(url__regex=r".*/devicecode$").mock(return_value=httpx.Response(200, json=device))
    flow = app(tenant()).initiate_device_flow(scopes=[SCOPE])
    assert (flow["user_code"], flow["verification_uri"], flow["message"]) == \
        ("ABC-DEF", "https://microsoft.com/devicelogin", "To sign in, enter ABC-DEF")


class CountingCache(FileTokenCache):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[str] = []

    def add(self, event: dict[str, Any], **kwargs: Any) -> None:
        self.calls.append("add")
        super().add(event, **kwargs)

    def modify(self, credential_type: str, old_entry: dict[str, Any],
               new_key_value_pairs: dict[str, Any] | None = None) -> None:
        self.calls.append("modify")
        super().modify(credential_type, old_entry, new_key_value_pairs)

    def search(self, credential_type: str, **kwargs: Any) -> Any:
        self.calls.append("search")
        return super().search(credential_type, **kwargs)


def test_the_cache_is_changed_through_add_and_modify_and_read_through_search(
        aad: Any, tmp_path: Path) -> None:
    """FileTokenCache hooks add, modify and search: a token response is one add that changes
    entries through modify, and a silent token request reads through search."""
    cache = CountingCache(tmp_path / "cache.json")
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    client = app(tenant(), cache)
    client.acquire_token_by_refresh_token("rt-1", [SCOPE])
    assert cache.calls[0] == "add"
    assert cache.calls.count("add") == 1
    assert "modify" in cache.calls
    cache.calls.clear()
    account = client.get_accounts()[0]
    assert client.acquire_token_silent([SCOPE], account=account)["access_token"] == "at-1"
    assert "search" in cache.calls
    assert "add" not in cache.calls


def test_one_token_response_is_one_write(aad: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The five entries of a token response reach the file in one atomic write, not five."""
    writes: list[str] = []
    monkeypatch.setattr("exporter.token_store.write_atomically", lambda path, content: writes.append(content))
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    app(tenant(), FileTokenCache(tmp_path / "cache.json")).acquire_token_by_refresh_token("rt-1", [SCOPE])
    assert len(writes) == 1
    assert "rt-2" in json.dumps(json.loads(writes[0]))


def test_a_cache_replaced_by_another_process_is_read_before_use(aad: Any, tmp_path: Path) -> None:
    """After another process (login) replaces the file, the next read sees its account."""
    path = tmp_path / "cache.json"
    reader = FileTokenCache(path)
    assert app(tenant(), reader).get_accounts() == []
    aad.token.mock(return_value=httpx.Response(200, json=token_body("at-1", "rt-2")))
    app(tenant(), FileTokenCache(path)).acquire_token_by_refresh_token("rt-1", [SCOPE])
    assert [a["username"] for a in app(tenant(), reader).get_accounts()] == ["admin@contoso.onmicrosoft.com"]

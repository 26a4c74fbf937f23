"""msal without its requests stack until managed identity needs it (exporter.msal_package)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import msal
import pytest

from exporter.msal_package import LIGHT_NAMES
from tests.helpers.e2e import ROOT


def _fresh(code: str) -> object:
    """Run `code` in a new interpreter that imported the exporter first; return what it printed."""
    result = subprocess.run([sys.executable, "-c", "import json, sys\nimport exporter.auth\n" + code],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    seen: object = json.loads(result.stdout)
    return seen


@pytest.mark.parametrize("name", sorted(LIGHT_NAMES))
def test_each_light_name_is_the_one_msal_exports(name: str) -> None:
    """Each name taken from a submodule is the very object msal's own __init__.py exports."""
    assert getattr(importlib.import_module(LIGHT_NAMES[name]), name) is getattr(msal, name)


@pytest.mark.e2e
def test_signing_in_needs_no_requests_stack() -> None:
    """After the exporter's import, the names a refresh-token sign-in uses load neither requests,
    urllib3 nor charset_normalizer."""
    seen = _fresh("import msal\n"
                  "apps = [msal.ConfidentialClientApplication, msal.PublicClientApplication, msal.TokenCache,"
                  " msal.SerializableTokenCache, msal.ClientApplication, msal.authority, msal.exceptions]\n"
                  "stack = {'requests', 'urllib3', 'charset_normalizer'}\n"
                  "print(json.dumps(sorted(set(sys.modules) & stack)))")
    assert seen == []


@pytest.mark.e2e
def test_managed_identity_names_load_msal_whole() -> None:
    """The first other name runs msal's own __init__.py: managed identity and __version__ are there."""
    seen = _fresh("import msal\n"
                  "print(json.dumps([msal.ManagedIdentityClient.__module__, msal.__version__,"
                  " 'requests' in sys.modules]))")
    assert seen == ["msal.managed_identity", msal.__version__, True]


@pytest.mark.e2e
def test_a_name_msal_does_not_have_is_an_attribute_error() -> None:
    """A name msal does not define is still an AttributeError, after its __init__.py has run."""
    seen = _fresh("import msal\n"
                  "try:\n    msal.NoSuchThing\n"
                  "except AttributeError as err:\n    print(json.dumps(str(err)))")
    assert seen == "module 'msal' has no attribute 'NoSuchThing'"

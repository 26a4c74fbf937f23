"""msal, without the requests stack that only its managed identity client uses.

Since msal 1.38, msal/__init__.py imports msal.managed_identity, which imports requests, urllib3
and charset_normalizer at module level (Service Fabric needs a requests.Session): 5.9 MiB of RSS
in a process that has httpx already (bench, memory section). msal itself means requests to be
lazy, since its HTTP client is the caller's choice (AzureAD/microsoft-authentication-library-for-
python#423, made lazy by #454). The exporter hands MSAL its own httpx client, so only a
managed_identity credential needs that stack.

`install()` registers msal's package before its __init__.py runs. The package's own names come
from the submodule that defines them; the first name that is not listed here (ManagedIdentityClient
and the rest) runs msal's real __init__.py, so `msal.X` means what it always meant. Call it before
the first `import msal`; when msal is already imported it does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from typing import Any

# msal/__init__.py's names that need no managed identity, by the submodule that defines them.
# tests/test_msal_package.py checks each against msal's own package.
LIGHT_NAMES = {
    "ClientApplication": "msal.application",
    "ConfidentialClientApplication": "msal.application",
    "PublicClientApplication": "msal.application",
    "TokenCache": "msal.token_cache",
    "SerializableTokenCache": "msal.token_cache",
}


def install() -> None:
    """Put msal's package in sys.modules with its __init__.py deferred (see the module docstring)."""
    if "msal" in sys.modules:
        return
    spec = importlib.util.find_spec("msal")
    if spec is None or spec.loader is None:
        raise ImportError("No module named 'msal'", name="msal")
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)
    lock = threading.Lock()
    initialised = False

    def __getattr__(name: str) -> Any:  # PEP 562: a name the package does not have yet
        nonlocal initialised
        if name in LIGHT_NAMES:
            return getattr(importlib.import_module(LIGHT_NAMES[name]), name)
        with lock:
            if not initialised:
                initialised = True
                loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'msal' has no attribute {name!r}") from None

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["msal"] = package

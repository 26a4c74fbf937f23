"""The exporter's config: load and validate the YAML, reporting every error at once with its path.

`types` and `yamlio` load nothing else of the exporter, so the token provider and the web config can
import them without the schema, which knows every collector. The schema's names are re-exported
here lazily for the same reason: importing `exporter.config.types` runs this file first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.config.types import (
    AUTH_METHODS,
    AuthConfig,
    AuthMethod,
    ClientAssertion,
    Config,
    KeyVaultStore,
    ManagedIdentity,
    Secret,
    TenantConfig,
)
from exporter.config.yamlio import (
    ConfigError,
    ErrorList,
    key_text,
    load_file,
    load_yaml,
    parse_duration,
    shown,
)

if TYPE_CHECKING:
    from exporter.config.schema import load_config, parse_config

__all__ = ["AUTH_METHODS", "AuthConfig", "AuthMethod", "ClientAssertion", "Config", "ConfigError",
           "ErrorList", "KeyVaultStore", "ManagedIdentity", "Secret", "TenantConfig", "key_text",
           "load_config", "load_file", "load_yaml", "parse_config", "parse_duration", "shown"]

_SCHEMA_NAMES = {"load_config", "parse_config"}


def __getattr__(name: str) -> Any:
    if name in _SCHEMA_NAMES:
        from exporter.config import schema
        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

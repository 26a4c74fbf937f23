"""Prometheus exporter for Microsoft Partner Center delegated admin (DAP) statistics."""

from exporter import msal_package
from exporter.version import VERSION as __version__

# Before any module of this package imports msal: its requests stack only for managed identity.
msal_package.install()

__all__ = ["__version__"]

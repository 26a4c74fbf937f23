"""Prometheus exporter for Microsoft Partner Center delegated admin (DAP) statistics."""

from exporter.version import VERSION as __version__

__all__ = ["__version__"]

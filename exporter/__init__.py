"""Prometheus exporter for Microsoft Partner Center delegated admin (DAP) statistics."""

__version__ = "0.1.0"

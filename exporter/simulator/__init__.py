"""Fake Microsoft identity platform and Partner Center, for the demo and the tests."""

from exporter.simulator.app import Fault, Simulator

__all__ = ["Fault", "Simulator"]

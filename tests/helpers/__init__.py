"""Helpers shared by test modules; a test module imports from here or conftest, never from
another test module."""

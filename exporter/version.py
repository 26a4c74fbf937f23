"""Which build this is: the version and commit setuptools-scm wrote at build time."""

from __future__ import annotations

import platform

_version: str
_node: str | None
try:
    from exporter._version import revision as _node
    from exporter._version import version as _version
except ImportError:  # a source tree that was never built or installed
    _version, _node = "0.0.0", None

VERSION: str = _version
# setuptools-scm names a git commit "g<hash>"; Go exporters' build_info carries the bare hash.
REVISION: str = (_node or "unknown").removeprefix("g")
PYTHON_VERSION: str = platform.python_version()

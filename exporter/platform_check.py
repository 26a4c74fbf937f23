"""The entry point's first step: refuse Windows in one line, before anything imports fcntl."""

from __future__ import annotations

import sys
from collections.abc import Sequence

UNSUPPORTED = ("partnercenter-exporter runs on Linux and macOS, not Windows (it locks its token cache "
               "with flock and reloads on SIGHUP); on Windows, run the container image with Docker "
               "Desktop, or install it in WSL 2")


def main(argv: Sequence[str] | None = None) -> int:
    if sys.platform == "win32":
        print(UNSUPPORTED, file=sys.stderr)
        return 2
    # Imported only here: on Windows the import itself would fail (fcntl).
    from exporter.cli import main as run

    return run(argv)

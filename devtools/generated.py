"""Generated files: write them, or with --check report the ones that are out of date."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def sync(outputs: Mapping[Path, str], *, check: bool, command: str) -> int:
    """Write each file whose text differs; with `check`, write nothing and exit 1 if any differs."""
    stale = [path for path, text in outputs.items() if not (path.exists() and path.read_text() == text)]
    if check:
        if stale:
            names = ", ".join(path.name for path in stale)
            print(f"out of date: {names}; run python -m {command}", file=sys.stderr)
            return 1
        return 0
    for path in stale:
        path.write_text(outputs[path])
    return 0

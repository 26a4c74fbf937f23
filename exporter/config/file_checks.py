"""Checks on the files the config names that hold secrets: the token cache's directory, mode and format."""

from __future__ import annotations

import json
import os
from pathlib import Path

from exporter.config.walker import Walker
from exporter.config.yamlio import os_reason
from exporter.files import TOKEN_CACHE_LIMIT, FileReadError, read_text
from exporter.token_store import is_msal_cache


def check_token_cache(c: Walker, path: Path, where: str) -> None:
    directory = path.parent
    if not directory.is_dir():
        c.add(where, f"directory {directory} does not exist; create it "
                     f"(the rotating refresh token is kept there)")
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        c.add(where, f"directory {directory} is not writable by this user; "
                     f"the refresh token rotates and must be saved")
        return
    if path.exists():
        try:
            mode = path.stat().st_mode & 0o777
            cache = json.loads(read_text(path, TOKEN_CACHE_LIMIT) or "{}")
        except FileReadError as err:
            c.add(where, str(err))
            return
        except OSError as err:
            c.add(where, f"cannot read {path}: {os_reason(err)}")
            return
        except (ValueError, RecursionError):
            c.add(where, f"{path} is not a valid token cache (not JSON); move it away and run login again")
            return
        if mode & 0o077:
            # It holds a refresh token that opens every customer's tenant for 90 days.
            c.add(where, f"{path} is readable by others (mode {mode:04o}); it holds a refresh token: "
                         f"run chmod 600 {path}")
        if not is_msal_cache(cache):
            c.add(where, f"{path} is JSON but not an MSAL token cache; move it away and run login again")


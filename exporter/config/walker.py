"""The exporter config's walker: the error list, plus reading strings, durations, paths and secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter.config.types import Secret
from exporter.config.yamlio import ErrorList, join_path, parse_duration, shown, type_name
from exporter.files import SECRET_LIMIT, FileReadError, read_text


class Walker(ErrorList):
    """The exporter config's walker: errors, plus reading strings, durations, paths and secrets."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        super().__init__()
        self.environ = environ
        self.base_dir = base_dir
        # Not errors: the config works, but a file holding a secret is readable by others.
        self.warnings: list[str] = []

    def warn_if_shared(self, file: Path, where: str, holds: str) -> None:
        """Warn when a file holding a secret is readable by others, or by a group this process is
        not in (a group of its own, such as Kubernetes' fsGroup or the systemd unit's, is fine)."""
        try:
            info = os.stat(file)
        except OSError:
            return  # reading it worked a moment ago; the next load says what changed
        mode = info.st_mode & 0o777
        own_group = info.st_gid in {os.getegid(), *os.getgroups()}
        if not (mode & 0o004 or (mode & 0o040 and not own_group)):
            return
        readers = "others" if mode & 0o004 else f"group {info.st_gid}"
        if info.st_uid == os.geteuid():
            fix = f"run chmod 0400 {file}"
        elif own_group:
            fix = f"run chmod 0440 {file}"
        else:
            fix = f"give it to this user (chown {os.geteuid()}) and run chmod 0400 {file}"
        self.warnings.append(f"{where}: {file} is readable by {readers} (mode {mode:04o}); "
                             f"it holds {holds}: {fix}")

    def string(self, data: dict[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None) -> str | None:
        value = data.get(key)
        where = join_path(path, key)
        if value is None:
            if required:
                self.add(where, "required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(where, f"must be a non-empty string, got {type_name(value)}")
            return default
        return value.strip()

    def duration(self, data: dict[str, Any], key: str, path: str, default: float) -> float:
        value = data.get(key)
        where = join_path(path, key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.add(where, f"write durations with a unit, like 30s, 15m or 1h (got {shown(value)})")
            return default
        try:
            return parse_duration(value.strip())
        except ValueError as err:
            self.add(where, str(err))
            return default

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        # Resolved, so two spellings of one file compare equal.
        return (candidate if candidate.is_absolute() else self.base_dir / candidate).resolve()

    def secret(self, data: dict[str, Any], name: str, path: str, *, required: bool,
               required_why: str = "") -> Secret | None:
        """Read `<name>_file` or `<name>_env`."""
        file_key, env_key = f"{name}_file", f"{name}_env"
        file_value = self.string(data, file_key, path)
        env_value = self.string(data, env_key, path)
        if file_value and env_value:
            self.add(join_path(path, env_key), f"set either {file_key} or {env_key}, not both")
            return None
        if file_value:
            secret_path = self.path(file_value)
            assert secret_path is not None
            try:
                text = read_text(secret_path, SECRET_LIMIT).strip()
            except FileReadError as err:
                self.add(join_path(path, file_key), str(err))
                return None
            if not text:
                self.add(join_path(path, file_key), f"file {secret_path} is empty")
                return None
            self.warn_if_shared(secret_path, join_path(path, file_key), "a secret")
            return Secret(text, f"file {secret_path}")
        if env_value:
            text = self.environ.get(env_value, "").strip()
            if not text:
                self.add(join_path(path, env_key), f"environment variable {env_value} is not set or empty")
                return None
            return Secret(text, f"environment variable {env_value}")
        if required:
            self.add(join_path(path, file_key), f"required{required_why}; or set {env_key}")
        return None

"""The exporter config's walker: the error list, plus reading strings, durations, paths and secrets."""

from __future__ import annotations

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

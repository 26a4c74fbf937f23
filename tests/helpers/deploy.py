"""What the deploy tests share: a container's files as its mounts lay them out, and flag values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ContainerFiles:
    """A container's filesystem as its mounts make it, laid out under a host directory.

    Only what a mount provides exists here, so a config that names a path no mount covers fails
    its check, as it would in the container.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, container_path: str) -> Path:
        assert container_path.startswith("/"), f"{container_path} is not absolute"
        return self.root / container_path.lstrip("/")

    def bind(self, source: Path, target: str) -> None:
        link = self.path(target)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)

    def volume(self, target: str) -> None:
        self.path(target).mkdir(parents=True, exist_ok=True)

    def file(self, target: str, text: str) -> None:
        path = self.path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def config_for_host(self, container_config: str, out: Path) -> Path:
        """The exporter config at that container path, with every `*_file` path moved under the root."""
        config = yaml.safe_load(self.path(container_config).read_text())

        def move(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: str(self.path(v)) if k.endswith("_file") and isinstance(v, str) else move(v)
                        for k, v in node.items()}
            if isinstance(node, list):
                return [move(item) for item in node]
            return node

        out.write_text(yaml.safe_dump(move(config)))
        return out


def flag_value(args: list[str], flag: str) -> str:
    """The value of `--flag=value` or `--flag value` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return args[i + 1]
    raise AssertionError(f"{flag} is not in {args}")

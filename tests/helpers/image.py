"""A stand-in for the Dockerfile's base image, built from Debian's own packages, and a way to run
commands in an image, for machines with no Docker engine (platform-facts: podman, buildah and
mmdebstrap work; `podman run` cannot set rlimits, `buildah run --isolation chroot` can run)."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

BASE = "python:3.11-slim-bookworm"  # the Dockerfile's FROM
PACKAGES = "python3.11,python3-venv,python-is-python3,ca-certificates"


def _machine_settings() -> list[str]:
    """mmdebstrap hooks that copy this machine's CA bundle and pip settings into the base: the
    build's pip then reaches the registry as this machine does (mirror, proxy CA). They belong in the
    stand-in base, never in the Dockerfile."""
    bundle = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile
    hooks = [f"--customize-hook=copy-in {bundle} /etc/ssl/certs"] if Path(bundle).is_file() else []
    if bundle and Path(bundle).name != "ca-certificates.crt":
        hooks.append(f'--customize-hook=cp "$1/etc/ssl/certs/{Path(bundle).name}" '
                     f'"$1/etc/ssl/certs/ca-certificates.crt"')
    if Path("/etc/pip.conf").is_file():
        hooks.append("--customize-hook=copy-in /etc/pip.conf /etc")
    if Path("/etc/xdg/pip").is_dir():
        hooks += ['--customize-hook=mkdir -p "$1/etc/xdg"', "--customize-hook=copy-in /etc/xdg/pip /etc/xdg"]
    return hooks


def _pip_environment() -> list[str]:
    """`podman import --change ENV` lines for the pip settings this machine keeps in its environment."""
    keep = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_DEFAULT_TIMEOUT")
    return [f"--change=ENV {name}={os.environ[name]}" for name in keep if os.environ.get(name)]


def stand_in_base(workdir: Path) -> str:
    """Build and tag the stand-in base unless this machine has it already; returns its name."""
    if subprocess.run(["podman", "image", "exists", BASE], check=False).returncode == 0:
        return BASE
    tarball = workdir / "base.tar"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={PACKAGES}",
                    *_machine_settings(), "bookworm", str(tarball)], check=True, timeout=900)
    subprocess.run(["podman", "import", *_pip_environment(), str(tarball), BASE], check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    tarball.unlink()
    return BASE


def build(root: Path) -> str:
    """Build the Dockerfile unchanged with scripts/build-image and buildah; returns the image tag."""
    result = subprocess.run([str(root / "scripts" / "build-image"), "--pull=never"], cwd=root,
                            env={**os.environ, "ENGINE": "buildah"}, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


class Container:
    """A working container of an image; commands run in it with chroot isolation, as its user,
    on the host's network."""

    def __init__(self, image: str) -> None:
        self.name = subprocess.run(["buildah", "from", "--pull=never", image], check=True,
                                   capture_output=True, text=True).stdout.strip()

    def command(self, *args: str) -> list[str]:
        return ["buildah", "run", "--isolation", "chroot", self.name, "--", *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def config(self) -> dict[str, Any]:
        """The image's Docker config (User, Healthcheck, ...), as the container carries it."""
        out = subprocess.run(["buildah", "inspect", self.name], check=True, capture_output=True,
                             text=True).stdout
        config: dict[str, Any] = json.loads(out)["Docker"]["config"]
        return config

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], check=False, capture_output=True)


def image_size(image: str) -> tuple[int, int]:
    """(the image's size, its base's size) in bytes, as podman counts them."""
    def size(name: str) -> int:
        out = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", name], check=True,
                             capture_output=True, text=True).stdout
        return int(re.sub(r"\D", "", out))
    return size(image), size(BASE)

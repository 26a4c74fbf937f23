"""What the documents name: versions, tags and images, and the repository files in their commands."""

from __future__ import annotations

import re
from pathlib import Path

from devtools import release

# The documents a newcomer follows, and the deploy files they apply.
DOCUMENT_GLOBS = ("*.md", "docs/*.md", "deploy/**/*", "mixin/**/*", "config.example.yaml")

_VERSION = r"v?\d+\.\d+\.\d+(?:[.+-][\w.]+)?"
# Each place that names one of our versions: a pip pin, an image tag, a kustomize tag, a git tag
# in a link or a jsonnet-bundler install.
_VERSION_REFERENCES = (
    rf"partnercenter-exporter==({_VERSION})",
    rf"partnercenter-exporter:({_VERSION})\b",
    rf"newTag: ({_VERSION})\b",
    rf"/releases/tag/({_VERSION})\b",
    rf"/compare/({_VERSION})\.\.\.",
    rf"/mixin@({_VERSION})\b",
)
# Ways to install something only a release makes: the package from PyPI, the image from GHCR.
_RELEASE_ONLY = (
    r"pipx? install partnercenter-exporter\b(?!==VERSION)",
    rf"{re.escape(release.RELEASED_IMAGE)}:(?!VERSION\b)[\w.-]+",
)


def documents(root: Path) -> list[Path]:
    found = {path for pattern in DOCUMENT_GLOBS for path in root.glob(pattern) if path.is_file()}
    return sorted(path for path in found if "secrets" not in path.parts)


def unproducible(root: Path) -> list[str]:
    """Each version, tag or image a document names that the repository cannot produce today:
    `file:line: text`. Only versions CHANGELOG.md lists as released can be named; before the first
    release, nothing from PyPI or GHCR can be installed."""
    version = release.released(root)
    released = {version, f"v{version}"} if version else set()
    problems = []
    for path in documents(root):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(root)}:{number}"
            for pattern in _VERSION_REFERENCES:
                problems += [f"{where}: {found} is not a release" for found in re.findall(pattern, line)
                             if found not in released]
            if version is None:
                problems += [f"{where}: {match.group(0)} exists only after a release"
                             for pattern in _RELEASE_ONLY for match in re.finditer(pattern, line)]
    return problems


# A word in a shell command that names a file of the repository; not the secrets a reader puts in
# a git-ignored folder, nor kubectl's `deploy/NAME` (a Deployment).
_REPO_PATH = re.compile(r"(?<![\w/.-])(?:\./)?((?:scripts|deploy(?!/partnercenter-exporter\b)|prometheus|"
                        r"alertmanager|grafana|mixin|docs|bench|devtools|tests|exporter)/(?![\w/-]*secrets/)[\w./*-]*[\w*]"
                        r"|config\.example\.yaml|Dockerfile)")
_MODULE = re.compile(r"python3? -m ((?:exporter|devtools|bench)(?:\.\w+)*)")


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", markdown, re.S)


def missing_files(markdown: str, root: Path) -> list[str]:
    """Each repository file or module a shell block of `markdown` names that does not exist."""
    missing = []
    for block in shell_blocks(markdown):
        for line in block.splitlines():
            command = line.split(" #")[0]
            missing += [name for name in _REPO_PATH.findall(command) if not list(root.glob(name))]
            for module in _MODULE.findall(command):
                base = root / module.replace(".", "/")
                if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                    missing.append(f"-m {module}")
    return missing

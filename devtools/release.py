"""The released version and the files that pin it; CHANGELOG.md's newest release is the one place.

    python -m devtools.release --check       exit 1 if a deploy file names another image than it should
    python -m devtools.release cut 0.2.0      move [Unreleased] to [0.2.0] and re-pin the deploy files
    python -m devtools.release notes 0.2.0    print that version's CHANGELOG section (release notes)

Until the first release there is no image to pull: the deploy files run the image
`scripts/build-image` tags `partnercenter-exporter:local`. From the first `cut` on they run the
released image from GHCR. The package's own version comes from the git tag (setuptools-scm); the
release workflow checks that the tag, CHANGELOG.md and these pins agree before it publishes anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = "CHANGELOG.md"
REPOSITORY = "https://github.com/partnercenter-exporter/partnercenter-exporter"
# What the release workflow pushes (ghcr.io/${{ github.repository }}), and what scripts/build-image
# tags from a checkout.
RELEASED_IMAGE = "ghcr.io/partnercenter-exporter/partnercenter-exporter"
LOCAL_IMAGE = "partnercenter-exporter"
LOCAL_TAG = "local"
_VERSION = r"\d+\.\d+\.\d+"
_RELEASE_HEADING = re.compile(rf"^## \[({_VERSION})\] - (\d{{4}}-\d{{2}}-\d{{2}})$", re.M)


def _name_and_tag(version: str | None) -> tuple[str, str]:
    return (RELEASED_IMAGE, version) if version else (LOCAL_IMAGE, LOCAL_TAG)


def image(version: str | None) -> str:
    """The image a deploy file runs: the release's from GHCR, or the local build before any release."""
    return ":".join(_name_and_tag(version))


def _kustomize_image(version: str | None) -> str:
    name, tag = _name_and_tag(version)
    return f"    newName: {name}\n    newTag: {tag}"


def _compose_image(version: str | None) -> str:
    # A local build is never pulled: without `scripts/build-image` first, Compose says "No such image".
    return (f"image: ${{PARTNERCENTER_EXPORTER_IMAGE:-{image(version)}}}"
            + ("" if version else "\n    pull_policy: never"))


def _overlay_name(version: str | None) -> str:
    return f"     - name: {_name_and_tag(version)[0]}"


# Where a deploy file names the image: a file relative to the root, a pattern whose one group is
# the pin, and the pin's text for a released version (None: nothing released yet). Every file
# must match at least once.
PINS: tuple[tuple[str, str, Callable[[str | None], str]], ...] = (
    ("deploy/kubernetes/kustomization.yaml",
     r"\n  - name: partnercenter-exporter\n(    newName: \S+\n    newTag: \S+)\n", _kustomize_image),
    ("deploy/compose/compose.yaml",
     r"(image: \$\{PARTNERCENTER_EXPORTER_IMAGE:-[^}]+\}(?:\n    pull_policy: \w+)?)\n", _compose_image),
    ("docs/deployment.md", r"# Only to run from your own registry.*\n(     - name: \S+)\n", _overlay_name),
)


class ReleaseError(Exception):
    """A release step that cannot go ahead; the message says why and what to do."""


def released(root: Path = ROOT) -> str | None:
    """The newest version CHANGELOG.md lists as released; None before the first release."""
    match = _RELEASE_HEADING.search((root / CHANGELOG).read_text())
    return match.group(1) if match else None


def mismatches(root: Path = ROOT) -> list[str]:
    """Each pin that does not name the released image (or, before a release, the local build)."""
    version = released(root)
    problems = []
    for name, pattern, pin in PINS:
        found = re.findall(pattern, (root / name).read_text())
        if not found:
            problems.append(f"{name}: no image pin matching {pattern!r}")
        want = pin(version)
        problems += [f"{name}: pins {text.strip()!r}, but {CHANGELOG}'s newest release "
                     f"({version or 'none yet'}) needs {want.strip()!r}" for text in found if text != want]
    return problems


def notes(version: str, root: Path = ROOT) -> str:
    """The CHANGELOG section of one release, without its heading."""
    text = (root / CHANGELOG).read_text()
    match = re.search(rf"^## \[{re.escape(version)}\] - .*?\n(.*?)(?=^## |^\[)", text, re.M | re.S)
    if match is None:
        raise ReleaseError(f"{CHANGELOG}: no section for {version}; "
                           f"run python -m devtools.release cut {version}")
    return match.group(1).strip() + "\n"


def cut(version: str, today: dt.date, root: Path = ROOT) -> None:
    """Turn [Unreleased] into `version` dated `today`, and pin every deploy file to its image."""
    if not re.fullmatch(_VERSION, version):
        raise ReleaseError(f"version: expected MAJOR.MINOR.PATCH such as 1.2.3, got {version!r}")
    previous = released(root)
    if previous and tuple(map(int, version.split("."))) <= tuple(map(int, previous.split("."))):
        raise ReleaseError(f"version: {version} is not newer than the released {previous}")
    path = root / CHANGELOG
    text = path.read_text()
    section = re.search(r"^## \[Unreleased\]\n(.*?)(?=^## |^\[|\Z)", text, re.M | re.S)
    if section is None or not section.group(1).strip():
        raise ReleaseError(f"{CHANGELOG}: [Unreleased] is empty; write down what changed first")
    text = text.replace("## [Unreleased]\n", f"## [Unreleased]\n\n## [{version}] - {today.isoformat()}\n", 1)
    link = (f"{REPOSITORY}/compare/v{previous}...v{version}" if previous
            else f"{REPOSITORY}/releases/tag/v{version}")
    text = re.sub(r"^\[Unreleased\]: .*$",
                  f"[Unreleased]: {REPOSITORY}/compare/v{version}...HEAD\n[{version}]: {link}",
                  text, count=1, flags=re.M)
    path.write_text(text)
    for name, pattern, pin in PINS:
        pinned, text = root / name, pin(version)

        def repin(match: re.Match[str], text: str = text) -> str:
            return match.group(0).replace(match.group(1), text)

        pinned.write_text(re.sub(pattern, repin, pinned.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a deploy file names another image than it should")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("cut", help="release [Unreleased] as VERSION").add_argument("version")
    sub.add_parser("notes", help="print VERSION's CHANGELOG section").add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "cut":
            cut(args.version, dt.date.today())
            print(f"CHANGELOG.md and the deploy files now say {args.version}. Review, commit, then:\n"
                  f"  git tag -a v{args.version} -m 'partnercenter-exporter {args.version}' && "
                  f"git push origin v{args.version}")
            return 0
        if args.command == "notes":
            sys.stdout.write(notes(args.version))
            return 0
        problems = mismatches()
    except ReleaseError as err:
        print(err, file=sys.stderr)
        return 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and not args.check:
        print(released() or "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

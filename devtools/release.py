"""The released version and the files that pin it; CHANGELOG.md's newest release is the one place.

    python -m devtools.release --check       exit 1 if a deploy file pins another version
    python -m devtools.release cut 0.2.0      move [Unreleased] to [0.2.0] and re-pin the deploy files
    python -m devtools.release notes 0.2.0    print that version's CHANGELOG section (release notes)

The package's own version comes from the git tag (setuptools-scm); the release workflow checks
that the tag, CHANGELOG.md and these pins agree before it publishes anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = "CHANGELOG.md"
REPOSITORY = "https://github.com/partnercenter-exporter/partnercenter-exporter"
_VERSION = r"\d+\.\d+\.\d+"
_RELEASE_HEADING = re.compile(rf"^## \[({_VERSION})\] - (\d{{4}}-\d{{2}}-\d{{2}})$", re.M)
# Where a deploy file pins the image: a file relative to the root, and a pattern whose one group
# is the version. Every file must match at least once.
PINS: tuple[tuple[str, str], ...] = (
    ("deploy/kubernetes/kustomization.yaml", rf"\n    newTag: ({_VERSION})\n"),
    ("deploy/compose/compose.yaml", rf"partnercenter-exporter:({_VERSION})\}}"),
    ("docs/deployment.md", rf"partnercenter-exporter:({_VERSION})\b"),
    ("docs/deployment.md", rf"newTag: ({_VERSION})\n"),
    ("deploy/systemd/README.md", rf"partnercenter-exporter==({_VERSION})\b"),
)


class ReleaseError(Exception):
    """A release step that cannot go ahead; the message says why and what to do."""


def released(root: Path = ROOT) -> str:
    """The newest version CHANGELOG.md lists as released."""
    match = _RELEASE_HEADING.search((root / CHANGELOG).read_text())
    if match is None:
        raise ReleaseError(f"{CHANGELOG}: no released version (a heading like '## [1.2.3] - 2026-01-31')")
    return match.group(1)


def mismatches(root: Path = ROOT) -> list[str]:
    """Each pin that is not the released version, as `file: pins X, CHANGELOG.md says Y`."""
    version = released(root)
    problems = []
    for name, pattern in PINS:
        found = re.findall(pattern, (root / name).read_text())
        if not found:
            problems.append(f"{name}: no version pin matching {pattern!r}")
        problems += [f"{name}: pins {pin}, {CHANGELOG} says {version}" for pin in found if pin != version]
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
    """Turn [Unreleased] into `version` dated `today`, and pin every deploy file to it."""
    if not re.fullmatch(_VERSION, version):
        raise ReleaseError(f"version: expected MAJOR.MINOR.PATCH such as 1.2.3, got {version!r}")
    previous = released(root)
    if tuple(map(int, version.split("."))) <= tuple(map(int, previous.split("."))):
        raise ReleaseError(f"version: {version} is not newer than the released {previous}")
    path = root / CHANGELOG
    text = path.read_text()
    section = re.search(r"^## \[Unreleased\]\n(.*?)(?=^## )", text, re.M | re.S)
    if section is None or not section.group(1).strip():
        raise ReleaseError(f"{CHANGELOG}: [Unreleased] is empty; write down what changed first")
    text = text.replace("## [Unreleased]\n", f"## [Unreleased]\n\n## [{version}] - {today.isoformat()}\n", 1)
    text = re.sub(r"^\[Unreleased\]: .*$",
                  f"[Unreleased]: {REPOSITORY}/compare/v{version}...HEAD\n"
                  f"[{version}]: {REPOSITORY}/compare/v{previous}...v{version}", text, count=1, flags=re.M)
    path.write_text(text)
    for name, pattern in PINS:
        pinned = root / name
        pinned.write_text(re.sub(pattern, lambda m: m.group(0).replace(m.group(1), version),
                                 pinned.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a deploy file pins another version")
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
        print(released())
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

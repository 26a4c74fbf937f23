"""Packaging and docs: README commands, CI entry, Dockerfile lint, and tables true to the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import platform_check
from exporter.auth import AAD_HINTS
from exporter.exposition import render
from exporter.model import REASONS
from tests.conftest import require_binary
from tests.helpers.samples import TODAY, sample_snapshot

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_first_two_commands_are_demo_and_test() -> None:
    """The README's first code block starts with the run (demo) and the test command."""
    block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["./scripts/demo", "./scripts/test"]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls scripts/test, and every script is executable."""
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
    for path in [ROOT / ".ci" / "run", ROOT / "bench" / "run", *sorted((ROOT / "scripts").iterdir())]:
        assert os.access(path, os.X_OK), f"{path} is not executable"


def test_the_full_run_starts_with_the_fast_tier_and_measures_branch_coverage() -> None:
    """scripts/test (which .ci/run calls) runs the fast tier before the end-to-end tier, so a fast
    failure stops CI within a minute, and fails the full run below the coverage floor."""
    script = (ROOT / "scripts" / "test").read_text()
    fast, slow = script.index('-m "not e2e"'), script.index("-m e2e")
    assert fast < slow
    assert '[ -z "$fast" ] || exit 0' in script[fast:slow]
    assert re.search(r"^COVERAGE_FLOOR=\d+$", script, re.M)
    assert '--cov-fail-under="$COVERAGE_FLOOR"' in script[fast:]


# Hosts that packages are downloaded from: the tree must reach them only through pip, npm and apt,
# which carry the machine's own index, mirror and CA settings.
_REGISTRY_HOSTS = ("pypi.org", "pythonhosted.org", "registry.npmjs.org", "registry.yarnpkg.com",
                   "deb.debian.org", "security.debian.org", "archive.ubuntu.com")


@pytest.mark.e2e
def test_no_package_registry_host_is_named_in_the_tree() -> None:
    """No tracked file names a package registry's download host (git grep finds none)."""
    result = subprocess.run(["git", "grep", "-n", "-I", "-F", *(f"-e{host}" for host in _REGISTRY_HOSTS),
                             "--", ".", ":!tests/test_packaging.py"],
                            cwd=ROOT, capture_output=True, text=True, check=False) \
        if (ROOT / ".git").exists() else None
    if result is None:
        pytest.skip("not a git checkout")
    assert result.returncode == 1, result.stdout


@pytest.mark.e2e
def test_the_fast_tier_passes_with_empty_library_caches(tmp_path: Path) -> None:
    """The fast tier passes on a machine where no library has a cache yet: with MPLCONFIGDIR and
    XDG_CACHE_HOME empty, a library that starts a process to build one (matplotlib runs fc-list)
    fails the tier at collection, as it did on fresh machines."""
    for name in ("mpl", "cache"):
        (tmp_path / name).mkdir()
    env = {**os.environ, "PCX_TEST_TIER": "fast", "MPLCONFIGDIR": str(tmp_path / "mpl"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "not e2e", "-q", "-n", "2", "-x",
                             "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'basetemp'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\d+ passed", result.stdout)


@pytest.mark.e2e
def test_dockerfile_is_hadolint_clean() -> None:
    """hadolint finds nothing in the Dockerfile."""
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else require_binary("hadolint")
    result = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_runs_as_non_root_without_a_shell_and_with_state_on_a_volume() -> None:
    """The Dockerfile's final stage: numeric non-root USER, exec-form ENTRYPOINT, state VOLUME."""
    final = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", final, re.MULTILINE)
    assert user
    assert int(user.group(1)) != 0
    assert re.search(r'^ENTRYPOINT \["partnercenter-exporter"\]$', final, re.MULTILINE)
    assert 'VOLUME ["/var/lib/partnercenter-exporter"]' in final
    # With a read-only root filesystem Python must not try to write bytecode at run time.
    assert "PYTHONDONTWRITEBYTECODE=1" in final


def test_readme_links_the_security_reliability_and_deployment_docs() -> None:
    """The README links docs/security.md, docs/reliability.md and docs/deployment.md, and they exist."""
    for doc in ("docs/security.md", "docs/reliability.md", "docs/deployment.md"):
        assert f"]({doc})" in README
        assert (ROOT / doc).is_file()


@pytest.mark.e2e
def test_benchmark_quick_run_prints_every_section_with_its_targets() -> None:
    """`python -m bench --quick` runs every benchmark end to end (nginx, wrk, the naive peer, polls,
    access assignments, payloads, memory, soak) and prints each target with PASS or MISS, so the
    script cannot rot."""
    require_binary("wrk")
    require_binary("nginx")
    result = subprocess.run([sys.executable, "-m", "bench", "--quick"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for section in ("Scrape throughput and latency", "Naive prometheus_client peer", "Poll scaling",
                    "Scrape latency while 100 tenants are being polled", "GDAP access assignments",
                    "Cost of a large payload",
                    "Memory (RSS", "Soak"):
        assert f"\n== {section}" in out, section
    assert re.search(r"^~5,000 series, gzip, 10 conn: throughput +[\d,]+ req/s +nginx [\d,]+ req/s +\d+% "
                     r"of nginx +>= 60% +(PASS|MISS)$", out, re.MULTILINE)
    assert re.search(r"^1 tenant, refresh token: after start and first poll +\d+\.\d MiB .*<= 38 MiB +"
                     r"(PASS|MISS)$", out, re.MULTILINE)
    assert re.search(r"^3 tenants, idle .*: wake-ups +\d+\.\d per second +<= 1 per second +(PASS|MISS)$", out,
                     re.MULTILINE)
    assert re.search(r"^~5,000 series, gzip, against one nginx worker, 10 conn: throughput .* >= 90% +"
                     r"(PASS|MISS)$", out, re.MULTILINE)
    summary = re.search(r"^\d+ figures, \d+ PASS, (\d+) MISS; ", out, re.MULTILINE)
    assert summary
    # Every miss is named in the last line, and only then is there such a line.
    assert out.strip().splitlines()[-1].startswith("MISS: ") == (int(summary.group(1)) > 0)
    assert re.search(r"^\d+ faults injected; 0 failed scrapes$", out, re.MULTILINE)


def test_readme_metrics_table_matches_the_exposition() -> None:
    """The README's metrics table names exactly the metrics the exporter renders."""
    documented = set(re.findall(r"^\| `(partnercenter_[a-z_]+)`", README, re.MULTILINE))
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    # The text format names counters with their _total suffix, as the table does.
    rendered = set(re.findall(r"^# TYPE (\S+)", body, re.MULTILINE))
    assert documented == rendered


def test_readme_reason_and_error_tables_are_complete() -> None:
    """Every poll error reason and every mapped AADSTS code is documented."""
    for reason in REASONS:
        assert re.search(rf"^\| `{reason}` \|", README, re.MULTILINE), reason
    for code in AAD_HINTS:
        assert f"AADSTS{code}" in README, code


def test_windows_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """On Windows the entry point exits 2 with one line naming what to run instead."""
    monkeypatch.setattr(sys, "platform", "win32")
    assert platform_check.main(["--version"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Linux and macOS, not Windows" in err
    assert "container image" in err


def test_console_script_goes_through_the_platform_check() -> None:
    """pyproject's console script is the platform check, which hands over to the CLI."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"partnercenter-exporter": "exporter.platform_check:main"}

"""The documents tell the truth today: what they name exists, and their examples are the shipped files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from devtools.build_dashboards import DASHBOARDS
from tests.helpers.docs import documents, missing_files, unproducible
from tests.helpers.samples import github_anchor

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_no_document_names_a_version_tag_or_image_the_repository_cannot_produce() -> None:
    """No README, guide, deploy file or mixin file names a version, tag or image that is not a
    release in CHANGELOG.md; with none released yet, none names PyPI's package or GHCR's image."""
    assert unproducible(ROOT) == []


def test_the_version_check_finds_a_pin_of_an_unreleased_version(tmp_path: Path) -> None:
    """The check above can fail: a guide that pins 0.1.0 while CHANGELOG.md lists no release is
    named with its file and line, and so is an install from PyPI."""
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    guide = "Install:\n\n    pipx install partnercenter-exporter==0.1.0\n"
    (tmp_path / "docs" / "guide.md").write_text(guide)
    assert unproducible(tmp_path) == ["docs/guide.md:3: 0.1.0 is not a release",
                                      "docs/guide.md:3: pipx install partnercenter-exporter exists only "
                                      "after a release"]


def test_the_documents_checked_include_the_guides_and_deploy_files() -> None:
    """The version check reads the README, the guides, the systemd guide, the deploy manifests and
    the mixin's README (so a pin anywhere a newcomer looks is seen)."""
    names = {str(path.relative_to(ROOT)) for path in documents(ROOT)}
    assert {"README.md", "docs/deployment.md", "deploy/systemd/README.md", "mixin/README.md",
            "deploy/kubernetes/kustomization.yaml", "deploy/compose/compose.yaml", "SECURITY.md"} <= names


def test_readme_shell_snippets_name_files_that_exist() -> None:
    """Every repository file, script or Python module a shell snippet in the README names exists."""
    assert missing_files(README, ROOT) == []


def test_the_snippet_check_finds_a_missing_script() -> None:
    """The check above can fail: a snippet naming a script that is not in the repository is reported."""
    snippet = "```sh\n./scripts/no-such-script --flag\npython -m devtools.nothing\n```\n"
    assert missing_files(snippet, ROOT) == ["scripts/no-such-script", "-m devtools.nothing"]


def test_guides_shell_snippets_name_files_that_exist() -> None:
    """The same for every guide: docs/, the systemd guide, the mixin's README, SECURITY.md."""
    for path in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "systemd" / "README.md",
                 ROOT / "mixin" / "README.md", ROOT / "SECURITY.md"]:
        assert missing_files(path.read_text(), ROOT) == [], path.name


def test_readme_prometheus_example_is_the_shipped_file() -> None:
    """The README's prometheus.yml is prometheus/prometheus.yml, byte for byte."""
    block = re.search(r"`prometheus/prometheus.yml`\]\(prometheus/prometheus.yml\):\n\n```yaml\n(.*?)```",
                      README, re.S)
    assert block
    assert block.group(1) == (ROOT / "prometheus" / "prometheus.yml").read_text()


def test_readme_names_every_shipped_dashboard() -> None:
    """The README's list of dashboards has one entry per shipped dashboard, no more, no fewer."""
    grafana = README[README.index("### Grafana"):README.index("### Protecting")]
    listed = re.findall(r"^- \*\*(.+?)\*\*:", grafana, re.M)
    assert len(listed) == len(DASHBOARDS) == len(list((ROOT / "grafana" / "dashboards").glob("*.json")))
    assert "All four dashboards" in grafana


def test_configuration_reference_names_every_config_key() -> None:
    """docs/configuration.md has every key the config accepts (a new key without a line there fails)."""
    from exporter.config import schema
    from exporter.config.credentials import CREDENTIAL_KEYS

    reference = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", reference))
    keys = (schema._TOP_KEYS | schema._ENDPOINT_KEYS | schema._TENANT_KEYS | schema._AUTH_KEYS
            | schema._GRAPH_AUTH_KEYS | CREDENTIAL_KEYS) - {"client_secret", "refresh_token", "password"}
    assert keys - documented == set()
    assert "`token_store.azure_key_vault`" in reference
    for key in ("vault_url", "secret_name", "tenant_id", "client_id", "managed_identity"):
        assert f"| `{key}` |" in reference[reference.index("`token_store.azure_key_vault`:"):]


def test_readme_links_the_configuration_reference() -> None:
    """The README's configuration section sends readers to docs/configuration.md."""
    assert "(docs/configuration.md)" in README[README.index("### Configuration"):README.index("## Metrics")]


def test_every_documents_relative_links_and_anchors_resolve() -> None:
    """Each relative link or image in every Markdown document (the README's dashboard picture too)
    points at a file of the repository, and its #anchor at a heading of that file."""
    def anchors(markdown: Path) -> set[str]:
        return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)}

    checked = 0
    for document in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("deploy/**/*.md"),
                     *ROOT.glob("mixin/*.md")]:
        for link in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (document.parent / path).resolve() if path else document
            assert target.exists(), f"{document.name}: {link} does not exist"
            if anchor and target.suffix == ".md":
                assert anchor in anchors(target), f"{document.name}: {link} has no such heading"
            checked += 1
    assert checked > 50
    assert "](docs/dashboard-dap-overview.png)" in README

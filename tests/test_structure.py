"""The house's shape: imports run one way, and the simulator stands apart from the product."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import _NoProcesses

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("exporter", "devtools", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports() -> dict[str, set[str]]:
    """Each project module and the project modules it imports, wherever in the file the import is."""
    files = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                # `from exporter import app` imports the module exporter.app.
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in files and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_find_cycle_finds_one() -> None:
    """The cycle finder reports a cycle three modules long, so its silence below means something."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    """No module of exporter/, devtools/ or bench/ imports itself through others."""
    graph = project_imports()
    assert len(graph) > 30  # the walk found the project
    assert find_cycle(graph) is None


def test_simulator_does_not_import_the_product() -> None:
    """The simulator stands in for Microsoft: it imports nothing of the exporter outside itself."""
    graph = project_imports()
    for module in (name for name in graph if name.startswith("exporter.simulator")):
        product = {m for m in reachable(graph, module) if not m.startswith("exporter.simulator")}
        assert product <= {"exporter"}, f"{module} imports {sorted(product)}"


def test_demo_stands_below_the_command_line() -> None:
    """The demo wires an App; it never reaches the command line's module."""
    assert "exporter.cli" not in reachable(project_imports(), "exporter.demo")


def test_auth_and_the_web_config_read_only_the_config_types_and_reader() -> None:
    """The token provider and the web config import the config's types and YAML reader, never its
    schema, so loading them loads no collector."""
    graph = project_imports()
    for module in ("exporter.auth", "exporter.webconfig"):
        config = {m for m in graph[module] if m.startswith("exporter.config")}
        assert config <= {"exporter.config.types", "exporter.config.yamlio"}, f"{module}: {sorted(config)}"
        below = reachable(graph, module)
        assert not {m for m in below if m.startswith("exporter.collectors") or m == "exporter.config.schema"}


def test_the_config_package_loads_its_schema_only_when_asked() -> None:
    """exporter/config/__init__.py imports the schema only for type checkers and on first use, so
    importing exporter.config.types (which runs it) does not load every collector."""
    tree = ast.parse((ROOT / "exporter" / "config" / "__init__.py").read_text())
    at_import = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert "exporter.config.types" in at_import
    assert "exporter.config.schema" not in at_import


def test_the_http_protocol_knows_no_route() -> None:
    """The HTTP/1.1 protocol hands requests on: it imports neither the routes nor the server, and
    names no path."""
    graph = project_imports()
    assert not reachable(graph, "exporter.http.protocol") & {"exporter.http.routes", "exporter.http.server"}
    source = (ROOT / "exporter" / "http" / "protocol.py").read_text()
    for path in ("/metrics", "/healthz", "/readyz"):
        assert path not in source


def test_the_fast_tier_refuses_to_start_a_process() -> None:
    """Under `scripts/test --fast` a test that starts a process fails, naming the e2e mark."""
    with pytest.raises(RuntimeError, match=r"mark this test @pytest\.mark\.e2e"):
        _NoProcesses(["true"])


# Everything but the kinds' own modules, the registry, the demo's scenario and the config format
# (whose endpoint keys are per API) goes through the registry.
KIND_FREE = ("model", "client", "families", "poller", "exposition", "http/listen", "http/protocol",
             "http/routes", "http/server", "app", "auth", "cli")


def test_only_the_registry_and_the_kinds_name_a_kind() -> None:
    """No string in the pipeline's modules names a collector kind; they ask the registry."""
    from exporter.collectors import REGISTRY

    for module in KIND_FREE:
        path = ROOT / "exporter" / f"{module}.py"
        strings = [node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        named = {kind for kind in REGISTRY.names for text in strings if kind in text}
        assert named == set(), f"exporter/{module}.py names {sorted(named)}"


def test_no_test_module_imports_another() -> None:
    """Test modules share helpers through conftest and tests/helpers/, never through each other."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("tests.test_"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("tests.test_") for a in node.names), path.name


def test_no_reach_into_msal_extensions_internals() -> None:
    """The token cache stands on MSAL's public API: none of msal-extensions' private names, nor
    the package itself, appears in the product or its dependencies."""
    private = ("_lock_location", "_reload_if_necessary", "_persistence", "_last_sync", "msal_extensions")
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        text = path.read_text()
        assert [name for name in private if name in text] == [], path.name
    assert "msal-extensions" not in (ROOT / "pyproject.toml").read_text()

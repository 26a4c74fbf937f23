"""The strict YAML reader and the error list both config files report through: duplicate and complex
keys refused, aliases bounded, every problem a `path: message` line, values quoted short."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter.files import CONFIG_LIMIT, FileReadError, read_file

_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d))+$")
_DURATION_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# Control characters and line separators (from odd keys or values) would break one line per error.
_CONTROL_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(32), 127, 0x85, 0x2028, 0x2029]}


class ConfigError(Exception):
    """Raised with every problem found in a config; each line is `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = [line.translate(_CONTROL_ESCAPES) for line in errors]
        super().__init__("\n".join(self.errors))


def parse_duration(text: str) -> float:
    """Parse a Prometheus-style duration such as `30s`, `15m`, `1h30m` into seconds."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"invalid duration {shown(text)}: write a number and a unit, like 30s, 15m or 1h")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML otherwise silently overwrites, and
    keys that are not plain values (`? [a]`)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *shared`: construct_mapping merges it; keys written here override it
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark)
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Anchors and aliases share blocks (an auth block for several tenants); expanded, they must not
# add more than this many values, or a few lines could stand for billions ("billion laughs").
MAX_ALIAS_EXPANSION = 10_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _alias_expansion(root: yaml.Node, what: str) -> int:
    """How many values aliases add when the document is expanded, counted without expanding it."""
    sizes: dict[int, int] = {}
    path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, 10 * MAX_ALIAS_EXPANSION)
            continue
        if key in sizes:
            continue
        if key in path:
            raise ConfigError([f"{what}: an alias refers to a block that contains it; YAML like this "
                               f"has no end"])
        path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return sizes[id(root)] - len(sizes)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def load_yaml(data: bytes, what: str) -> Any:
    """Strict YAML (no duplicate or complex keys, bounded aliases) from a file's bytes.

    Every failure is a ConfigError naming `what`, whatever the bytes are."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"{what}: not UTF-8 text (invalid byte at offset {err.start}); save the "
                           f"file as UTF-8"]) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _alias_expansion(node, what) > MAX_ALIAS_EXPANSION:
            raise ConfigError([f"{what}: aliases expand to more than {MAX_ALIAS_EXPANSION} values; "
                               f"share smaller blocks, or write them out"])
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError([f"{what}: {_yaml_problem(err)}"]) from None
    except RecursionError:
        raise ConfigError([f"{what}: nested too deeply to read"]) from None
    except ValueError as err:  # such as an integer with more digits than Python converts
        raise ConfigError([f"{what}: a value cannot be read: {shown(str(err))}"]) from None
    finally:
        loader.dispose()


class ErrorList:
    """`path: message` errors collected while a config file is walked, all reported at once.

    Both config files (the exporter's and the web config) report through it.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, got {type_name(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                self.add(join_path(path, key_text(key)),
                         f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
        return {k: v for k, v in value.items() if isinstance(k, str) and k in allowed}


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 40, 40, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
MAX_SHOWN = 60


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, never longer than MAX_SHOWN characters,
    so a huge value (or an alias expanding to one) is never spelled out."""
    try:
        text = _SHOWN.repr(value)
    except Exception:  # such as an int with more digits than str() allows
        text = f"<{type_name(value)}>"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def key_text(key: Any) -> str:
    """A mapping key as a path segment: short, whatever the key is."""
    if isinstance(key, str):
        return key if len(key) <= 40 else key[:37] + "..."
    return shown(key)


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def os_reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


_Parsed = TypeVar("_Parsed")


def load_file(path: Path, what: str, parse: Callable[[Any], _Parsed]) -> _Parsed:
    """Read `path` as strict YAML and `parse` it. Nothing a file can hold ends in a traceback:
    every failure is a ConfigError whose lines start with `what`."""
    try:
        data = read_file(path, CONFIG_LIMIT)
    except FileReadError as err:
        reason = f"cannot read {path}: No such file or directory" if err.missing else str(err)
        raise ConfigError([f"{what}: {reason}"]) from None
    try:
        return parse(load_yaml(data, what))
    except ConfigError:
        raise
    except Exception as err:  # a check missed a case: still one line, no traceback
        raise ConfigError([f"{what}: cannot be used ({type(err).__name__}); this is a bug, "
                           f"please report it"]) from None

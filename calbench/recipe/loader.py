"""Reading a recipe file safely: a size limit, strict UTF-8, and a YAML loader that refuses what
would hang, crash or silently mislead later steps.

Why: a recipe may come from someone else. An anchor/alias "bomb" is a few hundred bytes that
expand to billions of nodes once anything walks the value (printing, hashing, writing
recipe.json); deep nesting overflows the recursive composer; a duplicate key silently keeps the
last value. Each is refused here as one line naming the line of the file, before anything runs.
Floats are read as YAML 1.2 writes them (`1e-3` is a number, as in JSON; YAML 1.1 made it a string).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import CollectionNode, MappingNode, ScalarNode

from calbench.errors import ConfigError

MAX_RECIPE_BYTES = 1 << 20          # 1 MiB: real recipes are a few kilobytes
MAX_NODES = 100_000                 # nodes after alias expansion
MAX_DEPTH = 64                      # nesting, after alias expansion
_MERGE_TAG = "tag:yaml.org,2002:merge"
_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class RecipeYAMLError(yaml.MarkedYAMLError):
    """A YAML document refused by `RecipeLoader` (reported like a syntax error, with its line)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem=problem, problem_mark=mark)


def _children(node: Any) -> list[Any]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, CollectionNode):
        return list(node.value)
    return []


def check_expanded_size(root: Any) -> None:
    """Refuse a node graph whose expansion (every alias copied out) is too big or too deep, or
    that refers to itself. Iterative post-order walk, each distinct node measured once."""
    measured: dict[int, tuple[int, int]] = {}      # id -> (expanded size, expanded depth)
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            kids = [measured[id(k)] for k in _children(node)]
            size, depth = 1 + sum(s for s, _ in kids), 1 + max((d for _, d in kids), default=0)
            if size > MAX_NODES:
                raise RecipeYAMLError(f"expands to more than {MAX_NODES} values (anchors and aliases)",
                                      node.start_mark)
            if depth > MAX_DEPTH:
                raise RecipeYAMLError(f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
            measured[key] = (size, depth)
        elif key in on_path:
            raise RecipeYAMLError("an alias refers to a value that contains it", node.start_mark)
        elif key not in measured:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _children(node) if id(k) not in measured)


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader with a nesting limit while composing, an expansion limit per document, and
    duplicate mapping keys refused."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise RecipeYAMLError(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        check_expanded_size(node)
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key_node.tag, key_node.value), key_node)
            if first is not key_node:
                raise RecipeYAMLError(f"duplicate key '{key_node.value}' (first on line "
                                      f"{first.start_mark.line + 1})", key_node.start_mark)
        return node


RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse one YAML document with `RecipeLoader` (raises yaml.YAMLError, RecipeYAMLError included)."""
    loader = RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_recipe_text(path: str) -> str:
    """The file's text: at most MAX_RECIPE_BYTES, strict UTF-8; ConfigError otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} on line {line}") from None


def read_recipe_yaml(path: str) -> Any:
    """Read and parse a recipe file; every problem is one ConfigError naming the file and line."""
    text = read_recipe_text(path)
    try:
        return yaml_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML: {where}{problem}") from None
    except RecursionError:       # a composer path the depth guard missed: still one line
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None

"""Strict, bounded YAML loading: safe types only, no duplicate keys, no alias or nesting bombs.

Errors are one-sentence `UserError`s naming the file, the line where known, and the fix; they
never quote the file's contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from netsize.errors import UserError

MAX_DEPTH = 32  # nested mappings/sequences, counted through aliases too
MAX_NODES = 100_000  # values in the fully expanded document, each alias counted in full
MAX_BYTES = 1024 * 1024  # recipe files larger than this are refused unread
_MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictYamlError(UserError):
    """YAML that parses but is refused: nested too deep, an alias bomb, a recursive alias or a
    duplicate key. Unlike a syntax error, this never means "the text was not meant as YAML"."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that bounds depth and alias expansion while composing, and refuses duplicates.

    Each node's expanded size and height are recorded once it is composed; an alias adds its
    target's size again, so a bomb is refused before anything is expanded. An alias to a node
    not yet complete points into itself and is refused as recursive.
    """

    def __init__(self, text: str, origin: str) -> None:
        super().__init__(text)
        self.origin = origin
        self._depth = 0
        self._path: list[str] = []
        self._stats: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
        self._mappings: dict[int, tuple[str, list[Node]]] = {}  # id -> (dotted path, keys)
        self._saw_alias = False

    def _refuse(self, line: int, problem: str, fix: str) -> UserError:
        return StrictYamlError(f"{self.origin} line {line + 1}: {problem}; {fix}.")

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        line = event.start_mark.line
        if isinstance(event, yaml.AliasEvent):
            self._saw_alias = True
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._stats:
                raise self._refuse(line, "an alias refers to the value that contains it",
                                   "replace the recursive alias with an explicit value")
            return super().compose_node(parent, index)
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested and self._depth >= MAX_DEPTH:
            raise self._refuse(line, f"nested more than {MAX_DEPTH} levels deep",
                               "flatten the recipe")
        if isinstance(parent, MappingNode):
            self._path.append(str(index.value) if isinstance(index, ScalarNode) else "?")
        elif isinstance(parent, SequenceNode):
            self._path.append(f"[{index}]")
        self._depth += nested
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nested
        if isinstance(node, MappingNode):
            dotted = ".".join(self._path).replace(".[", "[")
            self._mappings[id(node)] = (dotted, [key for key, _ in node.value])
        if parent is not None:
            self._path.pop()
        self._record(node, line)
        return node

    def _record(self, node: Node | None, line: int) -> None:
        """Store the expanded size and height of a just-composed node; refuse if too big."""
        if not isinstance(node, (MappingNode, SequenceNode)):
            self._stats[id(node)] = (1, 0)
            return
        pairs = node.value if isinstance(node, MappingNode) else [(c,) for c in node.value]
        stats = [self._stats[id(child)] for pair in pairs for child in pair]
        size = 1 + sum(s for s, _ in stats)
        height = 1 + max((h for _, h in stats), default=0)
        if size > MAX_NODES:
            fix = "; shrink the recipe"
            fix = " (YAML aliases); remove the aliases" if self._saw_alias else fix
            raise StrictYamlError(f"{self.origin}: expands to more than {MAX_NODES} values{fix}.")
        if height > MAX_DEPTH:
            raise self._refuse(line, f"nested more than {MAX_DEPTH} levels deep once its "
                               "aliases are expanded", "flatten the recipe or remove the aliases")
        self._stats[id(node)] = (size, height)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Refuse a key written twice in one mapping (merge keys `<<` may still override)."""
        where, keys = self._mappings.get(id(node), ("", [key for key, _ in node.value]))
        seen: set[Any] = set()
        for key_node in keys:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)  # safe scalars are all hashable
            if key in seen:
                name = " ".join((f"{where}.{key}" if where else str(key)).split())
                name = name if len(name) <= 80 else name[:77] + "..."
                raise self._refuse(key_node.start_mark.line, f"duplicate key '{name}'",
                                   "keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Turn value errors of scalars (a 13th month, a 5000-digit int) into YAML errors."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None, None, "invalid value", node.start_mark) from None


def load_yaml_text(text: str, origin: str) -> Any:
    """Parse one YAML document (SafeLoader's YAML 1.1 types) strictly; `origin` names the source."""
    loader = None
    try:
        loader = _StrictLoader(text, origin)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
    except yaml.reader.ReaderError as error:  # a control character; position is in characters
        where = f" at line {text.count(chr(10), 0, max(error.position, 0)) + 1}"
    except yaml.YAMLError:
        where = ""
    except RecursionError:
        raise StrictYamlError(f"{origin}: nested too deeply to read; flatten the recipe.") from None
    finally:
        if loader is not None:
            loader.dispose()
    raise UserError(f"{origin}: not valid YAML{where}; fix the syntax and retry.")


def load_yaml_file(path: Path) -> Any:
    """Read a UTF-8 YAML file of at most 1 MiB and parse it with `load_yaml_text`."""
    path = Path(path)
    where = path.absolute()
    if path.is_dir():
        raise UserError(f"{where}: is a directory, not a YAML file; pass the recipe file itself.")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{where}: no such file; check the path and retry.") from None
    except OSError as error:  # permission denied, I/O error, ...
        reason = error.strerror or "I/O error"
        raise UserError(f"{where}: cannot be read ({reason}); check the file and retry.") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: larger than 1 MiB; a recipe must be a small YAML file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise UserError(f"{path}: not a UTF-8 text file; save the recipe as UTF-8 YAML.")
    return load_yaml_text(text, str(path))

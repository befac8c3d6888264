"""Reading YAML into values that remember their line, within fixed limits.

The limits make any file, hostile or broken, end in a located :class:`ConfigError`
instead of a RecursionError, a ValueError or an exhausted host: the file's size, the
nesting depth (checked on the parser's events, before PyYAML's recursive composer runs),
and the number of values once aliases are expanded.  An alias is read once and shared
by every place that names it, as ``yaml.safe_load`` does, so a small "billion laughs"
file costs only its own size before the expanded count rejects it.  Merge keys
(``<<: *defaults``) are supported; keys written next to them win.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError, Problem

# libyaml's parser when PyYAML was built with it: the same events and marks, many times
# faster than the pure-Python one on a large file.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_VALUES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


@dataclass
class V:
    """A parsed value: a plain scalar, ``dict[str, V]`` or ``list[V]``, and its line."""

    value: Any
    line: int | None  # 1-based; None for dict input
    key_line: int | None = None


class Unreadable:
    """A scalar YAML could not turn into a value (reported once, where it was read)."""

    def __repr__(self) -> str:
        return "an unreadable value"


UNREADABLE = Unreadable()


class _Stop(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def show(x: Any) -> str:
    """A value as a message shows it (short; never fails)."""
    if isinstance(x, V):
        x = x.value
    if isinstance(x, dict):
        return "a mapping"
    if isinstance(x, list):
        return "a list"
    if x is None:
        return "nothing (null)"
    try:
        r = repr(x)
    except ValueError:  # an int too long to print
        return "a number too long to read"
    return r if len(r) <= 60 else r[:57] + "..."


class _Composer:
    """Nodes -> V, each node once (aliases share), counting expanded values."""

    def __init__(self, loader: Any, where: str, problems: list[Problem]) -> None:
        self.loader = loader
        self.where = where
        self.problems = problems
        self.done: dict[int, tuple[V, int]] = {}  # id(node) -> (value, expanded count)
        self.busy: set[int] = set()

    def at(self, node: yaml.Node) -> str:
        return f"{self.where}:{node.start_mark.line + 1}"

    def node(self, node: yaml.Node, path: str) -> tuple[V, int]:
        nid = id(node)
        if nid in self.done:
            return self.done[nid]
        if nid in self.busy:
            raise _Stop(Problem(self.at(node), path, "an alias refers to the value that contains it "
                                "(a recursive alias)", "point the alias at a value defined before it, "
                                "or write the value out"))
        self.busy.add(nid)
        if isinstance(node, yaml.MappingNode):
            v, n = self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            items = [self.node(c, path) for c in node.value]
            v, n = V([i[0] for i in items], node.start_mark.line + 1), 1 + sum(i[1] for i in items)
        else:
            v, n = V(self._scalar(node, path), node.start_mark.line + 1), 1
        self.busy.discard(nid)
        if n > MAX_VALUES:
            raise _Stop(Problem(self.at(node), path, f"the file holds more than {MAX_VALUES:,} values once "
                                "its aliases are expanded", "write a smaller configuration (aliases that "
                                "repeat aliases multiply)"))
        self.done[nid] = (v, n)
        return v, n

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as e:
            self.problems.append(Problem(self.at(node), path, f"the value cannot be read ({e})",
                                         "write a shorter plain value"))
            return UNREADABLE

    def _mapping(self, node: yaml.MappingNode, path: str) -> tuple[V, int]:
        out: dict[str, V] = {}
        count = 1
        merges: list[yaml.Node] = []
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if knode.tag == _MERGE:
                merges.append(vnode)
                continue
            k = self._scalar(knode, path) if isinstance(knode, yaml.ScalarNode) else knode
            if not isinstance(k, str):
                self.problems.append(Problem(f"{self.where}:{kline}", path, f"keys must be strings, got "
                                             f"{show(k) if not isinstance(k, yaml.Node) else 'a list or mapping'}",
                                             "quote the key"))
                continue
            sub = f"{path}.{k}" if path else k
            if k in out:
                self.problems.append(Problem(f"{self.where}:{kline}", sub, f"key '{k}' appears twice "
                                             f"(first on line {out[k].key_line})", "keep one of them"))
                continue
            item, n = self.node(vnode, sub)
            out[k] = V(item.value, item.line, kline)
            count += n
        for m in merges:
            count += self._merge(m, out, path)
        return V(out, node.start_mark.line + 1), count

    def _merge(self, vnode: yaml.Node, out: dict[str, V], path: str) -> int:
        sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        count = 0
        for s in sources:
            if not isinstance(s, yaml.MappingNode):
                self.problems.append(Problem(self.at(s), path, "'<<' merges a mapping (or a list of "
                                             "mappings) into this one", "write '<<: *name' where '&name' "
                                             "marks a mapping"))
                continue
            merged, n = self.node(s, path)
            count += n
            for k, item in merged.value.items():
                out.setdefault(k, item)
        return count


def _check_depth(text: str, where: str) -> None:
    """Reject deep nesting from the parser's events (iterative), before composing."""
    depth = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(where, ev.start_mark)
            elif isinstance(ev, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as e:
        if "nesting depth" in str(e.problem):  # libyaml's own cap, reached while scanning ahead
            raise _too_deep(where, e.problem_mark) from None
        raise


def _too_deep(where: str, mark: Any) -> ConfigError:
    line = f":{mark.line + 1}" if mark is not None else ""
    return ConfigError([Problem(f"{where}{line}", "", f"the values nest more than {MAX_DEPTH} levels deep",
                                "a callwatch configuration needs a few levels: flatten it")])


def _syntax_error(e: yaml.YAMLError, where: str) -> ConfigError:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        return ConfigError([Problem(f"{where}{line}", "", f"YAML syntax error: {what}",
                                    "fix the YAML at that line (indentation, a missing ':' or quote)")])
    return ConfigError([Problem(where, "", f"YAML error: {e}", "fix the YAML")])


def _text(path: Path) -> str:
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError([Problem(where, "", f"the file is {size:,} bytes; a configuration is at most "
                                       f"{MAX_BYTES:,}", "check that this is the configuration file")])
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(where, "", "file not found",
                                   "check the path, or set CALLWATCH_CONFIG to the right file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(where, "", f"cannot read the file ({e})",
                                   "make it a readable UTF-8 text file")]) from None


def read_yaml(path: Path, problems: list[Problem]) -> V:
    """The file's root value; problems that still let the rest be read go to ``problems``."""
    where = str(path)
    text = _text(path)
    try:
        _check_depth(text, where)
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        at = text[: e.position].count("\n") + 1
        ch = chr(e.character) if isinstance(e.character, int) else str(e.character)
        raise ConfigError([Problem(f"{where}:{at}", "", f"character {ch!r} is not allowed in YAML",
                                   "remove the control character (the file is not plain text there)")]) from None
    except yaml.YAMLError as e:
        raise _syntax_error(e, where) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return V({}, 1)
        return _Composer(loader, where, problems).node(node, "")[0]
    except _Stop as s:
        raise ConfigError([s.problem]) from None
    except yaml.YAMLError as e:
        raise _syntax_error(e, where) from None
    except RecursionError:  # a backstop: _check_depth should have stopped it
        raise ConfigError([Problem(where, "", "the values nest too deeply", "flatten the file")]) from None
    finally:
        loader.dispose()


def from_plain(x: Any, where: str, depth: int = 0) -> V:
    """A dict given to ``load()`` -> V, within the same depth limit."""
    if depth > MAX_DEPTH:
        raise ConfigError([Problem(where, "", f"the values nest more than {MAX_DEPTH} levels deep "
                                   "(or refer to themselves)", "pass a plain configuration dict")])
    if isinstance(x, Mapping):
        return V({str(k): from_plain(v, where, depth + 1) for k, v in x.items()}, None)
    if isinstance(x, (list, tuple)):
        return V([from_plain(v, where, depth + 1) for v in x], None)
    return V(x, None)

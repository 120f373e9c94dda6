"""Where each part of a sweep document was written: YAML (safe loader only) to plain Python data plus a
:class:`Marks` table (document path → file and line), so that a problem found later, even while validating an
expanded trial, still points at the line that caused it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.errors import SpecIssue
from orchestrator.keys import DocPath, YamlLoader, display_key

COMMAND_LINE = "<command line>"


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None


class Marks:
    """Where each path of the document was written; lookups fall back to the nearest enclosing path."""

    def __init__(self, file: str):
        self.file = file
        self._at: dict[DocPath, Location] = {}

    def set(self, path: DocPath, loc: Location, overwrite: bool = False) -> None:
        if overwrite or path not in self._at:
            self._at[path] = loc

    def locate(self, path: DocPath) -> Location:
        for n in range(len(path), -1, -1):
            if path[:n] in self._at:
                return self._at[path[:n]]
        return Location(self.file, None)

    def rebase(self, old: DocPath, new: DocPath) -> None:
        """Record the paths under ``old`` again under ``new`` (when a shorthand form is normalised)."""
        for path, loc in list(self._at.items()):
            if path[: len(old)] == old:
                self._at.setdefault(new + path[len(old):], loc)

    def issue(self, path: DocPath, message: str, key: str | None = None) -> SpecIssue:
        loc = self.locate(path)
        return SpecIssue(loc.file, loc.line, display_key(path) if key is None else key, message)


# --------------------------------------------------------------------------------------------------------- YAML
MAX_DEPTH = 32  # nesting levels; a sweep needs about five
MAX_VALUES = 200_000  # scalars, mappings and sequences in one document


class _Loader(YamlLoader):
    """The safe loader; only used to compose nodes and construct scalars, so nothing can execute code."""


def compose(text: str, file: str) -> tuple[Any, Marks, list[SpecIssue]]:
    """The document as plain data, the line of every path, and every problem found. Aliases (``*name``) are
    refused before anything is built (a few lines of them expand to gigabytes: "billion laughs"), and so are
    nesting deeper than MAX_DEPTH and documents of more than MAX_VALUES values."""
    marks, issues = Marks(file), []
    try:
        issues = _token_issues(text, file)
        if issues:
            return None, marks, issues
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            counter = [0]
            data = _to_python(node, loader, (), marks, issues, counter) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} started on line {exc.context_mark.line + 1})"
        return None, marks, [SpecIssue(file, line, "", f"invalid YAML: {exc.problem or exc}{context}")]
    except yaml.YAMLError as exc:
        return None, marks, [SpecIssue(file, None, "", f"invalid YAML: {' '.join(str(exc).split())[:200]}")]
    except _TooBig as exc:
        return None, marks, [SpecIssue(file, exc.line, "", str(exc))]
    return data, marks, issues


class _TooBig(Exception):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


def _token_issues(text: str, file: str) -> list[SpecIssue]:
    """Aliases and runaway nesting, found by scanning tokens (cheap, and before any node is built)."""
    depth = 0
    for token in yaml.scan(text, Loader=_Loader):
        line = token.start_mark.line + 1
        if isinstance(token, yaml.AliasToken):
            return [SpecIssue(file, line, "", f"YAML aliases (*{token.value}) are not supported in sweep files: "
                                              "write the value out (an alias can expand a small file into "
                                              "gigabytes)")]
        if isinstance(token, (yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken, yaml.BlockMappingStartToken,
                              yaml.BlockSequenceStartToken)):
            depth += 1
            if depth > MAX_DEPTH:
                return [SpecIssue(file, line, "", f"nested more than {MAX_DEPTH} levels deep; a sweep file "
                                                  "needs a handful")]
        elif isinstance(token, (yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken, yaml.BlockEndToken)):
            depth -= 1
    return []


def _to_python(node: yaml.Node, loader: _Loader, path: DocPath, marks: Marks, issues: list[SpecIssue],
               counter: list[int]) -> Any:
    counter[0] += 1
    if counter[0] > MAX_VALUES:
        raise _TooBig(node.start_mark.line + 1, f"the document holds more than {MAX_VALUES:,} values; a sweep "
                                                "file lists axes, not data")
    marks.set(path, Location(marks.file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, loader, path, marks, issues)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                issues.append(SpecIssue(marks.file, line, str(key)[:100], "keys must be text; quote it"))
                key = str(key)
            if key in out:
                first = marks.locate(path + (key,)).line
                issues.append(SpecIssue(marks.file, line, display_key(path + (key,)),
                                        f"duplicate key (first given on line {first}); keep one"))
            marks.set(path + (key,), Location(marks.file, line))
            out[key] = _to_python(value_node, loader, path + (key,), marks, issues, counter)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loader, path + (i,), marks, issues, counter) for i, item in enumerate(node.value)]
    return _scalar(node, loader, path, marks, issues)


def _scalar(node: yaml.Node, loader: _Loader, path: DocPath, marks: Marks, issues: list[SpecIssue]) -> Any:
    """A scalar as its tag reads it; a value its tag cannot read (``!!int abc``) is a located problem."""
    if not isinstance(node, yaml.ScalarNode):
        issues.append(SpecIssue(marks.file, node.start_mark.line + 1, display_key(path),
                                "a key must be a single value, not a list or a mapping"))
        return "<invalid key>"
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as exc:
        issues.append(SpecIssue(marks.file, node.start_mark.line + 1, display_key(path),
                                f"{node.tag.rsplit(':', 1)[-1]} value {node.value[:60]!r} cannot be read "
                                f"({type(exc).__name__})"))
        return None


@dataclass
class Provenance:
    """Where each trial key's value came from, for errors found while validating expanded trials."""

    marks: Marks
    paths: dict[str, DocPath] = field(default_factory=dict)

    def locate(self, key: str) -> tuple[Location, str]:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in self.paths:
                return self.marks.locate(self.paths[prefix]), prefix
        below = [k for k in self.paths if k.startswith(key + ".")] if key else []
        if below:
            return self.marks.locate(self.paths[below[-1]]), below[-1]
        return self.marks.locate(("base",)), key

"""YAML as ops write it: parsed with YAML 1.2's core schema, keeping where each value is written, and
advice for the syntax slips PyYAML reports in its own words."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
import yamlcore

if TYPE_CHECKING:  # the type only
    from postupload.core.ruleset import RuleSet

Position = tuple[int, int]
KEY = "\0key"  # positions[(*path, KEY)]: where the key of the value at `path` is written
DocPath = tuple[str | int, ...]


# libyaml's C parser when PyYAML was built with it (about 10x faster on large rule sets), with
# YAML 1.2's core schema either way, as JSON reads values: 1e6 is a number, yes/no/on/off strings.
LOADER: Any = yamlcore.CCoreLoader if yaml.__with_libyaml__ else yamlcore.CoreLoader


class Positions:
    """Where each value (and, under KEY, each key) of a document is written, found on demand by
    walking the parsed nodes: nothing is built for the values nobody asks about."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def get(self, at: DocPath, default: Position) -> Position:
        found = self.find(at)
        return found if found is not None else default

    def find(self, at: DocPath) -> Position | None:
        mark = self._mark(at)
        return (mark.line + 1, mark.column + 1) if mark is not None else None

    def __contains__(self, at: object) -> bool:
        return isinstance(at, tuple) and self._mark(at) is not None

    def __getitem__(self, at: DocPath) -> Position:
        found = self.find(at)
        if found is None:
            raise KeyError(at)
        return found

    def _mark(self, at: tuple[Any, ...]) -> yaml.Mark | None:
        key_wanted = bool(at) and at[-1] == KEY
        path = at[:-1] if key_wanted else at
        node = self.root
        for index, part in enumerate(path):
            if isinstance(node, yaml.MappingNode):
                entry = next(((key, value) for key, value in node.value if key.value == part), None)
                if entry is None:
                    return None
                if key_wanted and index == len(path) - 1:
                    return entry[0].start_mark
                node = entry[1]
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                node = node.value[part]
            else:
                return None
        if key_wanted or node is None:
            return None  # the document itself, or a list item, has no key
        return node.start_mark


def read_document(text: str) -> tuple[Any, Positions]:
    """Parse YAML (JSON is read the same way), keeping where each value is written."""
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return document, Positions(node)


def position(positions: Positions, at: DocPath) -> Position:
    for length in range(len(at), -1, -1):  # the nearest enclosing value that has a place
        found = positions.find(at[:length])
        if found is not None:
            return found
    return (0, 0)


TAB_ADVICE = "a tab: YAML is indented with spaces only; replace the tab with spaces"
# PyYAML's words for common slips, and what to do about each.
YAML_ADVICE = (
    ("found character '\\t'", TAB_ADVICE),
    ("tab character", TAB_ADVICE),  # libyaml's words when it names the tab at all
    (
        "mapping values are not allowed",
        "a ':' where a value was expected: quote a value that holds ': ' (\"a: b\"), or check this"
        " line's indentation against the line above",
    ),
    ("could not find expected ':'", "a key without its ':' (or a value running on from the line above)"),
    ("did not find expected key", "this line is not indented like the other keys of its map"),
    ("expected <block end>", "this line's indentation does not line up with the lines above it"),
    ("did not find expected '-' indicator", "a list item's '-' is missing, or the item is indented wrongly"),
    ("expected ',' or ']'", "a list [...] is not closed: add the ']' (or a ',' between items)"),
    ("expected ',' or '}'", "a map {...} is not closed: add the '}' (or a ',' between entries)"),
    ("found unexpected end of stream", "the file ends inside a quoted value or a [...] or {...}: close it"),
    ("found undefined alias", "a *name with no &name before it: define the anchor, or quote the value"),
    (
        "found unknown escape character",
        "a backslash in a double-quoted value: double it (\\\\) or use single quotes",
    ),
)


def yaml_advice(problem: str, context: str, found: str = "") -> str:
    """PyYAML's complaint, turned into what to do. `found` is the character the parser stopped
    at: libyaml says "found character that cannot start any token" without naming a tab."""
    if found == "\t":
        return f"{TAB_ADVICE} (YAML: {problem or context})"
    said = f"{context} {problem}"
    for words, advice in YAML_ADVICE:
        if words in said:
            return f"{advice} (YAML: {problem or context})"
    return problem or context


def character_at(text: str, line: int, column: int) -> str:
    """The character at a parser's mark (0-based line and column), or '' past the text."""
    lines = text.splitlines()
    return lines[line][column : column + 1] if line < len(lines) else ""


def rule_texts(ruleset: RuleSet) -> dict[str, list[tuple[int, str]]]:
    """Each rule as written in its file, by name: its lines, numbered, from its `- name:` item to
    the next rule's (or the file's end), blank lines at the end left out. The console shows these,
    not the rule re-serialized: what ops will find when they open the file."""
    texts: dict[str, list[tuple[int, str]]] = {}
    by_file: dict[str, list[Any]] = {}
    for rule in ruleset.rules:
        by_file.setdefault(rule.file, []).append(rule)
    for file, rules in by_file.items():
        lines = ruleset.sources.get(file, "").splitlines()
        starts = sorted(rules, key=lambda rule: rule.line)
        for rule, following in zip(starts, [*starts[1:], None], strict=True):
            end = following.line - 1 if following is not None else len(lines)
            numbered = [(number, lines[number - 1]) for number in range(rule.line, end + 1) if rule.line > 0]
            while numbered and not numbered[-1][1].strip():
                numbered.pop()
            texts[rule.name] = numbered
    return texts

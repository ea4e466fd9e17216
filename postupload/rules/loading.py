"""Loading rule files into a RuleSet, all or nothing, and matching notifications against it."""

from __future__ import annotations

import contextlib
import difflib
import gc
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import yaml
import yamlcore

from handlers import REGISTRY
from postupload.core.patterns import check_pattern
from postupload.core.placeholders import PLACEHOLDER, TEXT, placeholder_problems
from postupload.core.ruleset import Rule, RuleSet
from postupload.errors import Problem, RuleSetError
from postupload.rules import field_checks
from postupload.rules.schema import assemble
from postupload.rules.transformations import eager_text, text_problems, unknown_transformation_keys

RULE_SUFFIXES = (".yaml", ".yml", ".json")
log = logging.getLogger(__name__)


@cache
def rules_schema() -> dict[str, Any]:
    """The rule-file JSON Schema, assembled from the registered action kinds."""
    return assemble(REGISTRY.values())


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = rules_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # With its local $refs put in place: resolving them cost a third of loading 10,000 rules.
    return validator_class(_inlined(schema, schema.get("$defs", {})))


@cache
def _fast_validator() -> Any:
    """The same schema in jsonschema-rs (Rust, ~10x faster): it says whether a document is valid;
    only an invalid one goes through jsonschema, whose errors our messages are made from."""
    schema = rules_schema()
    return jsonschema_rs.validator_for(_inlined(schema, schema.get("$defs", {})))


def _schema_errors(document: Any) -> list[jsonschema.ValidationError]:
    """The document's schema errors, by path; none, at Rust speed, for a valid document."""
    try:
        if _fast_validator().is_valid(document):
            return []
    except (ValueError, TypeError):  # not JSON-shaped (a YAML key that is not a string): say why below
        pass
    found = [item for error in _validator().iter_errors(document) for item in _at_items(error)]
    return sorted(found, key=lambda e: list(map(str, e.absolute_path)))


def _at_items(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """A list that fits none of a field's alternatives ("a value or a list of them") is wrong in
    its items when the list alternative fails only there: say which items, by index, and why."""
    if error.validator not in ("oneOf", "anyOf") or not isinstance(error.instance, list):
        return [error]
    by_item: dict[int, list[jsonschema.ValidationError]] = {}
    for inner in error.context or []:
        if inner.relative_path and isinstance(inner.relative_path[0], int):
            by_item.setdefault(inner.relative_path[0], []).append(inner)
    if not by_item:
        return [error]
    return [jsonschema.exceptions.best_match(by_item[index]) for index in sorted(by_item)]


def _inlined(value: Any, definitions: dict[str, Any]) -> Any:
    """The schema with every "#/$defs/a/b" reference replaced by what it names (none is recursive)."""
    if isinstance(value, dict):
        reference = value.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/") and len(value) == 1:
            target: Any = definitions
            for part in reference.removeprefix("#/$defs/").split("/"):
                target = target[part]
            return _inlined(target, definitions)
        return {key: _inlined(item, definitions) for key, item in value.items() if key != "$defs"}
    if isinstance(value, list):
        return [_inlined(item, definitions) for item in value]
    return value


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory, in file-name order (tests under rules/tests are not rules)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RULE_SUFFIXES)


Position = tuple[int, int]
KEY = "\0key"  # positions[(*path, KEY)]: where the key of the value at `path` is written
KEY_PROBLEMS = {"E301", "E308", "W101"}  # problems with a key itself, shown where the key is
DocPath = tuple[str | int, ...]


def load_ruleset(directory: Path) -> RuleSet:
    """Every rule file of `directory`, checked; RuleSetError lists every problem found."""
    if not directory.is_dir():
        raise RuleSetError([Problem(str(directory), "rule directory does not exist", "E001")])
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for path in rule_files(directory):
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(Problem(str(path), f"cannot read: {error}", "E002"))
    if problems:
        raise RuleSetError(problems)
    return load_sources(sources)


FileResult = tuple[list[Rule], list[Problem], list[Problem]]  # rules, problems, warnings
# The files of the last set loaded, by path: (digest of the text, what loading it gave). Rules are
# frozen values, so a set made again from the same text can share them.
_loaded_files: dict[str, tuple[str, FileResult]] = {}


def load_sources(sources: dict[str, str]) -> RuleSet:
    """The rule set of these files (path -> text), checked; RuleSetError lists every problem found."""
    with _collector_paused():
        return _load_sources(sources)


# A load makes millions of objects, none of them garbage in cycles: with the cyclic collector on, it
# scans the growing heap again and again (10,000 rules: 1.5 s with it, 0.9 s without). It is paused
# while any thread loads, and runs as usual afterwards (for a job's garbage made meanwhile too).
_pause_lock = threading.Lock()
_pauses = 0
_resume = False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def _load_sources(sources: dict[str, str]) -> RuleSet:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    rules: list[Rule] = []
    loaded: dict[str, tuple[str, FileResult]] = {}
    for file, text in sources.items():
        # A reload reads again only the files that changed: each costs ~0.3 s per 1,000 rules.
        digest = hashlib.sha256(text.encode()).hexdigest()
        earlier = _loaded_files.get(file)
        result = earlier[1] if earlier is not None and earlier[0] == digest else load_text(file, text)
        loaded[file] = (digest, result)
        file_rules, file_problems, file_warnings = result
        rules += file_rules
        problems += file_problems
        warnings += file_warnings
    _loaded_files.clear()
    _loaded_files.update(loaded)
    problems += _duplicate_names(rules)
    if problems:
        raise RuleSetError(sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    version = content_version([(Path(file).name, text.encode()) for file, text in sources.items()])
    return RuleSet(rules, list(sources), version, warnings, dict(sources))


def content_version(files: list[tuple[str, bytes]]) -> str:
    """A short hash of the rule files' names and contents, to tell rule sets apart in metrics and logs."""
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:12]


def files_version(paths: list[Path]) -> str:
    """content_version of files on disk (one that cannot be read counts as empty)."""
    found = []
    for path in paths:
        try:
            found.append((path.name, path.read_bytes()))
        except OSError:
            found.append((path.name, b""))
    return content_version(found)


def load_text(file: str, text: str) -> tuple[list[Rule], list[Problem], list[Problem]]:
    """The rules of one file, every problem with it and every warning, each with its line and column."""
    try:
        document, positions = read_document(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        stopped_at = _character_at(text, mark.line, mark.column) if mark else ""
        message = f"syntax: {yaml_advice(str(error.problem or ''), str(error.context or ''), stopped_at)}"
        return [], [Problem(file, message, "E003", line=line, column=column)], []
    except yaml.YAMLError as error:
        return [], [Problem(file, f"syntax: {error}", "E003")], []

    def problem(at: DocPath, message: str, code: str) -> Problem:
        # On the key when the key is at fault (an unknown operator or field), else on the value.
        on_key = code in KEY_PROBLEMS and (*at, KEY) in positions
        line, column = positions[(*at, KEY)] if on_key else _position(positions, at)
        rule, inner = _rule_part(document, at)
        return Problem(file, message, code, rule=rule, path=inner, line=line, column=column)

    schema_errors = _schema_errors(document)
    invalid_at = {tuple(invalid.absolute_path) for invalid in schema_errors}
    problems = []
    for invalid in schema_errors:
        at = tuple(invalid.absolute_path)
        if invalid.validator == "additionalProperties" and isinstance(invalid.instance, dict):
            # One problem per unknown key, placed on the key itself.
            for key, message in unknown_keys(invalid):
                line, column = positions.get((*at, key, KEY), _position(positions, at))
                rule, inner = _rule_part(document, (*at, key))
                problems.append(
                    Problem(file, message, "E100", rule=rule, path=inner, line=line, column=column)
                )
        else:
            problems.append(problem(at, schema_message(invalid), "E100"))
    raw_rules = document.get("rules") if isinstance(document, dict) else None
    for index, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        if isinstance(raw, dict) and isinstance(raw.get("match"), dict):
            for found in check_pattern(raw["match"]):
                problems.append(problem(("rules", index, "match", *found.path), found.message, found.code))
        actions = raw.get("actions") if isinstance(raw, dict) else None
        for number, action in enumerate(actions if isinstance(actions, list) else []):
            for name, params in action.items() if isinstance(action, dict) else []:
                at = ("rules", index, "actions", number, name)
                slots = REGISTRY[name].slots if name in REGISTRY else {}
                for key, value in params.items() if isinstance(params, dict) else []:
                    for message in placeholder_problems(value, slots.get(key, TEXT), keys_too=True):
                        problems.append(problem((*at, key), message, "E401"))
                if name == "explicit" and isinstance(params, dict) and "eager" in params:
                    for where, message, code in eager_problems(params["eager"]):
                        if (*at, "eager", *where) not in invalid_at:  # said once, by the schema
                            problems.append(problem((*at, "eager", *where), message, code))
    if problems:
        return [], problems, []
    rules = [
        Rule(
            name=raw["name"],
            match=raw["match"],
            actions=[_with_eager_text(action) for action in raw["actions"]],
            file=file,
            description=raw.get("description", ""),
            enabled=raw.get("enabled", True),
            stop=raw.get("stop", False),
            line=_position(positions, ("rules", index))[0],
        )
        for index, raw in enumerate(document["rules"])
    ]
    warnings = [
        problem(("rules", index, *where), message, code)
        for index, rule in enumerate(rules)
        for where, message, code in field_checks.warnings(rule.effective_pattern, rule.actions)
    ]
    return rules, [], warnings


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


def _character_at(text: str, line: int, column: int) -> str:
    """The character at a parser's mark (0-based line and column), or '' past the text."""
    lines = text.splitlines()
    return lines[line][column : column + 1] if line < len(lines) else ""


def eager_problems(eager: Any) -> list[tuple[tuple[int, ...], str, str]]:
    """What keeps `eager` from shipping, at load, by position: E402 what cannot be made into the
    SDK's text, E403 what Cloudinary would refuse or the SDK would silently drop."""
    items = eager if isinstance(eager, list) else [eager]
    problems: list[tuple[tuple[int, ...], str, str]] = []
    for number, item in enumerate(items):
        where: tuple[int, ...] = (number,) if isinstance(eager, list) else ()
        if isinstance(item, dict) and PLACEHOLDER.search(json.dumps(item)):
            problems.append(
                (
                    where,
                    "a placeholder inside a transformation map cannot be filled; write this "
                    "transformation as text, e.g. 'c_scale,w_${width}'",
                    "E402",
                )
            )
            continue
        try:
            text = eager_text([item])
        except Exception as error:  # the SDK's own complaint about a map it cannot serialise
            problems.append((where, f"not a transformation the SDK can make: {error}", "E402"))
            continue
        if isinstance(item, dict):
            for key in unknown_transformation_keys(item):
                problems.append(
                    (where, f"unknown transformation parameter {key}: the SDK would drop it", "E403")
                )
        for message in text_problems(text):
            problems.append((where, f"Cloudinary would refuse this transformation: {message}", "E403"))
    return problems


def _with_eager_text(action: dict[str, Any]) -> dict[str, Any]:
    """An explicit action's `eager` as the SDK's text, made once here so planning stays pure."""
    ((name, params),) = action.items()
    if name != "explicit" or "eager" not in params:
        return action
    return {name: {**params, "eager": eager_text(params["eager"])}}


def unknown_keys(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """(key, message) for each key an object may not have, with the nearest allowed one."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = list(schema.get("properties", {}))
    if schema.get("maxProperties") == 1 and "explicit" in allowed:
        what = "action"
    elif "match" in allowed and "actions" in allowed:
        what = "rule key"
    else:
        what = "parameter"
    found = []
    for key in (key for key in error.instance if key not in allowed):
        if what == "rule key" and key in field_checks.field_names():
            message = f"'{key}' is a notification field: conditions go under match, as match: {{{key}: ...}}"
        else:
            guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            message = f"unknown {what} '{key}'{hint}; expected one of: {', '.join(allowed)}"
        found.append((str(key), message))
    return found


def schema_message(error: jsonschema.ValidationError) -> str:
    """The schema's complaint in the words of rule files: name what is wrong and what is allowed."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return "; ".join(message for _, message in unknown_keys(error))
    if error.validator == "pattern" and list(error.absolute_path)[-1:] == ["name"]:
        return (
            f"{error.instance!r} is not a valid rule name: use lowercase letters, digits, '.', '_' and '-',"
            " starting with a letter or digit (e.g. product-thumbnails)"
        )
    if error.validator in ("pattern", "oneOf", "anyOf") and schema.get("description"):
        return f"{error.instance!r} is not valid: {schema['description']}"
    return error.message


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


def _position(positions: Positions, at: DocPath) -> Position:
    for length in range(len(at), -1, -1):  # the nearest enclosing value that has a place
        found = positions.find(at[:length])
        if found is not None:
            return found
    return (0, 0)


def _rule_part(document: Any, at: DocPath) -> tuple[str | None, str]:
    """(rule name, path inside the rule) for a document path; the JSON path when not in a rule."""
    if len(at) >= 2 and at[0] == "rules" and isinstance(at[1], int):
        raw = document["rules"][at[1]]
        name = raw.get("name") if isinstance(raw, dict) else None
        return (name if isinstance(name, str) else f"#{at[1] + 1}"), _dotted(at[2:])
    return None, _dotted(at) or "$"


def _dotted(at: DocPath) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _duplicate_names(rules: list[Rule]) -> list[Problem]:
    first: dict[str, Rule] = {}
    problems = []
    for rule in rules:
        if rule.name in first:
            other = first[rule.name]
            message = f"name is already used at {other.file}:{other.line}; rule names must be unique"
            problems.append(
                Problem(rule.file, message, "E200", rule=rule.name, path="name", line=rule.line, column=1)
            )
        else:
            first[rule.name] = rule
    return problems

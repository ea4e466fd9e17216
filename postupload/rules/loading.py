"""Loading rule files into a RuleSet, all or nothing: each file read with positions, checked against
the schema, its patterns, placeholders and transformations, and every problem reported at its line."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from handlers import REGISTRY
from postupload.core.patterns import check_pattern
from postupload.core.placeholders import PLACEHOLDER, TEXT, placeholder_problems
from postupload.core.ruleset import Rule, RuleSet
from postupload.errors import Problem, RuleSetError
from postupload.rules import field_checks
from postupload.rules.schema import schema_errors, schema_message, unknown_keys
from postupload.rules.transformations import eager_text, text_problems, unknown_transformation_keys
from postupload.rules.yaml_source import (
    KEY,
    DocPath,
    character_at,
    position,
    read_document,
    yaml_advice,
)

RULE_SUFFIXES = (".yaml", ".yml", ".json")
log = logging.getLogger(__name__)


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory, in file-name order (tests under rules/tests are not rules)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RULE_SUFFIXES)


KEY_PROBLEMS = {"E301", "E308", "W101"}  # problems with a key itself, shown where the key is


def load_ruleset(directory: Path) -> RuleSet:
    """Every rule file of `directory`, checked; RuleSetError lists every problem found."""
    if not directory.is_dir():
        said = (
            "is a file, not a rule directory: give the directory that holds the rule files"
            if directory.exists()
            else "rule directory does not exist"
        )
        raise RuleSetError([Problem(str(directory), said, "E001")])
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
    global _loaded_files
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
    # One rebinding, not clear-then-fill: a load in another thread (the console's, a reload) sees the
    # old files or the new, and at worst reads a file again; entries are keyed by their text's digest.
    _loaded_files = loaded
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
        stopped_at = character_at(text, mark.line, mark.column) if mark else ""
        message = f"syntax: {yaml_advice(str(error.problem or ''), str(error.context or ''), stopped_at)}"
        return [], [Problem(file, message, "E003", line=line, column=column)], []
    except yaml.YAMLError as error:
        return [], [Problem(file, f"syntax: {error}", "E003")], []

    def problem(at: DocPath, message: str, code: str) -> Problem:
        # On the key when the key is at fault (an unknown operator or field), else on the value.
        on_key = code in KEY_PROBLEMS and (*at, KEY) in positions
        line, column = positions[(*at, KEY)] if on_key else position(positions, at)
        rule, inner = _rule_part(document, at)
        return Problem(file, message, code, rule=rule, path=inner, line=line, column=column)

    found_errors = schema_errors(document)
    invalid_at = {tuple(invalid.absolute_path) for invalid in found_errors}
    problems = []
    for invalid in found_errors:
        at = tuple(invalid.absolute_path)
        if invalid.validator == "additionalProperties" and isinstance(invalid.instance, dict):
            # One problem per unknown key, placed on the key itself.
            for key, message in unknown_keys(invalid):
                line, column = positions.get((*at, key, KEY), position(positions, at))
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
            line=position(positions, ("rules", index))[0],
        )
        for index, raw in enumerate(document["rules"])
    ]
    warnings = [
        problem(("rules", index, *where), message, code)
        for index, rule in enumerate(rules)
        for where, message, code in field_checks.warnings(rule.effective_pattern, rule.actions)
    ]
    return rules, [], warnings


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

"""Loading rule files into a RuleSet, all or nothing, and matching notifications against it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from postupload.errors import Problem, RuleSetError
from postupload.notification import Notification
from postupload.patterns import Pattern, matches

RULE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Rule:
    name: str
    match: Pattern
    actions: list[dict[str, Any]]
    file: str
    description: str = ""
    enabled: bool = True
    stop: bool = False

    @property
    def effective_pattern(self) -> Pattern:
        """Our extension: a pattern that does not name notification_type matches only uploads."""
        if "notification_type" in self.match:
            return self.match
        return {"notification_type": ["upload"], **self.match}


@dataclass(frozen=True)
class RuleSet:
    rules: list[Rule]
    files: list[str] = field(default_factory=list)

    def match(self, notification: Notification) -> list[Rule]:
        """The enabled rules that match, in order, up to and including the first with `stop`."""
        matched: list[Rule] = []
        for rule in self.rules:
            if rule.enabled and matches(rule.effective_pattern, notification):
                matched.append(rule)
                if rule.stop:
                    break
        return matched


@cache
def rules_schema() -> dict[str, Any]:
    """The rule-file JSON Schema shipped in the package."""
    text = resources.files("postupload").joinpath("schemas/rules.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = rules_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory, in file-name order (tests under rules/tests are not rules)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RULE_SUFFIXES)


def load_ruleset(directory: Path) -> RuleSet:
    """Every rule file of `directory`, checked; RuleSetError lists every problem found."""
    if not directory.is_dir():
        problem = Problem(str(directory), "rule directory does not exist", "E001")
        raise RuleSetError([problem])
    problems: list[Problem] = []
    rules: list[Rule] = []
    files = rule_files(directory)
    for path in files:
        document, file_problems = _read(path)
        problems += file_problems
        if document is not None:
            rules += _rules_of(document, str(path))
    problems += _duplicate_names(rules)
    if problems:
        raise RuleSetError(problems)
    return RuleSet(rules, [str(p) for p in files])


def _read(path: Path) -> tuple[Any, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(str(path), f"cannot read: {error}", "E002")]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = f"YAML syntax: {error.problem}"
        return None, [Problem(str(path), message, "E003", line=line, column=column)]
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        return None, [Problem(str(path), f"syntax: {error}", "E003")]
    schema_problems = [
        Problem(
            str(path),
            error.message,
            "E100",
            rule=_rule_name(document, error.absolute_path),
            path=error.json_path,
        )
        for error in _validator().iter_errors(document)
    ]
    return (None if schema_problems else document), schema_problems


def _rule_name(document: Any, path: Any) -> str | None:
    parts = list(path)
    if len(parts) >= 2 and parts[0] == "rules" and isinstance(parts[1], int):
        rule = document["rules"][parts[1]]
        name = rule.get("name") if isinstance(rule, dict) else None
        return name if isinstance(name, str) else f"#{parts[1] + 1}"
    return None


def _rules_of(document: dict[str, Any], file: str) -> list[Rule]:
    return [
        Rule(
            name=raw["name"],
            match=raw["match"],
            actions=raw["actions"],
            file=file,
            description=raw.get("description", ""),
            enabled=raw.get("enabled", True),
            stop=raw.get("stop", False),
        )
        for raw in document["rules"]
    ]


def _duplicate_names(rules: list[Rule]) -> list[Problem]:
    first_file: dict[str, str] = {}
    problems = []
    for rule in rules:
        if rule.name in first_file:
            message = f"name is already used in {first_file[rule.name]}; rule names must be unique"
            problems.append(Problem(rule.file, message, "E200", rule=rule.name, path="$.name"))
        else:
            first_file[rule.name] = rule.file
    return problems


class RuleSource:
    """The last good rule set of a directory, reloaded when its files change (all or nothing)."""

    def __init__(self, directory: Path, check_every: float = 1.0) -> None:
        self.directory = directory
        self.check_every = check_every
        self.ruleset: RuleSet | None = None
        self.error: RuleSetError | None = None
        self._fingerprint: object = None
        self._checked_at = float("-inf")

    def current(self) -> RuleSet | None:
        """The last good rule set, after reloading if files changed since the last look."""
        now = time.monotonic()
        if now - self._checked_at >= self.check_every:
            self._checked_at = now
            self.refresh()
        return self.ruleset

    def refresh(self) -> None:
        """Reload now if the directory's files changed."""
        fingerprint = self._fingerprint_now()
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        try:
            self.ruleset, self.error = load_ruleset(self.directory), None
        except RuleSetError as error:
            self.error = error

    def _fingerprint_now(self) -> object:
        try:
            return [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(self.directory)]
        except OSError as error:
            return str(error)

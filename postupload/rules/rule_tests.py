"""Rule unit tests (rules/tests/*.yaml), in the spirit of `promtool test rules`."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yamlcore

from postupload.core.calls import Call, Plan
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.notification import load_json
from postupload.core.ruleset import RuleSet
from postupload.errors import BadNotification, Problem
from postupload.rules.yaml_source import read_document

# What a test may say of a call (`expect.calls`); the keys it leaves out are not compared.
CALL_FIELDS = ("api", "endpoint", "resource_type", "type", "public_ids", "params", "delivery", "rules")


@dataclass
class Outcome:
    file: str
    line: int
    name: str
    differences: list[str] = field(default_factory=list)  # for people: expected and got, side by side
    summary: list[str] = field(default_factory=list)  # one line per part that differs
    matched: list[str] = field(default_factory=list)  # the rules the test's notification matched

    @property
    def passed(self) -> bool:
        return not self.differences


def rule_test_files(directory: Path) -> list[Path]:
    tests = directory / "tests"
    return (
        sorted(p for p in tests.glob("*") if p.suffix in (".yaml", ".yml", ".json")) if tests.is_dir() else []
    )


def rules_tested(directory: Path, ruleset: RuleSet) -> list[str]:
    """The rules some rule test of `directory` makes match (whether the test passes or not)."""
    return [
        name
        for path in rule_test_files(directory)
        for outcome in run_file(path, ruleset)[0]
        for name in outcome.matched
    ]


def failing_tests(directory: Path, ruleset: RuleSet) -> list[Problem]:
    """The test gate: a problem for every rule test of `directory` that fails or cannot be read."""
    problems = []
    for path in rule_test_files(directory):
        outcomes, malformed = run_file(path, ruleset)
        problems += malformed
        for outcome in outcomes:
            if not outcome.passed:
                problems.append(
                    Problem(
                        outcome.file,
                        f"rule test {outcome.name!r} fails: {'; '.join(outcome.summary)}",
                        "T100",
                        line=outcome.line,
                        column=1,
                    )
                )
    return problems


def run_file(path: Path, ruleset: RuleSet) -> tuple[list[Outcome], list[Problem]]:
    """Run every test of one file; malformed tests come back as problems."""
    try:
        document, positions = read_document(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return [], [Problem(str(path), f"cannot read tests: {error}", "T001")]
    tests = document.get("tests") if isinstance(document, dict) else None
    if not isinstance(tests, list):
        return [], [
            Problem(str(path), "a test file holds `tests:`, a list of tests", "T002", line=1, column=1)
        ]
    outcomes, problems = [], []
    for index, test in enumerate(tests):
        line = positions.get(("tests", index), (0, 0))[0]
        try:
            notification, expect = _parse(test, path)
        except ValueError as error:
            problems.append(
                Problem(str(path), str(error), "T003", path=f"tests[{index}]", line=line, column=1)
            )
            continue
        outcome = Outcome(str(path), line, str(test.get("name", f"#{index + 1}")))
        _compare(ruleset, notification, expect, outcome)
        outcomes.append(outcome)
    return outcomes, problems


def _parse(test: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(test, dict) or not isinstance(test.get("expect"), dict):
        raise ValueError("each test has a name, a notification (or notification_file) and expect")
    if "notification_file" in test:
        source = path.parent / str(test["notification_file"])
        try:
            notification = load_json(source.read_bytes())
        except (OSError, BadNotification) as error:
            raise ValueError(f"notification_file {source}: {error}") from None
    else:
        notification = test.get("notification")
    if not isinstance(notification, dict):
        raise ValueError("notification must be an object (or give notification_file)")
    expect = test["expect"]
    named = [key for key in ("rules", "includes", "excludes") if key in expect]
    if not named:
        raise ValueError(
            "expect needs rules (every rule that matches, in order; [] for none), or includes and/or"
            " excludes (rules that must, and must not, be among them)"
        )
    for key in named:
        if not isinstance(expect[key], list) or not all(isinstance(name, str) for name in expect[key]):
            raise ValueError(f"expect.{key} is a list of rule names")
    calls = expect.get("calls", [])
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        raise ValueError("expect.calls is a list of calls, each a map of " + ", ".join(CALL_FIELDS))
    for call in calls:
        unknown = sorted(set(call) - set(CALL_FIELDS))
        if unknown:
            raise ValueError(
                f"expect.calls: unknown field {unknown[0]!r}; a call has {', '.join(CALL_FIELDS)}"
            )
    return notification, expect


def _decide(ruleset: RuleSet, notification: dict[str, Any]) -> Plan:
    """The worker's decision for a test's notification, as delivered for the environment it names
    in `cloud_name` (none: rules on cloud_name match nothing)."""
    body = json.dumps(notification, sort_keys=True).encode()
    return decide(ruleset, Envelope.of(body, notification, str(notification.get("cloud_name") or "")))


def _compare(
    ruleset: RuleSet, notification: dict[str, Any], expect: dict[str, Any], outcome: Outcome
) -> None:
    planned = _decide(ruleset, notification)
    names = list(planned.rules)
    outcome.matched = names
    if "rules" in expect and names != expect["rules"]:
        outcome.differences += aligned("rules", expect["rules"], names)
        outcome.summary.append(f"rules: expected {json.dumps(expect['rules'])}, got {json.dumps(names)}")
    missing = [name for name in expect.get("includes", []) if name not in names]
    if missing:
        outcome.differences.append(f"  includes: {', '.join(missing)} did not match (matched: {names})")
        outcome.summary.append(f"{', '.join(missing)} did not match")
    unwanted = [name for name in expect.get("excludes", []) if name in names]
    if unwanted:
        outcome.differences.append(f"  excludes: {', '.join(unwanted)} matched, and must not")
        outcome.summary.append(f"{', '.join(unwanted)} matched, and must not")
    # An action that cannot be made fails its test whatever the test expects: no expectation, and no
    # --update, can make a refused call pass.
    for action in planned.actions:
        if action.error:
            outcome.differences.append(f"  rule {action.rule} {action.action} cannot be made: {action.error}")
            outcome.summary.append(f"rule {action.rule} {action.action} cannot be made: {action.error}")
    if "actions" in expect:
        got = [json.dumps(a.as_dict(), sort_keys=True) for a in planned.actions]
        wanted = [json.dumps(a, sort_keys=True) for a in expect["actions"]]
        if got != wanted:
            outcome.differences += side_by_side("actions", wanted, got)
            outcome.summary.append(_first_difference("actions", wanted, got))
    if "calls" in expect:
        calls = planned.calls
        expected = expect["calls"]
        shown = [_comparable(call, expected[n] if n < len(expected) else {}) for n, call in enumerate(calls)]
        if shown != expected:
            wanted = [json.dumps(c, sort_keys=True) for c in expected]
            got = [json.dumps(c, sort_keys=True) for c in shown]
            outcome.differences += side_by_side("calls", wanted, got)
            outcome.summary.append(_first_difference("calls", wanted, got))


def _first_difference(title: str, expected: list[str], got: list[str]) -> str:
    for index in range(max(len(expected), len(got))):
        left = expected[index] if index < len(expected) else "nothing"
        right = got[index] if index < len(got) else "nothing"
        if left != right:
            return f"{title}[{index}]: expected {left}, got {right}"
    return f"{title} differ"


def aligned(title: str, expected: list[str], got: list[str]) -> list[str]:
    """Rule names side by side, lined up by name (a rule added or missing shifts no other row)."""
    left: list[str] = []
    right: list[str] = []
    matcher = difflib.SequenceMatcher(a=expected, b=got, autojunk=False)
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if tag == "equal":
            left += expected[a_start:a_end]
            right += got[b_start:b_end]
        else:
            removed, added = expected[a_start:a_end], got[b_start:b_end]
            left += removed + [""] * len(added)
            right += [""] * len(removed) + added
    return side_by_side(title, left, right)


def _comparable(call: Call, expected: dict[str, Any]) -> dict[str, Any]:
    """The call in the test's words, limited to the fields the expected call names (all if none)."""
    whole = {**call.as_dict(), "rules": call.rules}
    names = [name for name in CALL_FIELDS if name in expected] or list(CALL_FIELDS)
    return {name: whole[name] for name in names}


def side_by_side(title: str, expected: list[str], got: list[str]) -> list[str]:
    """Expected and got in two columns, a mark on each line that differs."""
    width = max([len("expected"), *map(len, expected)])
    lines = [f"  {title}:", f"    {'expected'.ljust(width)}   got"]
    for index in range(max(len(expected), len(got))):
        left = expected[index] if index < len(expected) else ""
        right = got[index] if index < len(got) else ""
        mark = " " if left == right else "≠"
        lines.append(f"  {mark} {left.ljust(width)} | {right}")
    return lines


# --- writing tests from what the rules do ----------------------------------------------------------

CASE_CALL_FIELDS = ("endpoint", "public_ids", "params", "delivery", "rules")  # what a new case states


def observed(
    ruleset: RuleSet, notification: dict[str, Any], call_fields: list[list[str]] | None = None
) -> dict[str, Any]:
    """What the rules do with a notification, in a test's words: rules, actions, calls. Each call
    gives the fields named by `call_fields` (one list per call; CASE_CALL_FIELDS past its end)."""
    planned = _decide(ruleset, notification)
    calls = planned.calls
    shown = []
    for index, call in enumerate(calls):
        wanted = call_fields[index] if call_fields and index < len(call_fields) else list(CASE_CALL_FIELDS)
        shown.append(_comparable(call, dict.fromkeys(wanted)))
    return {
        "rules": list(planned.rules),
        "actions": [action.as_dict() for action in planned.actions],
        "calls": shown,
    }


def new_case(
    ruleset: RuleSet, notification: dict[str, Any], name: str, cloud_name: str = ""
) -> dict[str, Any]:
    """A test case that pins down what the rules do now with this notification (delivered for
    `cloud_name`, which the case then names)."""
    if cloud_name:
        notification = {**notification, "cloud_name": cloud_name}
    seen = observed(ruleset, notification)
    return {
        "name": name,
        "notification": notification,
        "expect": {"rules": seen["rules"], "calls": seen["calls"]},
    }


def case_text(case: dict[str, Any]) -> str:
    """A test case as YAML, a list item to add under `tests:` (each call a line of its own)."""
    notification = yaml.safe_dump(
        case["notification"], sort_keys=False, allow_unicode=True, width=float("inf")
    ).rstrip("\n")
    lines = [f"  - name: {_flow(case['name'])}", "    notification:"]
    lines += ["      " + line for line in notification.splitlines()]
    lines += ["    expect:", f"      rules: {_flow(case['expect']['rules'])}"]
    calls = case["expect"]["calls"]
    lines.append("      calls:" + ("" if calls else " []"))
    lines += [f"        - {_flow(call)}" for call in calls]
    return "\n".join(lines) + "\n"


def update_file(path: Path, ruleset: RuleSet) -> list[str]:
    """Refresh, in place, the expectations of the tests in `path` that fail: `rules`, `actions` and
    `calls` become what the rules do now (each call keeps the fields it named). `includes` and
    `excludes` state intent and are left alone. Only those values' text is replaced, so comments,
    blank lines and the layout of everything else stay as they were. The names of the tests updated."""
    text = path.read_text(encoding="utf-8")
    outcomes, problems = run_file(path, ruleset)
    if problems:
        raise ValueError("; ".join(str(problem) for problem in problems))
    failing = {outcome.name for outcome in outcomes if not outcome.passed}
    document, _ = read_document(text)
    tests_node = _child(_root(text), "tests")
    edits: list[tuple[int, int, str]] = []
    updated = []
    for index, test in enumerate(document["tests"]):
        name = str(test.get("name", f"#{index + 1}"))
        if name not in failing:
            continue
        notification, expect = _parse(test, path)
        fields = [
            [key for key in CALL_FIELDS if key in call] or list(CALL_FIELDS)
            for call in expect.get("calls", [])
        ]
        seen = observed(ruleset, notification, fields)
        expect_node = _child(tests_node.value[index], "expect")
        before = len(edits)
        for key in ("rules", "actions", "calls"):
            if key == "actions" and any("error" in action for action in seen[key]):
                continue  # a refused action is a failure to mend in the rule, not an expectation
            if key in expect and expect[key] != seen[key]:
                edits.append(_replacement(_child(expect_node, key), seen[key]))
        if len(edits) > before:
            updated.append(name)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    if updated:
        path.write_text(text, encoding="utf-8")
    return updated


def _root(text: str) -> yaml.Node:
    loader = yamlcore.CoreLoader(text)  # offsets in characters (libyaml's count bytes): edits slice the text
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _child(node: yaml.Node, key: str) -> yaml.Node:
    for key_node, value in node.value:
        if key_node.value == key:
            return value
    raise KeyError(key)


def _replacement(node: yaml.Node, value: list[Any]) -> tuple[int, int, str]:
    """(start, end, text) that puts `value` where `node` is: a block list stays a block list, one
    flow item a line at the same indentation; anything else becomes one flow value."""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        indent = "\n" + " " * node.start_mark.column
        lines = indent.join(f"- {_flow(item)}" for item in value) if value else "[]"
        return node.start_mark.index, node.value[-1].end_mark.index, lines
    return node.start_mark.index, node.end_mark.index, _flow(value)


def _flow(value: Any) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return dumped.strip().removesuffix("...").strip()

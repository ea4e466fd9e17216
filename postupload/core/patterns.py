"""Amazon EventBridge event patterns over notification bodies: checking and evaluating. No I/O.

References: docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html and
eb-create-pattern-operators.html; github.com/aws/event-ruler README ("Ruler by example",
"JSON Array Matching"). This module is the plain reference evaluator that `rules explain` uses and
that the compiled matcher (matcher.py) is tested against.

Semantics, as EventBridge has them:
- fields are ANDed, the values listed for one field are ORed; a field the pattern names must be
  present, except under `{"exists": false}`;
- an event array matches when any element matches; nested arrays are flattened; the fields of one
  pattern object must all be satisfied by the same element of an array of objects;
- operators apply to leaf values (strings, numbers, booleans, null), never to objects;
- strings never match numbers (and `numeric` matches numbers only); `null` is not `""`;
- our extension: a bare scalar stands for a list of one.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Pattern = dict[str, Any]
Path = tuple[str | int, ...]

STRING_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "wildcard", "cidr")
OPERATORS = (*STRING_OPERATORS, "anything-but", "numeric", "exists")
NUMERIC_LIMIT = 5e9  # event-ruler: numeric matching is limited to -5.0e9 .. +5.0e9
COMPARISONS = {"<", "<=", "=", ">=", ">"}


@dataclass(frozen=True)
class PatternProblem:
    path: Path  # inside the pattern
    message: str
    code: str


# --- checking ---------------------------------------------------------------------------------


def check_pattern(pattern: Any, path: Path = ()) -> list[PatternProblem]:
    """Every problem with a pattern; an empty list means it is valid."""
    if not isinstance(pattern, dict):
        return [PatternProblem(path, "a pattern is an object of field names", "E301")]
    problems: list[PatternProblem] = []
    for key, value in pattern.items():
        here = (*path, key)
        if key == "$or":
            problems += _check_or(value, here)
        elif key in OPERATORS:
            message = f"'{key}' is an operator: put it in a list, as [{{{key}: ...}}]"
            problems.append(PatternProblem(path, message, "E308"))
        elif isinstance(value, dict):
            if not value:
                message = "an empty object matches nothing: name the fields to match inside it, or remove it"
                problems.append(PatternProblem(here, message, "E303"))
            problems += check_pattern(value, here)
        elif isinstance(value, list):
            if not value:
                problems.append(
                    PatternProblem(here, "an empty list matches nothing; list the values", "E303")
                )
            for index, item in enumerate(value):
                problems += _check_matcher(item, (*here, index))
        else:
            problems += _check_matcher(value, here)  # our extension: a bare scalar
    return problems


def _check_or(value: Any, path: Path) -> list[PatternProblem]:
    if not isinstance(value, list) or len(value) < 2:
        message = "$or takes a list of at least two patterns; for one, write its fields directly"
        return [PatternProblem(path, message, "E307")]
    problems: list[PatternProblem] = []
    for index, alternative in enumerate(value):
        if not isinstance(alternative, dict) or not alternative:
            problems.append(
                PatternProblem((*path, index), "each $or alternative is a non-empty object", "E307")
            )
        else:
            problems += check_pattern(alternative, (*path, index))
    return problems


def _check_matcher(item: Any, path: Path) -> list[PatternProblem]:
    if item is None or isinstance(item, str | bool | int | float):
        if isinstance(item, float) and not math.isfinite(item):
            return [PatternProblem(path, "numbers must be finite", "E302")]
        return []
    if isinstance(item, list):
        return [PatternProblem(path, "lists do not nest: write the values in one list", "E302")]
    if len(item) != 1:
        return [
            PatternProblem(
                path, f"an operator object has exactly one key, one of: {', '.join(OPERATORS)}", "E301"
            )
        ]
    ((name, operand),) = item.items()
    message = _operator_problem(name, operand)
    return [PatternProblem((*path, name), message, _code(name))] if message else []


def _code(name: str) -> str:
    if name not in OPERATORS:
        return "E301"
    return {"numeric": "E304", "cidr": "E305", "wildcard": "E306"}.get(name, "E302")


def _operator_problem(name: str, operand: Any) -> str | None:
    """What is wrong with one operator's operand, or None."""
    if name in ("prefix", "suffix"):
        if isinstance(operand, dict) and list(operand) == ["equals-ignore-case"]:
            operand = operand["equals-ignore-case"]
        return (
            None if isinstance(operand, str) else f"{name} takes a string or {{equals-ignore-case: string}}"
        )
    if name == "equals-ignore-case":
        return None if isinstance(operand, str) else "equals-ignore-case takes a string"
    if name == "wildcard":
        return _wildcard_problem(operand)
    if name == "cidr":
        return _cidr_problem(operand)
    if name == "exists":
        return None if isinstance(operand, bool) else "exists takes true or false"
    if name == "numeric":
        return _numeric_problem(operand)
    if name == "anything-but":
        return _anything_but_problem(operand)
    guess = difflib.get_close_matches(name, OPERATORS, n=1, cutoff=0.6)
    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
    return f"unknown operator '{name}'{hint}; use one of: {', '.join(OPERATORS)}"


def _anything_but_problem(operand: Any) -> str | None:
    allowed = (
        "anything-but takes a string, a number, a list of strings or of numbers, or one of "
        "{prefix: s or [s]}, {suffix: s or [s]}, {equals-ignore-case: s or [s]}, {wildcard: s or [s]}"
    )
    if isinstance(operand, str) or is_number(operand):
        return None
    if isinstance(operand, list):
        if operand and (all(isinstance(v, str) for v in operand) or all(is_number(v) for v in operand)):
            return None
        return allowed
    if isinstance(operand, dict) and len(operand) == 1:
        ((name, inner),) = operand.items()
        if name in ("prefix", "suffix"):
            values = inner if isinstance(inner, list) else [inner]
            if values and all(isinstance(v, str) and v for v in values):
                return None
            if any(v == "" for v in values):
                return f"an empty anything-but {name} would exclude every string: give a non-empty {name}"
        if name in ("equals-ignore-case", "wildcard"):
            values = inner if isinstance(inner, list) else [inner]
            if values and all(isinstance(v, str) for v in values):
                return _wildcard_problem(values) if name == "wildcard" else None
    return allowed


def _numeric_problem(operand: Any) -> str | None:
    usage = 'numeric takes one or two comparisons: [">", 0] or [">=", 0, "<", 10] (operators < <= = >= >)'
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        return usage
    operators, numbers = operand[0::2], operand[1::2]
    if not all(isinstance(op, str) and op in COMPARISONS for op in operators):
        return usage
    if not all(is_number(n) for n in numbers):
        return "numeric compares numbers only: " + usage
    if any(abs(n) > NUMERIC_LIMIT for n in numbers):
        return "numeric values must lie between -5e9 and 5e9 (EventBridge's range)"
    if len(operand) == 4:
        (low_op, low), (high_op, high) = (operand[0], operand[1]), (operand[2], operand[3])
        if low_op not in (">", ">=") or high_op not in ("<", "<="):
            return "with two comparisons, give the lower bound (> or >=) first, then the upper (< or <=)"
        if low >= high:
            return f"the range {low} .. {high} is empty: the lower bound must be below the upper"
    return None


def _cidr_problem(operand: Any) -> str | None:
    if not isinstance(operand, str) or "/" not in operand:
        return 'cidr takes an IPv4 or IPv6 network such as "10.0.0.0/24" or "2001:db8::/32"'
    try:
        ipaddress.ip_network(operand, strict=False)
    except ValueError as error:
        return f"cidr: {error}"
    return None


def _wildcard_problem(operand: Any) -> str | None:
    values = operand if isinstance(operand, list) else [operand]
    for value in values:
        if not isinstance(value, str):
            return "wildcard takes a string, where * matches any characters"
        if "**" in value.replace("\\\\", "").replace("\\*", ""):
            return f"wildcard {value!r}: consecutive * are not allowed"
        if re.search(r"\\(?![*\\])", value.replace("\\\\", "")):
            return f"wildcard {value!r}: a backslash may escape only * or \\"
    return None


def is_number(value: Any) -> bool:
    """A JSON number: booleans are not numbers here."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- evaluating -------------------------------------------------------------------------------

ABSENT: Any = object()  # a field the event does not have


def leaves(value: Any) -> Iterator[Any]:
    """The leaf values of an event field: arrays flattened, objects and absence yield nothing."""
    if isinstance(value, list):
        for item in value:
            yield from leaves(item)
    elif value is not ABSENT and not isinstance(value, dict):
        yield value


def matches(pattern: Pattern, event: Any) -> bool:
    """True when the event matches the (checked) pattern."""
    return first_mismatch(pattern, event) is None


def first_mismatch(pattern: Pattern, event: Any, path: str = "") -> str | None:
    """Why the event does not match, naming the first field that fails; None when it matches."""
    if isinstance(event, list):
        objects = [item for item in flatten(event) if isinstance(item, dict)] or [{}]
    else:
        objects = [event if isinstance(event, dict) else {}]  # a leaf where an object is expected
    reason: str | None = None
    for candidate in objects:  # one array element must satisfy the whole object pattern
        reason = _object_mismatch(pattern, candidate, path)
        if reason is None:
            return None
    return reason


def _object_mismatch(pattern: Pattern, event: dict[str, Any], path: str) -> str | None:
    for key, expected in pattern.items():
        if key == "$or":
            reasons = [first_mismatch(alternative, event, path) for alternative in expected]
            if all(reasons):
                return f"{path or '$'}: no $or alternative matches ({'; '.join(r for r in reasons if r)})"
            continue
        here = f"{path}.{key}" if path else key
        value = event.get(key, ABSENT)
        if isinstance(expected, dict):
            reason = first_mismatch(expected, {} if value is ABSENT else value, here)
        else:
            reason = _field_mismatch(expected if isinstance(expected, list) else [expected], value, here)
        if reason:
            return reason
    return None


def _field_mismatch(matchers: list[Any], value: Any, path: str) -> str | None:
    values = list(leaves(value))
    for matcher in matchers:
        if isinstance(matcher, dict) and "exists" in matcher:
            if bool(values) == matcher["exists"]:
                return None
        elif any(value_matches(matcher, item) for item in values):
            return None
    if value is ABSENT:
        return f"{path}: absent, and the pattern needs it"
    shown = value if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."
    return f"{path}: {shown!r} matches none of {matchers!r}"


def value_matches(matcher: Any, value: Any) -> bool:
    """One matcher (a scalar or an operator object) against one leaf value."""
    if not isinstance(matcher, dict):
        return same_value(matcher, value)
    ((name, operand),) = matcher.items()
    if name == "anything-but":
        return not _anything_but_excludes(operand, value)
    if name == "numeric":
        return is_number(value) and _in_range(operand, value)
    if not isinstance(value, str):
        return False  # the string operators never match numbers, booleans or null
    return string_operator(name, operand)(value)


def same_value(expected: Any, actual: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, "1" is not 1."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if is_number(expected) and is_number(actual):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and expected == actual


def _anything_but_excludes(operand: Any, value: Any) -> bool:
    if isinstance(operand, list):
        return any(same_value(item, value) for item in operand)
    if isinstance(operand, dict):
        ((name, inner),) = operand.items()
        options = inner if isinstance(inner, list) else [inner]
        return isinstance(value, str) and any(string_operator(name, option)(value) for option in options)
    return same_value(operand, value)


def _in_range(operand: list[Any], value: float) -> bool:
    compare = {
        "<": float.__lt__,
        "<=": float.__le__,
        "=": float.__eq__,
        ">=": float.__ge__,
        ">": float.__gt__,
    }
    return all(
        compare[op](float(value), float(bound))
        for op, bound in zip(operand[0::2], operand[1::2], strict=True)
    )


@lru_cache(maxsize=4096)
def _string_test(name: str, operand: str, ignore_case: bool) -> Any:
    if name == "prefix":
        if ignore_case:
            return lambda v: v.casefold().startswith(operand.casefold())
        return lambda v: v.startswith(operand)
    if name == "suffix":
        if ignore_case:
            return lambda v: v.casefold().endswith(operand.casefold())
        return lambda v: v.endswith(operand)
    if name == "equals-ignore-case":
        return lambda v: v.casefold() == operand.casefold()
    if name == "wildcard":
        return wildcard_test(operand)
    network = ipaddress.ip_network(operand, strict=False)

    def in_network(v: str) -> bool:
        try:
            return ipaddress.ip_address(v) in network
        except ValueError:
            return False

    return in_network


def string_operator(name: str, operand: Any) -> Any:
    """A test `str -> bool` for prefix, suffix, equals-ignore-case, wildcard or cidr."""
    if isinstance(operand, dict):  # prefix/suffix: {equals-ignore-case: s}
        return _string_test(name, operand["equals-ignore-case"], True)
    return _string_test(name, operand, False)


def wildcard_parts(pattern: str) -> list[str]:
    """The literal parts between a wildcard's stars (`*` any characters; `\\*` a star and `\\\\`
    a backslash): `a*b*c` -> [a, b, c]; one part when there is no star."""
    parts, current, index = [], [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            current.append(pattern[index + 1])
            index += 2
            continue
        if char == "*":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def wildcard_test(pattern: str) -> Callable[[str], bool]:
    """Whether a value matches the wildcard, in time linear in the value: the first part starts it,
    the last ends it, and each middle part is found at its leftmost place after the one before
    (leftmost is always right when `*` is the only operator). A regular expression backtracked:
    `*-*-*-*-*z*x` on 280 dashes took 10 s."""
    parts = wildcard_parts(pattern)
    if len(parts) == 1:
        return lambda value: value == parts[0]
    first, *middle, last = parts
    fixed = len(first) + len(last)

    def test(value: str) -> bool:
        if len(value) < fixed or not value.startswith(first) or not value.endswith(last):
            return False
        position, end = len(first), len(value) - len(last)
        for part in middle:
            found = value.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True

    return test


def flatten(value: list[Any]) -> Iterator[Any]:
    """The items of an array, nested arrays flattened."""
    for item in value:
        if isinstance(item, list):
            yield from flatten(item)
        else:
            yield item

"""Warnings for rules that cannot do what they seem to: conditions no Cloudinary notification of the
types a rule sees can meet, and placeholders its match does not guarantee. Pure.

What Cloudinary sends is known from `schemas/notifications.schema.json` (fields and their JSON
types, by notification_type). Cloudinary adds fields over time, so these are warnings (W codes),
not errors: `rules check` shows them, and `--strict` makes them fail.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from postupload.core.patterns import Pattern, value_matches
from postupload.core.placeholders import PLACEHOLDER

Where = tuple[str | int, ...]  # inside the rule: ("match", "width", 0), ("actions", 1, "tags")
Warning = tuple[Where, str, str]  # where, message, code

STRING_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "wildcard", "cidr")
COMPARISON = re.compile(r"\s*(<=|>=|<|>|=)\s*(-?\d+(\.\d+)?)\s*")


@cache
def notification_schema() -> dict[str, Any]:
    text = resources.files("postupload").joinpath("schemas/notifications.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def known_types() -> list[str]:
    return list(notification_schema()["$defs"])


def field_names() -> set[str]:
    """Every top-level field of every notification type."""
    return {name for kind in notification_schema()["$defs"].values() for name in kind["properties"]}


def types_seen(pattern: Pattern) -> list[str]:
    """The known notification types a rule's (effective) pattern can match."""
    return list(_types_matched(json.dumps(pattern.get("notification_type", ["upload"]), sort_keys=True)))


@cache
def _types_matched(wanted_json: str) -> tuple[str, ...]:
    """By the notification_type condition (as JSON): most rules share one of a few."""
    wanted = json.loads(wanted_json)
    matchers = wanted if isinstance(wanted, list) else [wanted]
    return tuple(kind for kind in known_types() if any(value_matches(m, kind) for m in matchers))


def warnings(pattern: Pattern, actions: list[dict[str, Any]]) -> list[Warning]:
    """Every warning for one rule: its (effective) pattern and its actions."""
    kinds = types_seen(pattern)
    if not kinds:
        return []
    definitions = [notification_schema()["$defs"][kind] for kind in kinds]
    found = list(_pattern_warnings(pattern, definitions, kinds, ("match",)))
    found += _placeholder_warnings(pattern, actions, definitions, kinds)
    return found


def _pattern_warnings(
    pattern: Pattern, definitions: list[dict[str, Any]], kinds: list[str], at: Where
) -> Iterator[Warning]:
    names = {name for definition in definitions for name in definition.get("properties", {})}
    seen = _describe(kinds)
    for key, value in pattern.items():
        if key == "$or":
            for index, alternative in enumerate(value if isinstance(value, list) else []):
                if isinstance(alternative, dict):
                    yield from _pattern_warnings(alternative, definitions, kinds, (*at, "$or", index))
            continue
        if key == "notification_type" and at == ("match",):
            continue
        field_schemas = [d["properties"][key] for d in definitions if key in d.get("properties", {})]
        if not field_schemas:
            guess = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            message = (
                f"'{key}' is not a field of {seen} notifications that postupload knows{hint} "
                "(a pattern naming a field the notification lacks never matches)"
            )
            yield ((*at, key), message, "W101")
            continue
        if isinstance(value, dict):
            nested = [s for s in field_schemas if "properties" in s]
            if nested:
                yield from _pattern_warnings(value, nested, kinds, (*at, key))
            continue
        types = _json_types(field_schemas)
        matchers = value if isinstance(value, list) else [value]
        for index, matcher in enumerate(matchers):
            problem = _mismatch(key, types, matcher, seen)
            if problem:
                where = (*at, key, index) if isinstance(value, list) else (*at, key)
                yield (
                    where,
                    problem,
                    "W102" if isinstance(matcher, dict) and "numeric" in matcher else "W103",
                )


def _json_types(field_schemas: list[dict[str, Any]]) -> set[str]:
    """The JSON types a field's leaf values can have (an array's items, as EventBridge looks inside)."""
    types: set[str] = set()
    for schema in field_schemas:
        declared = schema.get("type", [])
        for kind in declared if isinstance(declared, list) else [declared]:
            if kind == "array":
                items = schema.get("items", {}).get("type")
                types |= set(items if isinstance(items, list) else [items]) if items else {"any"}
            else:
                types.add(kind)
    if "integer" in types:
        types.add("number")
    return types


def _mismatch(key: str, types: set[str], matcher: Any, seen: str) -> str | None:
    if "any" in types:
        return None
    shown = " or ".join(sorted(types - {"integer"})) or "?"
    if isinstance(matcher, dict) and len(matcher) == 1:
        (name,) = matcher
        if name == "numeric" and "number" not in types:
            return f"'{key}' is a {shown} in {seen} notifications: numeric never matches it"
        if name in STRING_OPERATORS and "string" not in types:
            return f"'{key}' is a {shown} in {seen} notifications: {name} matches strings only, never it"
        return None
    if isinstance(matcher, str) and "string" not in types:
        comparison = COMPARISON.fullmatch(matcher)
        if comparison and "number" in types:
            op, number = comparison.group(1), comparison.group(2)
            return (
                f"'{key}' is a number: the string {matcher!r} never matches it; "
                f'to compare, write [{{numeric: ["{op}", {number}]}}]'
            )
        return f"'{key}' is a {shown} in {seen} notifications: the string {matcher!r} never matches it"
    if isinstance(matcher, int | float) and not isinstance(matcher, bool) and "number" not in types:
        return (
            f"'{key}' is a {shown} in {seen} notifications: the number {matcher} never matches it (quote it)"
        )
    return None


def _placeholder_warnings(
    pattern: Pattern, actions: list[dict[str, Any]], definitions: list[dict[str, Any]], kinds: list[str]
) -> list[Warning]:
    always = set.intersection(*(set(d.get("required", [])) for d in definitions))
    found: list[Warning] = []
    for number, action in enumerate(actions):
        for name, params in action.items():
            for path in sorted(set(_placeholders(params))):
                first = path.split(".")[0]
                if first in always and "." not in path:
                    continue
                if _required_by(pattern, [part for part in path.split(".") if not part.isdigit()]):
                    continue
                message = (
                    f"${{{path}}} may be missing: not every {_describe(kinds)} notification has it and the"
                    f" match does not require it, so the action fails on those; add {_exists(path)} to match"
                )
                found.append((("actions", number, name), message, "W104"))
    return found


def _placeholders(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _placeholders(item)
    elif isinstance(value, list):
        for item in value:
            yield from _placeholders(item)
    elif isinstance(value, str):
        yield from (match.group(1) for match in PLACEHOLDER.finditer(value))


def _required_by(pattern: Any, path: list[str]) -> bool:
    """The pattern makes the field at `path` present (any condition but exists: false)."""
    if not isinstance(pattern, dict):
        return False
    alternatives = pattern.get("$or")
    if isinstance(alternatives, list) and alternatives and all(_required_by(a, path) for a in alternatives):
        return True
    if not path or path[0] not in pattern:
        return False
    value = pattern[path[0]]
    if len(path) > 1:
        return _required_by(value, path[1:])
    matchers = value if isinstance(value, list) else [value]
    return not any(isinstance(m, dict) and m.get("exists") is False for m in matchers)


def _exists(path: str) -> str:
    """`a.b.c` as the pattern that requires it: {a: {b: {c: [{exists: true}]}}}."""
    parts = [part for part in path.split(".") if not part.isdigit()]
    text = f"{parts[-1]}: [{{exists: true}}]"
    for part in reversed(parts[:-1]):
        text = f"{part}: {{{text}}}"
    return text


def _describe(kinds: list[str]) -> str:
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " or " + kinds[-1]

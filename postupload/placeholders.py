"""`${field.path}` placeholders in action parameters, filled from the notification."""

from __future__ import annotations

import re
from typing import Any

from postupload.errors import ActionError

PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
FIELD_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
MISSING = object()


def placeholder_problems(value: Any) -> list[str]:
    """What is wrong with the placeholders written in a parameter value (checked at rule-load time)."""
    problems = []
    for text in _strings(value):
        for match in PLACEHOLDER.finditer(text):
            if not FIELD_PATH.fullmatch(match.group(1)):
                problems.append(
                    f"placeholder {match.group(0)!r}: expected ${{field.path}}, e.g. ${{context.custom.sku}}"
                )
        rest = PLACEHOLDER.sub("", text)
        if "${" in rest:
            problems.append(f"placeholder in {text!r} is not closed: write ${{field.path}}")
    return problems


def fill(value: Any, notification: dict[str, Any]) -> Any:
    """`value` with every placeholder replaced; a whole-string placeholder keeps the field's own type."""
    if isinstance(value, dict):
        return {key: fill(item, notification) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, notification) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = PLACEHOLDER.fullmatch(value)
    if whole:
        return lookup(whole.group(1), notification)
    return PLACEHOLDER.sub(lambda match: _text(lookup(match.group(1), notification)), value)


def lookup(path: str, notification: dict[str, Any]) -> Any:
    """The notification's value at a dotted path (list items by index); ActionError if absent."""
    value: Any = notification
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = MISSING
            break
    if value is MISSING or value is None:
        raise ActionError(f"placeholder ${{{path}}}: the notification has no {path}", permanent=True)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []

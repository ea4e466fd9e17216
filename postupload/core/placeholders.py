"""`${field.path}` placeholders in action parameters, filled from the notification.

A placeholder fills a value, never structure. Where it stands (its slot: a transformation
parameter's value, a tag, a context key or value, a URL's path or query) says what a filled value
may hold: one that would add a transformation, parameter, tag, context pair, path segment or host
is refused (the action fails for good, naming the field and the value), and URL parts are
percent-encoded. The uploader controls the values; the rule's author controls the shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from postupload.errors import ActionError

PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
FIELD_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
MISSING = object()
CONTROL = "\x00-\x1f\x7f"
# A URL up to the end of its host (and port): a placeholder there would let the uploader choose
# where Cloudinary sends its notification.
URL_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


@dataclass(frozen=True)
class Slot:
    """Where a placeholder stands and what a value filled there may hold."""

    name: str  # as a refusal names it
    refused: re.Pattern[str] | None  # characters a filled value may not hold
    why: str  # what such a character would do, and what is allowed
    encode: Callable[[str], str] | None = None  # where the target has an encoding (URL parts)
    typed: bool = False  # a whole-string placeholder keeps the field's own type (number, list)
    empty: bool = True  # an empty value fits (no: an empty transformation value or context key)


TEXT = Slot(
    "a parameter", re.compile(f"[{CONTROL}]"), "a control character (line break, tab) is not text", typed=True
)
TRANSFORMATION = Slot(
    "a transformation parameter's value",
    re.compile(r"[^A-Za-z0-9_.\-]"),
    "',' would add a parameter, '/' a component, '|' a transformation and ':' an argument;"
    " a value here holds letters, digits, '_', '-' and '.' only",
    empty=False,
)
TAG = Slot(
    "a tag", re.compile(f"[,{CONTROL}]"), "',' would add a tag; a tag has no comma or control character"
)
CONTEXT_KEY = Slot(
    "a context key",
    re.compile(f"[=|\\\\{CONTROL}]"),
    "'=' and '|' would add a context pair (the SDK escapes values, not keys)",
    empty=False,
)
# The SDK escapes '=' and '|' in values with a backslash: a value's own backslash before the
# separator would escape the separator, and two pairs would become one.
FIELD_VALUE = Slot(
    "a context or metadata value",
    re.compile(r"\\"),
    "a backslash would escape the separator after it and join two pairs",
    typed=True,
)
URL_PART = Slot("a URL's path or query", None, "", encode=lambda text: quote(text, safe=""))


def placeholder_problems(value: Any, slot: Slot = TEXT, keys_too: bool = False) -> list[str]:
    """What is wrong with the placeholders written in a parameter value (checked at rule-load time);
    `keys_too`: a map's keys are written out, never filled, so a placeholder there is a mistake."""
    problems = [
        f"placeholder in the key {key!r}: keys are written out, only values are filled"
        for key in _keys(value)
        if keys_too and "${" in key
    ]
    for text in _strings(value):
        for match in PLACEHOLDER.finditer(text):
            if not FIELD_PATH.fullmatch(match.group(1)):
                problems.append(
                    f"placeholder {match.group(0)!r}: expected ${{field.path}}, e.g. ${{context.custom.sku}}"
                )
        rest = PLACEHOLDER.sub("", text)
        if "${" in rest:
            problems.append(f"placeholder in {text!r} is not closed: write ${{field.path}}")
        authority = URL_AUTHORITY.match(text)
        if slot is URL_PART and PLACEHOLDER.search(authority.group(0) if authority else text):
            problems.append(
                f"placeholder in {text!r} stands in the URL's scheme or host: the uploader would choose"
                " where Cloudinary sends it; write the host out and put placeholders in the path or query"
            )
    return problems


def fill(value: Any, notification: dict[str, Any], slot: Slot = TEXT, field: str = "") -> Any:
    """`value` with every placeholder replaced as its slot allows; a whole-string placeholder keeps
    the field's own type where the slot is typed. ActionError (permanent) for a value that does not
    fit its slot, naming `field`, the placeholder and the value."""
    if isinstance(value, dict):
        return {key: fill(item, notification, slot, field) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, notification, slot, field) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = PLACEHOLDER.fullmatch(value)
    if whole and slot.typed:
        found = lookup(whole.group(1), notification)
        if not isinstance(found, str):
            return found
    filled = PLACEHOLDER.sub(lambda match: _fitted(match, notification, slot, field), value)
    if slot is URL_PART:
        _check_path(value, filled, field)
    return filled


def fill_params(
    params: dict[str, Any], notification: dict[str, Any], slots: dict[str, Slot]
) -> dict[str, Any]:
    """An action's parameters filled, each top-level parameter in its own slot (TEXT if unnamed)."""
    return {key: fill(value, notification, slots.get(key, TEXT), key) for key, value in params.items()}


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


def _fitted(match: re.Match[str], notification: dict[str, Any], slot: Slot, field: str) -> str:
    text = _text(lookup(match.group(1), notification))
    bad = slot.refused.search(text) if slot.refused else None
    if bad:
        raise ActionError(
            f"placeholder {match.group(0)} in {field or 'a parameter'}: its value {_shown(text)} holds"
            f" {bad.group(0)!r}, which {slot.name} may not hold: {slot.why}",
            permanent=True,
        )
    if not text and not slot.empty:
        raise ActionError(
            f"placeholder {match.group(0)} in {field or 'a parameter'}: its value is empty", permanent=True
        )
    return slot.encode(text) if slot.encode else text


def _check_path(template: str, filled: str, field: str) -> None:
    """A filled value that is a whole '.' or '..' segment would move the URL's path up."""
    written = urlsplit(PLACEHOLDER.sub("x", template)).path.split("/")
    # Filled values are encoded (no '/' of their own): only a whole segment can have become one.
    if any(segment in (".", "..") and segment not in written for segment in urlsplit(filled).path.split("/")):
        raise ActionError(
            f"{field or 'a URL'}: a filled value makes the path {urlsplit(filled).path!r}, which"
            " leaves the path the rule wrote ('.' or '..' segments)",
            permanent=True,
        )


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(key) for key in value] + [key for item in value.values() for key in _keys(item)]
    if isinstance(value, list):
        return [key for item in value for key in _keys(item)]
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []

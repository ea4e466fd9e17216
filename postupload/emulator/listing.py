"""Listing assets as the Admin API does: by prefix, by tag, and the Search API's expressions.

The search language is a useful subset of Cloudinary's: `field:value` and `field=value`, a trailing
`*` for a prefix, `field>N`, `>=`, `<`, `<=` on numbers and dates, `AND` / `OR` (AND binds tighter),
parentheses, quoted values. Fields: public_id, asset_folder (also `folder`), resource_type, type,
format, tags (also `tag`), width, height, bytes, created_at, uploaded_at, asset_id; `sort_by`
on any of them.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from typing import Any

from postupload.emulator.assets import Asset
from postupload.emulator.wire import ApiError

MAX_RESULTS = 500
Test = Callable[[Asset], bool]


def page(
    assets: list[Asset], max_results: Any, cursor: Any, order: list[tuple[str, bool]] | None = None
) -> tuple[list[Asset], str | None]:
    """One page of assets in public_id order (or `order`: (field, descending) pairs), and the cursor
    of the next (None on the last)."""
    try:
        size = min(MAX_RESULTS, max(1, int(max_results or 10)))
        start = int(cursor) if cursor else 0
    except ValueError:
        raise ApiError(400, "Invalid next_cursor or max_results") from None
    ordered = sorted(assets, key=lambda asset: (asset.public_id, asset.resource_type, asset.type))
    for name, descending in reversed(order or []):  # stable sorts: the first field decides last
        ordered.sort(key=lambda asset: _sort_key(FIELDS[name](asset)), reverse=descending)
    chosen = ordered[start : start + size]
    return chosen, (str(start + size) if start + size < len(ordered) else None)


def search_order(sort_by: Any) -> list[tuple[str, bool]]:
    """The Search API's `sort_by`: [{field: "asc" | "desc"}, ...]. Cloudinary's default is
    created_at descending; the emulator keeps public_id order unless asked."""
    order = []
    for item in sort_by or []:
        if not isinstance(item, dict) or len(item) != 1:
            raise ApiError(400, f"Invalid sort_by {item!r}: expected {{field: asc|desc}}")
        ((name, direction),) = item.items()
        if name not in FIELDS or direction not in ("asc", "desc"):
            raise ApiError(400, f"Invalid sort_by {item!r}: expected {{field: asc|desc}}")
        order.append((name, direction == "desc"))
    return order


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def search_test(expression: str) -> Test:
    """The expression as a test on an asset; ApiError(400) when it cannot be read."""
    tokens = _tokens(expression)
    if not tokens:
        return lambda asset: True
    test, rest = _or(tokens)
    if rest:
        raise ApiError(400, f"Invalid expression near {' '.join(rest)!r}")
    return test


def _tokens(expression: str) -> list[str]:
    lexer = shlex.shlex(expression.replace("(", " ( ").replace(")", " ) "), posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as error:
        raise ApiError(400, f"Invalid expression: {error}") from None


def _or(tokens: list[str]) -> tuple[Test, list[str]]:
    left, rest = _and(tokens)
    while rest and rest[0].upper() == "OR":
        right, rest = _and(rest[1:])
        left = (lambda a, b: lambda asset: a(asset) or b(asset))(left, right)
    return left, rest


def _and(tokens: list[str]) -> tuple[Test, list[str]]:
    left, rest = _term(tokens)
    while rest and rest[0] not in (")",) and rest[0].upper() != "OR":
        if rest[0].upper() == "AND":
            rest = rest[1:]
        right, rest = _term(rest)
        left = (lambda a, b: lambda asset: a(asset) and b(asset))(left, right)
    return left, rest


def _term(tokens: list[str]) -> tuple[Test, list[str]]:
    if not tokens:
        raise ApiError(400, "Invalid expression: a condition is missing")
    if tokens[0] == "(":
        inner, rest = _or(tokens[1:])
        if not rest or rest[0] != ")":
            raise ApiError(400, "Invalid expression: a '(' is not closed")
        return inner, rest[1:]
    match = re.fullmatch(r"([a-z_]+)(:|=|>=|<=|>|<)(.+)", tokens[0])
    if not match:
        raise ApiError(400, f"Invalid expression term {tokens[0]!r}")
    field, operator, value = match.groups()
    return _condition(field, operator, value), tokens[1:]


def _condition(field: str, operator: str, value: str) -> Test:
    get = FIELDS.get(field)
    if get is None:
        raise ApiError(400, f"Unsupported search field {field!r}")
    if operator in (":", "="):
        if value.endswith("*"):
            stem = value[:-1]
            return lambda asset: any(str(v).startswith(stem) for v in _values(get(asset)))
        return lambda asset: any(str(v) == value for v in _values(get(asset)))

    if not re.fullmatch(r"-?\d+(\.\d+)?|\d{4}-\d{2}-\d{2}([T ][0-9:.]+Z?)?", value):
        raise ApiError(400, f"Invalid expression: {field}{operator} takes a number or a date, not {value!r}")

    def compare(asset: Asset) -> bool:
        current = get(asset)
        if isinstance(current, str):  # dates: ISO 8601 text compares in time order
            return _ordered(operator, current, value)
        try:
            return _ordered(operator, float(current), float(value))
        except (TypeError, ValueError):
            return False

    return compare


def _ordered(operator: str, left: Any, right: Any) -> bool:
    return bool({">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[operator])


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _created(asset: Asset) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(asset.version))


FIELDS: dict[str, Callable[[Asset], Any]] = {
    "asset_id": lambda asset: asset.asset_id,
    "public_id": lambda asset: asset.public_id,
    "asset_folder": lambda asset: asset.asset_folder,
    "folder": lambda asset: asset.asset_folder,
    "resource_type": lambda asset: asset.resource_type,
    "type": lambda asset: asset.type,
    "format": lambda asset: asset.format,
    "tags": lambda asset: asset.tags,
    "tag": lambda asset: asset.tags,
    "width": lambda asset: asset.width,
    "height": lambda asset: asset.height,
    "bytes": lambda asset: asset.bytes,
    "created_at": _created,
    "uploaded_at": _created,
}

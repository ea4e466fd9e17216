"""EventBridge event patterns over notification bodies. No I/O.

Reference: docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html.
Our extension: a bare scalar where EventBridge wants a list means a list of one.
"""

from __future__ import annotations

from typing import Any

Pattern = dict[str, Any]


def _same(expected: Any, actual: Any) -> bool:
    # JSON values: true is not 1, and 1 is 1.0. Python's == says True == 1, so compare kinds first.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and expected == actual


def _leaf_matches(allowed: Any, value: Any) -> bool:
    choices = allowed if isinstance(allowed, list) else [allowed]
    values = value if isinstance(value, list) else [value]
    return any(_same(choice, item) for choice in choices for item in values)


def matches(pattern: Pattern, event: Any) -> bool:
    """True when every field the pattern names is present in the event and matches."""
    if not isinstance(event, dict):
        return False
    for key, sub in pattern.items():
        if key not in event:
            return False
        value = event[key]
        if isinstance(sub, dict):
            candidates = value if isinstance(value, list) else [value]
            if not any(matches(sub, candidate) for candidate in candidates):
                return False
        elif not _leaf_matches(sub, value):
            return False
    return True

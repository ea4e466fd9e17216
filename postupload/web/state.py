"""What the web's views share: the parts (postupload.parts), built once by create_app and kept on
the app, and the form of an error answer."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, current_app, jsonify
from prometheus_client import CollectorRegistry

from postupload.errors import RuleSetError
from postupload.parts import Parts
from postupload.store.kept_notifications import Keep


@dataclass
class Web:
    parts: Parts
    keep: Keep  # the bounds of the notifications kept for previews
    metrics: CollectorRegistry  # what /metrics reads from Redis as it answers


def web() -> Web:
    """The app's parts, from within a request."""
    found: Web = current_app.extensions["postupload"]
    return found


def error_answer(code: str, message: str, status: int) -> tuple[Response, int]:
    """Every error answer: a stable `code` and a `message` that says what to do."""
    return jsonify({"error": {"code": code, "message": message}}), status


def rules_summary(error: Exception) -> str:
    """What is wrong with the rule files, in codes and counts: `/readyz` answers anyone, and a
    problem's own words may quote a value (a URL with a token in it) or the rules directory."""
    where = "details: `postupload rules check` and the console's Rules page"
    if isinstance(error, RuleSetError):
        codes = sorted({problem.code for problem in error.problems})
        count = len(error.problems)
        return f"invalid: {', '.join(codes)} ({count} problem{'s' if count != 1 else ''}); {where}"
    return f"unreadable ({type(error).__name__}); {where}"

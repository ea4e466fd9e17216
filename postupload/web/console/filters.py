"""How the console's templates show values: times, the assets of a notification, rule files, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from postupload.core.notification import locate
from postupload.rules.explain import describe
from postupload.web.console.blueprint import console
from postupload.web.state import web


@console.app_template_filter("when")
def when(moment: float | datetime | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, datetime):
        moment = moment.timestamp()
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")


console.add_app_template_global(describe, "describe")


@console.app_template_filter("assets")
def assets_of(notification: dict[str, Any]) -> str:
    """The public ids a notification is about, as the worker finds them."""
    return ", ".join(target.public_id for target in locate(notification).targets)


@console.app_template_filter("rule_file")
def rule_file(file: str) -> str:
    """A rule file's path as ops know it: within the rules directory."""
    path, directory = Path(file), web().parts.rules.directory
    return str(path.relative_to(directory)) if path.is_relative_to(directory) else file


@console.app_template_filter("pretty")
def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)

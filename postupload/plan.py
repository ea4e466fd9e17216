"""From matched rules to the exact calls to make. Pure: shared by the worker, `rules explain` and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers import REGISTRY
from postupload.errors import ActionError
from postupload.notification import Notification
from postupload.placeholders import fill
from postupload.ruleset import Rule


@dataclass(frozen=True)
class PlannedAction:
    rule: str
    index: int  # position of the action in its rule, part of its identity
    action: str
    params: dict[str, Any]
    error: str | None = None  # why it cannot be made (a placeholder the notification cannot fill)

    def as_dict(self) -> dict[str, Any]:
        """The shape rule tests write: {rule: NAME, ACTION: PARAMS} (or {rule, ACTION, error})."""
        if self.error:
            return {"rule": self.rule, self.action: None, "error": self.error}
        return {"rule": self.rule, self.action: self.params}


def plan_actions(rules: list[Rule], notification: Notification) -> list[PlannedAction]:
    """Every action of every matched rule, in order, with its placeholders filled and parameters exact."""
    planned = []
    for rule in rules:
        for index, action in enumerate(rule.actions):
            ((name, params),) = action.items()
            try:
                call = REGISTRY[name].plan(fill(params, notification))
            except ActionError as error:
                planned.append(PlannedAction(rule.name, index, name, {}, str(error)))
                continue
            planned.append(PlannedAction(rule.name, index, name, call))
    return planned

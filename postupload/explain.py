"""`rules explain`: each rule's decision for one notification, and the calls that would follow. Pure."""

from __future__ import annotations

from typing import Any

from postupload.notification import asset_ref
from postupload.patterns import first_mismatch
from postupload.plan import PlannedAction, plan_actions
from postupload.ruleset import RuleSet


def explain_notification(ruleset: RuleSet, notification: dict[str, Any]) -> str:
    """A report: one line per rule, then the API calls, in the order they would be made."""
    matched = ruleset.match(notification)
    matched_names = {rule.name for rule in matched}
    stopper = matched[-1].name if matched and matched[-1].stop else None
    lines = []
    for rule in ruleset.rules:
        where = f"({rule.file}:{rule.line})"
        if not rule.enabled:
            lines.append(f"  - {rule.name}: disabled {where}")
        elif rule.name in matched_names:
            lines.append(
                f"  ✓ {rule.name}: matched{' (stop: no later rule runs)' if rule.stop else ''} {where}"
            )
        else:
            reason = first_mismatch(rule.effective_pattern, notification)
            if reason is None:
                lines.append(f"  - {rule.name}: would match, but {stopper} stopped the run {where}")
            else:
                lines.append(f"  ✗ {rule.name}: {reason} {where}")
    calls = plan_actions(matched, notification)
    lines.append(f"{len(matched)} of {len(ruleset.rules)} rules match; {len(calls)} API calls would be made:")
    lines += [f"  {describe_call(call, notification)}" for call in calls] or ["  (none)"]
    return "\n".join(lines)


def describe_call(call: PlannedAction, notification: dict[str, Any]) -> str:
    """The SDK call, as code: what `rules explain` shows and what the worker makes."""
    if "public_id" not in notification:
        return f"{call.action}: the notification has no public_id, so this call would fail"
    resource_type, delivery_type, public_id = asset_ref(notification)
    arguments = [repr(public_id), f"resource_type={resource_type!r}", f"type={delivery_type!r}"]
    arguments += [f"{key}={value!r}" for key, value in call.params.items()]
    return f"cloudinary.uploader.{call.action}({', '.join(arguments)})  # rule {call.rule}"

"""`rules explain`: each rule's decision for one notification, and the calls that would follow. Pure."""

from __future__ import annotations

from typing import Any

from handlers import REGISTRY
from handlers import explicit as explicit_handler
from handlers.tags import COMMANDS as TAG_COMMANDS
from postupload.notification import Target, targets
from postupload.patterns import first_mismatch
from postupload.plan import PlannedAction, plan_actions
from postupload.ruleset import RuleSet

TAG_FUNCTIONS = {"add": "add_tag", "remove": "remove_tag", "replace": "replace_tag"}


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
    planned = plan_actions(matched, notification)
    assets = targets(notification)
    calls = [line for target in assets for line in describe_calls(planned, target)]
    if planned and not assets:
        calls = ["the notification names no asset (no public_id, no resources), so no call can be made"]
    lines.append(f"{len(matched)} of {len(ruleset.rules)} rules match; {len(calls)} API calls would be made:")
    lines += [f"  {call}" for call in calls] or ["  (none)"]
    return "\n".join(lines)


def describe_calls(planned: list[PlannedAction], target: Target) -> list[str]:
    """The SDK calls for one asset, as code, grouped as the worker makes them."""
    where = [repr(target.public_id), f"resource_type={target.resource_type!r}", f"type={target.type!r}"]
    lines = [f"# rule {a.rule}: {a.action} cannot be made: {a.error}" for a in planned if a.error]
    ready = [action for action in planned if not action.error]
    shared = [action for action in ready if REGISTRY[action.action].way == "explicit"]
    for members, call in explicit_handler.share([action.params for action in shared]):
        rules = ", ".join(dict.fromkeys(shared[index].rule for index in members))
        lines.append(f"cloudinary.uploader.explicit({_arguments(where, call)})  # rule {rules}")
    for action in ready:
        way = REGISTRY[action.action].way
        if way == "tags":
            for command in TAG_COMMANDS:
                if command in action.params:
                    function = TAG_FUNCTIONS[command]
                    batched = command != "replace"
                    ids = f"[{target.public_id!r}, ...]" if batched else f"[{target.public_id!r}]"
                    arguments = [repr(action.params[command]), ids, *where[1:]]
                    how = "batched with other assets, up to 1000 a call" if batched else "sent at once"
                    lines.append(
                        f"cloudinary.uploader.{function}({', '.join(arguments)})  # rule {action.rule}; {how}"
                    )
        elif way == "upload":
            (value,) = action.params.values()
            function = REGISTRY[action.action].sdk_call
            arguments = [repr(value), f"[{target.public_id!r}]", *where[1:]]
            lines.append(f"{function}({', '.join(arguments)})  # rule {action.rule}")
        elif way == "admin":
            lines.append(
                f"cloudinary.api.update({_arguments(where, action.params)})  # rule {action.rule}; "
                "Admin API, within the shared rate-limit budget"
            )
    return lines


def _arguments(where: list[str], call: dict[str, Any]) -> str:
    return ", ".join([*where, *(f"{key}={value!r}" for key, value in call.items())])

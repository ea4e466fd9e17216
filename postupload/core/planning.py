"""From matched rules and a notification to the exact calls: one answer, shared by the worker,
`rules explain`, rule tests and every preview. Pure: no Redis, RQ, Flask, SDK or network."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from handlers import ENDPOINTS, REGISTRY
from postupload.core.calls import ActionRef, AssetPlan, Call, Delivery, Params, Plan, PlannedAction, Refusal
from postupload.core.notification import Notification, Target, locate
from postupload.core.placeholders import fill_params
from postupload.errors import ActionError

if TYPE_CHECKING:
    from postupload.core.ruleset import Rule

# A notification's calls go in this order: what is sent at once (so a tag `replace` lands before
# the same notification's batched adds), then the batched, then the budgeted Admin API calls.
DELIVERY_ORDER: dict[Delivery, int] = {"now": 0, "batch": 1, "budget": 2}


def plan_actions(rules: Sequence[Rule], notification: Notification) -> list[PlannedAction]:
    """Every action of every matched rule, in order, with its placeholders filled and parameters exact."""
    planned = []
    for rule in rules:
        for index, action in enumerate(rule.actions):
            ((name, params),) = action.items()
            try:
                handler = REGISTRY[name]
                call = handler.plan(fill_params(params, notification, handler.slots), notification)
            except ActionError as error:
                planned.append(PlannedAction(rule.name, index, name, {}, str(error)))
                continue
            planned.append(PlannedAction(rule.name, index, name, call))
    return planned


def occurrence(notification: Notification, notification_id: str) -> str:
    """Which occurrence of an asset's actions this is: its version, else the notification itself."""
    version = notification.get("version")
    return f"v{version}" if version else f"n{notification_id}"


def call_key(target: Target, occurrence: str, call: Call) -> str:
    """A call's idempotency key: (environment, asset, occurrence, what the call does). Rule names and
    positions are not part of it: an edited action is a new call, an unchanged one is not."""
    content = [
        call.api,
        call.endpoint,
        call.resource_type,
        call.type,
        call.public_ids,
        call.params,
        call.delivery,
    ]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"{target.key}:{occurrence}:{digest}"


def plan_calls(
    actions: Sequence[PlannedAction], target: Target, occurrence: str
) -> tuple[list[Call], list[Refusal]]:
    """The calls these actions make on one asset, in the order they are made, and the refusals.

    Calls to an endpoint that can share a request (explicit) are joined when its `merge` allows;
    two actions asking for the very same call are one call.
    """
    calls: list[Call] = []
    refused = []
    for action in actions:
        ref = ActionRef(action.rule, action.index, action.action)
        if action.error:
            refused.append(Refusal(ref, action.error))
            continue
        for request in REGISTRY[action.action].requests(action.params):
            call = Call(
                request.api,
                request.endpoint,
                target.resource_type,
                target.type,
                (target.public_id,),
                request.params,
                request.delivery,
                (ref,),
            )
            if not _joined(calls, call):
                calls.append(call)
    calls.sort(key=lambda call: DELIVERY_ORDER[call.delivery])
    return [replace(call, key=call_key(target, occurrence, call)) for call in calls], refused


def _joined(calls: list[Call], new: Call) -> bool:
    """Fold `new` into the first earlier call its endpoint lets it share a request with."""
    merge = ENDPOINTS[new.endpoint].merge
    for position, call in enumerate(calls):
        if call.endpoint != new.endpoint or call.delivery != new.delivery:
            continue
        if call.params == new.params:  # two actions asking for the very same call
            params: Params | None = call.params
        else:
            params = merge(call.params, new.params) if merge else None
        if params is not None:
            calls[position] = Call(
                call.api,
                call.endpoint,
                call.resource_type,
                call.type,
                call.public_ids,
                params,
                call.delivery,
                call.actions + new.actions,
            )
            return True
    return False


def plan(
    rules: Sequence[Rule], notification: Notification, notification_id: str, cloud_name: str = ""
) -> Plan:
    """What a notification of this product environment causes, given the rules it matched (in
    order): every asset's calls. Callers go through `decision.decide`, which says which rules."""
    actions = plan_actions(rules, notification)
    located = locate(notification)
    seen = occurrence(notification, notification_id)
    assets = []
    for found in located.targets:
        target = replace(found, cloud_name=cloud_name)
        calls, refused = plan_calls(actions, target, seen)
        assets.append(AssetPlan(target, tuple(calls), tuple(refused)))
    problems = tuple(located.problems) if actions else ()
    return Plan(tuple(rule.name for rule in rules), tuple(actions), tuple(assets), problems)

"""Performing a notification's plan on Cloudinary: once each, within the budgets. The calls themselves
are decided by `planning.py`; this shell only skips what is done, applies the loop guard, and sends,
batches or budgets each call as the plan says.

Every planned action on an asset has an idempotency key (asset, version, rule, action); a key that
exists means the action already took effect and is skipped, which is what makes retried jobs,
replays and duplicate notifications safe.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import redis

from handlers import ENDPOINTS
from postupload import history, keys
from postupload.batches import Spec, TagBatches
from postupload.budget import AdminBudget
from postupload.calls import Call, Plan, PlannedAction
from postupload.client import Client
from postupload.envelope import Envelope
from postupload.errors import ActionError, RateLimitError
from postupload.notification import Target
from postupload.planning import action_ref, occurrence, plan_calls

log = logging.getLogger(__name__)

# Claim each action's done key unless it holds something (an outcome, or another job's claim): ''
# for a claim made now, else what it holds. A claim outlives any job that makes it.
_CLAIM = """
local found = {}
for i, key in ipairs(KEYS) do
  if redis.call('set', key, ARGV[1], 'NX', 'EX', ARGV[2]) then
    found[i] = ''
  else
    found[i] = redis.call('get', key)
  end
end
return found
"""
CLAIM_TTL = keys.JOB_TIMEOUT + 60

# Add to an hourly count; a count just made gets its expiry (one round trip, atomic).
_COUNT = """
local count = redis.call('incrby', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('expire', KEYS[1], ARGV[2]) end
return count
"""


@dataclass
class Outcome:
    rule: str
    index: int
    action: str
    public_id: str
    status: str  # ok | skipped | batched | deferred | capped | failed
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    permanent: bool = False
    reason: str | None = None  # of a failure: Cloudinary's status, timeout, connection, placeholder

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rule": self.rule,
            "action": self.action,
            "public_id": self.public_id,
            "status": self.status,
            **self.detail,
        }
        if self.error:
            data["error"] = self.error
            data["reason"] = self.reason or "error"
        return data


@dataclass
class Executor:
    """Performs plans. Everything it uses is handed to it."""

    connection: redis.Redis
    client: Client
    batches: TagBatches
    budget: AdminBudget
    schedule: Callable[[Envelope, float], None]  # run the notification again at a unix time
    cap: int = 100  # actions per asset per hour; 0 turns the loop guard off
    clock: Callable[[], float] = time.time

    def execute(self, envelope: Envelope, plan: Plan) -> list[Outcome]:
        """Perform the plan on every asset of the notification; every outcome, in order.

        Each asset's history first gets the notification and the rules it matched, then the outcomes.
        """
        outcomes: list[Outcome] = []
        stories: list[history.Story] = []
        retry_at = 0.0
        seen = occurrence(envelope.notification, envelope.id)
        renamed = envelope.notification_type == "rename"  # each asset's public_id is new: map it now
        with self.connection.pipeline(transaction=False) as pipe:
            for number, asset in enumerate(plan.assets, 1):
                target = replace(asset.target, cloud_name=envelope.cloud_name)
                asset_key = history.asset_key(self.connection, target)
                run = _Run(self, target, asset_key, envelope.id, outcomes, pipe)
                entry = {
                    "event": "notification",
                    "notification": envelope.id,
                    "cloud_name": envelope.cloud_name,
                    "notification_type": envelope.notification_type,
                    "rules": list(plan.rules),
                }
                if envelope.backfill:
                    entry["backfill"] = envelope.backfill
                run.told.append((entry, self.clock()))
                todo = run.not_done(list(plan.actions), seen)
                calls, _ = plan_calls(run.within_cap(todo), target, seen)
                # The last call sent leaves its done marks to the writes below: only Redis comes between.
                last = max((i for i, call in enumerate(calls) if call.delivery != "batch"), default=-1)
                retry_at = max([retry_at, *(run.perform(call, i != last) for i, call in enumerate(calls))])
                run.finish_batched()
                if number < len(plan.assets):
                    pipe.execute()  # this asset's last done marks, before the next asset's calls
                stories.append(history.Story(asset_key, target.index_name, run.told, renamed=renamed))
            history.record_all(pipe, stories)  # every asset's, in one call
            pipe.execute()
        if retry_at:
            self.schedule(envelope, retry_at)
        return outcomes


class _Run:
    """The calls for one asset of one notification. Records go into `pipe`, sent once at the end; a
    successful call's done marks at once, so they are never lost to a crash after it (its history
    entries wait for the end: a job run again after a crash records the action as already done)."""

    def __init__(
        self,
        executor: Executor,
        target: Target,
        asset_key: str,
        notification_id: str,
        outcomes: list[Outcome],
        pipe: redis.client.Pipeline,
    ) -> None:
        self.x = executor
        self.target = target
        self.asset_key = asset_key  # the asset's history and loop-guard identity
        self.notification_id = notification_id
        self.outcomes = outcomes
        self.pipe = pipe
        self.actions: dict[tuple[str, int], PlannedAction] = {}
        self.batched: dict[tuple[str, int], str] = {}  # actions whose changes joined batches -> done key
        self.joining: list[tuple[Spec, dict[str, Any]]] = []  # their changes, sent by finish_batched
        self.told: list[tuple[dict[str, Any], float]] = []  # history entries, written at the end
        self.claimed: dict[tuple[str, int], str] = {}  # actions this run claimed -> their done key

    def not_done(self, actions: list[PlannedAction], seen: str) -> list[PlannedAction]:
        """The actions still to do, each claimed (its done key holds our claim until its outcome
        replaces it): a job working the same action at the same moment (a backfill beside a live
        notification, on a worker's other thread or another worker) skips it. Those done or being
        done elsewhere are recorded as skipped, unmakeable ones as failed."""
        self.actions = {(action.rule, action.index): action for action in actions}
        for action in actions:
            if action.error:
                self.finish([action], "failed", error=action.error, permanent=True, reason="placeholder")
        wanted = [action for action in actions if not action.error]
        done_keys = [keys.done(action_ref(self.target, seen, action).key) for action in wanted]
        claim = json.dumps({"status": "claimed", "by": self.notification_id, "at": self.x.clock()})
        found = self.x.connection.eval(_CLAIM, len(done_keys), *done_keys, claim, CLAIM_TTL) if wanted else []
        todo = []
        for action, key, earlier in zip(wanted, done_keys, found, strict=True):
            mark = json.loads(earlier) if earlier else {"status": "claimed", "by": self.notification_id}
            if mark.get("status") == "claimed" and mark.get("by") == self.notification_id:
                self.claimed[(action.rule, action.index)] = key  # ours (now, or by this job's last try)
                todo.append(action)
            elif mark.get("status") == "claimed":
                detail = f"being done by notification {mark.get('by')}"
                self.finish([action], "skipped", {"detail": detail})
            else:
                self.finish([action], "skipped", {"detail": f"already {mark.get('status', 'ok')}"})
        return todo

    def within_cap(self, todo: list[PlannedAction]) -> list[PlannedAction]:
        """The loop guard: past `cap` actions on this asset this hour, the rest are stopped, with why."""
        if not self.x.cap or not todo:
            return todo
        key = keys.cap(self.asset_key, int(self.x.clock()) // keys.CAP_WINDOW)
        count = int(self.x.connection.eval(_COUNT, 1, key, len(todo), 2 * keys.CAP_WINDOW))
        allowed = max(0, self.x.cap - (count - len(todo)))
        reason = (
            f"loop guard: more than {self.x.cap} actions on this asset within the hour "
            "(POSTUPLOAD_ASSET_ACTION_CAP); not run"
        )
        for action in todo[allowed:]:
            log.warning(
                "%s %s: rule %s %s stopped: %s",
                self.notification_id,
                self.target.public_id,
                action.rule,
                action.action,
                reason,
            )
            self.finish([action], "capped", {"detail": reason})
        return todo[:allowed]

    def perform(self, call: Call, write_now: bool = True) -> float:
        """Send, batch or budget one call; the time to run the notification again at, or 0."""
        actions = [self.actions[(ref.rule, ref.index)] for ref in call.actions]
        done_keys = [keys.done(ref.key) for ref in call.actions]
        if call.delivery == "batch":
            self.join_batch(call)
            return 0.0
        if call.delivery == "budget":
            retry_at = self.x.budget.take(self.x.clock())
            if retry_at:
                self.finish(actions, "deferred", {"until": _iso(retry_at)})
                return retry_at
        try:
            answer = ENDPOINTS[call.endpoint].send(self.x.client, call)
        except RateLimitError as error:
            self.x.budget.spent(error.reset)
            self.finish(actions, "deferred", {"until": _iso(error.reset)})
            return error.reset
        except ActionError as error:
            if call.delivery == "budget":
                self.x.budget.release()
            self.finish(actions, "failed", error=str(error), permanent=error.permanent, reason=error.reason)
            return 0.0
        if call.delivery == "budget":
            self.x.budget.learn(answer.rate_limit)
        self.finish(actions, "ok", answer.detail, marks=done_keys)
        if write_now:
            self.pipe.execute()  # the done marks now: a crash after the call must not lose them
        return 0.0

    def join_batch(self, call: Call) -> None:
        """Each asset's change joins its batch; the batches mark it done once sent."""
        command, tags = call.params["command"], tuple(call.params["tags"])
        spec = Spec(call.resource_type, call.type, command, tags, self.target.cloud_name)
        for ref in call.actions:
            item = {
                "public_id": self.target.public_id,
                "index": self.target.index_name,
                "asset": self.asset_key,
                "key": keys.done(f"{ref.key}:{command}"),
                "rule": ref.rule,
                "notification": self.notification_id,
            }
            self.joining.append((spec, item))
            self.batched[(ref.rule, ref.index)] = keys.done(ref.key)

    def finish_batched(self) -> None:
        """The changes join their batches (one round trip); an action whose every change joined a
        batch is recorded once, as batched (and marked done)."""
        self.x.batches.add_many(self.joining)
        self.joining.clear()
        for (rule, index), done_key in self.batched.items():
            action = self.actions[(rule, index)]
            self.finish([action], "batched", marks=[done_key])
        self.batched.clear()

    def finish(
        self,
        actions: list[PlannedAction],
        status: str,
        detail: dict[str, Any] | None = None,
        *,
        error: str | None = None,
        permanent: bool = False,
        reason: str | None = None,
        marks: list[str] | None = None,
    ) -> None:
        """Record an outcome for these actions, and write their done marks when given (else let go
        of their claims: whoever works the action next does it)."""
        for position, action in enumerate(actions):
            claimed = self.claimed.pop((action.rule, action.index), None)
            if claimed and not marks:
                self.pipe.delete(claimed)
            outcome = Outcome(
                action.rule,
                action.index,
                action.action,
                self.target.public_id,
                status,
                detail or {},
                error,
                permanent,
                reason,
            )
            self.outcomes.append(outcome)
            if marks:
                mark = {"status": status, "at": self.x.clock()}
                self.pipe.set(marks[position], json.dumps(mark), ex=keys.DONE_TTL)
            entry = {"event": "action", "notification": self.notification_id, "call": action.params}
            entry.update(outcome.as_dict())
            self.told.append((entry, self.x.clock()))


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")

"""Performing a notification's plan on Cloudinary: once each, within the budgets. The plan is
`decision.decide`'s; this shell never plans again. It only asks Redis which of the plan's calls are
done or being done, applies the loop guard, and sends, batches or budgets each call as the plan says.

Every call carries an idempotency key: (environment, asset, asset version, what the call does). A
key that holds an outcome means that very call took effect and is skipped, which is what makes
retried jobs, replays and duplicate notifications safe; an edited rule makes a new call, once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from handlers import ENDPOINTS
from postupload.core.calls import ActionRef, AssetPlan, Call, Plan, Status
from postupload.core.client import Client
from postupload.core.envelope import Envelope
from postupload.core.notification import OTHER, origin
from postupload.errors import ActionError, RateLimitError
from postupload.store import history, keys
from postupload.store.batches import Spec, TagBatches
from postupload.store.budget import AdminBudget

log = logging.getLogger(__name__)

# Claim each call's done key unless it holds something (an outcome, or another job's claim): ''
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

# Let go of a claim only while it is still ours: another job's outcome written meanwhile stays.
_RELEASE = """
local mark = redis.call('get', KEYS[1])
if not mark then return 0 end
local found = cjson.decode(mark)
if found['status'] == 'claimed' and found['by'] == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

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
    status: Status
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
    api_key: str = ""  # the one its calls are made with: what `triggered_by` names for them

    def execute(self, envelope: Envelope, plan: Plan, job_id: str | None = None) -> list[Outcome]:
        """Perform the plan on every asset of the notification; every outcome, in order. `job_id`
        names the job doing it (its claims, and what a later skip relies on); the notification's id
        when none is given.

        Each asset's history first gets the notification and the rules it matched, then the outcomes.
        """
        outcomes: list[Outcome] = []
        caused = origin(envelope.notification, self.api_key)
        stories: list[history.Story] = []
        retry_at = 0.0
        renamed = envelope.notification_type == "rename"  # each asset's public_id is new: map it now
        with self.connection.pipeline(transaction=False) as pipe:
            for number, asset in enumerate(plan.assets, 1):
                asset_key = history.asset_key(self.connection, asset.target)
                run = _Run(self, plan, asset, asset_key, envelope.id, job_id or envelope.id, outcomes, pipe)
                entry = {
                    "event": "notification",
                    "notification": envelope.id,
                    "job": run.job_id,
                    "cloud_name": envelope.cloud_name,
                    "notification_type": envelope.notification_type,
                    "rules": list(plan.rules),
                    "origin": caused,
                }
                if envelope.backfill and envelope.run_kind:
                    entry[envelope.run_kind] = envelope.backfill
                run.told.append((entry, self.clock()))
                run.refuse()
                # The loop guard counts what this deployment's calls may have caused: not what a user
                # in the Console or another API key did, however often they do it.
                calls = run.not_done() if caused == OTHER else run.within_cap(run.not_done())
                # The last call sent leaves its done marks to the writes below: only Redis comes between.
                last = max((i for i, call in enumerate(calls) if call.delivery != "batch"), default=-1)
                retry_at = max([retry_at, *(run.perform(call, i != last) for i, call in enumerate(calls))])
                run.finish_batched()
                if number < len(plan.assets):
                    pipe.execute()  # this asset's last done marks, before the next asset's calls
                stories.append(history.Story(asset_key, asset.target.index_name, run.told, renamed=renamed))
            history.record_all(pipe, stories)  # every asset's, in one call
            pipe.execute()
        if retry_at:
            self.schedule(envelope, retry_at)
        return outcomes


class _Run:
    """The calls for one asset of one notification. Records go into `pipe`, sent once at the end; a
    successful call's done marks at once, so they are never lost to a crash after it (its history
    entries wait for the end: a job run again after a crash records the call as already done)."""

    def __init__(
        self,
        executor: Executor,
        plan: Plan,
        asset: AssetPlan,
        asset_key: str,
        notification_id: str,
        job_id: str,
        outcomes: list[Outcome],
        pipe: redis.client.Pipeline,
    ) -> None:
        self.x = executor
        self.asset = asset
        self.target = asset.target
        self.asset_key = asset_key  # the asset's history and loop-guard identity
        self.notification_id = notification_id
        self.job_id = job_id
        self.outcomes = outcomes
        self.pipe = pipe
        self.joining: list[tuple[Spec, dict[str, Any]]] = []  # batched changes, sent by finish_batched
        self.batched: list[Call] = []  # their calls, marked once every change joined its batch
        self.told: list[tuple[dict[str, Any], float]] = []  # history entries, written at the end
        self.claimed: set[str] = set()  # done keys this run holds a claim on
        # The loop guard stops the last actions first, in the order of the rules.
        self.rule_order = {rule: position for position, rule in enumerate(plan.rules)}

    def refuse(self) -> None:
        """Actions the plan could not make (a placeholder the notification cannot fill) fail, for good."""
        for refusal in self.asset.refused:
            self.record(
                refusal.action, {}, Status.FAILED, error=refusal.error, permanent=True, reason="placeholder"
            )

    def not_done(self) -> list[Call]:
        """The plan's calls still to make, each claimed (its done key holds our claim until its outcome
        replaces it): a job making the same call at the same moment (a backfill beside a live
        notification, a deferred copy beside its original, on this worker or another) skips it.
        Those done, or being done by another job, are recorded as skipped, with the call relied on."""
        calls = list(self.asset.calls)
        if not calls:
            return []
        done_keys = [keys.done(call.key) for call in calls]
        claim = json.dumps({"status": "claimed", "by": self.job_id, "at": self.x.clock()})
        found = self.x.connection.eval(_CLAIM, len(done_keys), *done_keys, claim, CLAIM_TTL)
        todo = []
        for call, key, earlier in zip(calls, done_keys, found, strict=True):
            mark: dict[str, Any] = (
                json.loads(earlier) if earlier else {"status": "claimed", "by": self.job_id}
            )
            if mark.get("status") == "claimed" and mark.get("by") == self.job_id:
                self.claimed.add(key)  # ours (now, or by this job's last try)
                todo.append(call)
                continue
            relied_on = {"job": mark.get("by"), "at": _iso(mark["at"]) if mark.get("at") else None}
            if mark.get("status") == "claimed":
                detail = f"being made by job {mark.get('by')}"
                self.finish(call, Status.SKIPPED, {"detail": detail, "relied_on": relied_on})
            else:
                detail = f"already {mark.get('status', 'ok')}"
                self.finish(call, Status.SKIPPED, {"detail": detail, "relied_on": relied_on})
        return todo

    def within_cap(self, todo: list[Call]) -> list[Call]:
        """The loop guard: past `cap` actions on this asset this hour, the rest are stopped, with why."""
        # An action counts once, however many calls it makes (a tag `remove` and `add` are two).
        order = sorted({(self.rule_order.get(a.rule, 0), a.index) for call in todo for a in call.actions})
        wanted = len(order)
        if not self.x.cap or not wanted:
            return todo
        key = keys.cap(self.asset_key, int(self.x.clock()) // keys.CAP_WINDOW)
        count = int(self.x.connection.eval(_COUNT, 1, key, wanted, 2 * keys.CAP_WINDOW))
        allowed = max(0, self.x.cap - (count - wanted))
        reason = (
            f"loop guard: more than {self.x.cap} actions on this asset within the hour "
            "(POSTUPLOAD_ASSET_ACTION_CAP); not run"
        )
        # The first `allowed` actions in rule order run; a call runs if all its actions do.
        runs = set(order[:allowed])
        kept: list[Call] = []
        for call in todo:
            if all((self.rule_order.get(a.rule, 0), a.index) in runs for a in call.actions):
                kept.append(call)
                continue
            log.warning(
                "%s %s: rules %s %s stopped: %s",
                self.notification_id,
                self.target.public_id,
                ", ".join(call.rules),
                call.endpoint,
                reason,
            )
            self.finish(call, Status.CAPPED, {"detail": reason})
        return kept

    def perform(self, call: Call, write_now: bool = True) -> float:
        """Send, batch or budget one call; the time to run the notification again at, or 0."""
        if call.delivery == "batch":
            self.join_batch(call)
            return 0.0
        if call.delivery == "budget":
            retry_at = self.x.budget.take(self.x.clock())
            if retry_at:
                self.finish(call, Status.DEFERRED, {"until": _iso(retry_at)})
                return retry_at
        try:
            answer = ENDPOINTS[call.endpoint].send(self.x.client, call)
        except RateLimitError as error:
            self.x.budget.spent(error.reset)
            self.finish(call, Status.DEFERRED, {"until": _iso(error.reset)})
            return error.reset
        except ActionError as error:
            if call.delivery == "budget":
                self.x.budget.release()
            self.finish(call, Status.FAILED, error=str(error), permanent=error.permanent, reason=error.reason)
            return 0.0
        if call.delivery == "budget":
            self.x.budget.learn(answer.rate_limit)
        self.finish(call, Status.OK, answer.detail, mark=True)
        if write_now:
            self.pipe.execute()  # the done marks now: a crash after the call must not lose them
        return 0.0

    def join_batch(self, call: Call) -> None:
        """The asset's change joins its batch; the batch marks it sent once Cloudinary answered."""
        command, tags = call.params["command"], tuple(call.params["tags"])
        spec = Spec(call.resource_type, call.type, command, tags, self.target.cloud_name)
        item = {
            "public_id": self.target.public_id,
            "index": self.target.index_name,
            "asset": self.asset_key,
            "key": keys.done(f"{call.key}:sent"),
            "rule": ", ".join(call.rules),
            "notification": self.notification_id,
            "job": self.job_id,
        }
        self.joining.append((spec, item))
        self.batched.append(call)

    def finish_batched(self) -> None:
        """The changes join their batches (one round trip); each call is recorded as batched (and
        marked: a job run again does not add it twice)."""
        self.x.batches.add_many(self.joining)
        self.joining.clear()
        for call in self.batched:
            self.finish(call, Status.BATCHED, mark=True)
        self.batched.clear()

    def finish(
        self,
        call: Call,
        status: Status,
        detail: dict[str, Any] | None = None,
        *,
        error: str | None = None,
        permanent: bool = False,
        reason: str | None = None,
        mark: bool = False,
    ) -> None:
        """Record an outcome for the call's actions, and write its done mark when asked (else let go
        of our claim, if it is still ours: whoever makes the call next does it)."""
        key = keys.done(call.key)
        if key in self.claimed:
            self.claimed.discard(key)
            if mark:
                written = {"status": status, "at": self.x.clock(), "by": self.job_id}
                self.pipe.set(key, json.dumps(written), ex=keys.DONE_TTL)
            else:
                self.pipe.eval(_RELEASE, 1, key, self.job_id)
        for action in call.actions:
            self.record(
                action,
                call.params,
                status,
                detail,
                error=error,
                permanent=permanent,
                reason=reason,
                endpoint=call.endpoint,
            )

    def record(
        self,
        action: ActionRef,
        sent: dict[str, Any],
        status: Status,
        detail: dict[str, Any] | None = None,
        *,
        error: str | None = None,
        permanent: bool = False,
        reason: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        """One action's outcome, and its history entry: the parameters of the call as sent (or as it
        would have been), never what the action alone asked for."""
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
        entry: dict[str, Any] = {"event": "action", "notification": self.notification_id, "job": self.job_id}
        if endpoint:
            entry["endpoint"] = endpoint
        entry["call"] = sent
        entry.update(outcome.as_dict())
        self.told.append((entry, self.x.clock()))


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")

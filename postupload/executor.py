"""Running planned actions on Cloudinary: once each, at the lowest cost, within the budgets.

For each asset a notification is about, every planned action has an idempotency key
(asset, version, rule, action); a key that exists means the action already took effect and is
skipped, which is what makes retried jobs, replays and duplicate notifications safe. Explicit and
add-on actions that can share one `explicit` request share it; tag changes join a batch; moderation
goes through the shared Admin API budget and, when it is spent, is scheduled for the reset.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from handlers import REGISTRY
from handlers import explicit as explicit_handler
from handlers.tags import COMMANDS as TAG_COMMANDS
from postupload import history
from postupload.batches import Spec, TagBatches
from postupload.budget import AdminBudget
from postupload.cloudinary_api import CloudinaryClient
from postupload.errors import ActionError, RateLimitError
from postupload.notification import Target, targets
from postupload.plan import PlannedAction

log = logging.getLogger(__name__)

DONE_TTL = 8 * 24 * 3600  # longer than failed jobs are kept (7 days), so a replay skips what succeeded
CAP_WINDOW = 3600


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
        return data


@dataclass
class Executor:
    connection: redis.Redis
    client: CloudinaryClient
    queue: Queue  # for flushes and deferred runs: the worker's first queue
    retry_job: Any  # (envelope, when) -> None: schedule the notification to run again
    cap: int = 100  # actions per asset per hour; 0 turns the loop guard off
    retries: int = 6
    batches: TagBatches = field(init=False)
    budget: AdminBudget = field(init=False)

    def __post_init__(self) -> None:
        self.batches = TagBatches(self.connection, self.queue, self.client.timeout + 10, self.retries)
        self.budget = AdminBudget(self.connection, self.client.account.cloud_name)

    def execute(self, envelope: dict[str, Any], planned: list[PlannedAction]) -> list[Outcome]:
        notification, notification_id = envelope["notification"], envelope["id"]
        version = notification.get("version")
        occurrence = f"v{version}" if version else f"n{notification_id}"
        outcomes: list[Outcome] = []
        defer_until = 0.0
        for target in targets(notification):
            run = _Run(self, target, notification_id, outcomes)
            todo = []
            for action in planned:
                if action.error:
                    run.finish(
                        [action],
                        Outcome(
                            action.rule,
                            action.index,
                            action.action,
                            target.public_id,
                            "failed",
                            error=action.error,
                            permanent=True,
                        ),
                    )
                    continue
                key = f"postupload:done:{target.key}:{occurrence}:{action.rule}:{action.index}"
                done = self.connection.get(key)
                if done is not None:
                    earlier = json.loads(done).get("status", "ok")
                    outcomes.append(run.outcome(action, "skipped", {"detail": f"already {earlier}"}))
                    continue
                todo.append((action, key))
            todo = run.within_cap(todo)
            defer_until = max(defer_until, run.make_calls(todo))
        if defer_until:
            self.retry_job(envelope, defer_until)
        return outcomes


class _Run:
    """The calls for one target of one notification."""

    def __init__(
        self, executor: Executor, target: Target, notification_id: str, outcomes: list[Outcome]
    ) -> None:
        self.x = executor
        self.target = target
        self.notification_id = notification_id
        self.outcomes = outcomes

    def outcome(self, action: PlannedAction, status: str, detail: dict[str, Any] | None = None) -> Outcome:
        return Outcome(action.rule, action.index, action.action, self.target.public_id, status, detail or {})

    def finish(self, actions: list[PlannedAction], outcome: Outcome, keys: list[str] | None = None) -> None:
        """Record an outcome for these actions (and mark them done when it succeeded)."""
        with self.x.connection.pipeline(transaction=False) as pipe:
            for index, action in enumerate(actions):
                one = Outcome(
                    action.rule,
                    action.index,
                    action.action,
                    outcome.public_id,
                    outcome.status,
                    outcome.detail,
                    outcome.error,
                    outcome.permanent,
                )
                self.outcomes.append(one)
                if keys and outcome.status == "ok":
                    pipe.set(keys[index], json.dumps({"status": "ok", "at": time.time()}), ex=DONE_TTL)
                entry = {
                    "event": "action",
                    "notification": self.notification_id,
                    "rule": action.rule,
                    "action": action.action,
                    "call": action.params,
                    "status": one.status,
                    **one.detail,
                }
                if one.error:
                    entry["error"] = one.error
                history.record(pipe, self.target.key, self.target.public_id, entry)
            pipe.execute()

    def within_cap(self, todo: list[tuple[PlannedAction, str]]) -> list[tuple[PlannedAction, str]]:
        """The loop guard: past `cap` actions on this asset this hour, the rest are stopped, with why."""
        if not self.x.cap or not todo:
            return todo
        window = int(time.time()) // CAP_WINDOW
        key = f"postupload:cap:{self.target.key}:{window}"
        with self.x.connection.pipeline() as pipe:
            pipe.incrby(key, len(todo))
            pipe.expire(key, 2 * CAP_WINDOW)
            count = int(pipe.execute()[0])
        allowed = max(0, self.x.cap - (count - len(todo)))
        for action, _ in todo[allowed:]:
            reason = (
                f"loop guard: more than {self.x.cap} actions on this asset within the hour "
                f"(POSTUPLOAD_ASSET_ACTION_CAP); not run"
            )
            log.warning(
                "%s %s: rule %s %s stopped: %s",
                self.notification_id,
                self.target.public_id,
                action.rule,
                action.action,
                reason,
            )
            self.finish([action], self.outcome(action, "capped", {"detail": reason}))
        return todo[:allowed]

    def make_calls(self, todo: list[tuple[PlannedAction, str]]) -> float:
        """Make (or batch, or schedule) the calls; the time to run again at, or 0."""
        by_way: dict[str, list[tuple[PlannedAction, str]]] = {}
        for action, key in todo:
            by_way.setdefault(REGISTRY[action.action].way, []).append((action, key))
        shared = by_way.get("explicit", [])
        for members, call in explicit_handler.share([action.params for action, _ in shared]):
            items = [shared[index] for index in members]
            self.direct(items, call, explicit_handler.run)
        for action, key in by_way.get("upload", []):
            self.direct([(action, key)], action.params, REGISTRY[action.action].run)
        for action, key in by_way.get("tags", []):
            self.batch(action, key)
        retry_at = 0.0
        for action, key in by_way.get("admin", []):
            retry_at = max(retry_at, self.admin(action, key))
        return retry_at

    def direct(self, items: list[tuple[PlannedAction, str]], call: dict[str, Any], run: Any) -> None:
        actions, keys = [action for action, _ in items], [key for _, key in items]
        try:
            detail = run(self.x.client, self.target, call)
        except ActionError as error:
            self.finish(actions, self.fail(actions[0], error))
            return
        self.finish(actions, self.outcome(actions[0], "ok", detail), keys)

    def fail(self, action: PlannedAction, error: ActionError) -> Outcome:
        outcome = self.outcome(action, "failed")
        outcome.error, outcome.permanent = str(error), error.permanent
        return outcome

    def batch(self, action: PlannedAction, key: str) -> None:
        """Each command of a tags action joins its batch; done when the batches have been sent."""
        for command in TAG_COMMANDS:
            if command not in action.params:
                continue
            spec = Spec(self.target.resource_type, self.target.type, command, tuple(action.params[command]))
            item = {
                "public_id": self.target.public_id,
                "asset": self.target.key,
                "key": f"{key}:{command}",
                "rule": action.rule,
                "notification": self.notification_id,
            }
            self.x.batches.add(spec, item)
        self.x.connection.set(key, json.dumps({"status": "batched", "at": time.time()}), ex=DONE_TTL)
        self.finish([action], self.outcome(action, "batched"))

    def admin(self, action: PlannedAction, key: str) -> float:
        """A budgeted Admin API call: made now, or scheduled for the reset (the time returned)."""
        retry_at = self.x.budget.take()
        if retry_at:
            self.finish([action], self.outcome(action, "deferred", {"until": _iso(retry_at)}))
            return retry_at
        try:
            detail, rate_limit = REGISTRY[action.action].run(self.x.client, self.target, action.params)  # type: ignore[misc]
        except RateLimitError as error:
            self.x.budget.spent(error.reset)
            self.finish([action], self.outcome(action, "deferred", {"until": _iso(error.reset)}))
            return error.reset
        except ActionError as error:
            self.x.budget.release()
            self.finish([action], self.fail(action, error))
            return 0.0
        self.x.budget.learn(rate_limit)
        self.finish([action], self.outcome(action, "ok", detail), [key])
        return 0.0


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def schedule_again(
    queue: Queue, function: str, envelope: dict[str, Any], when: float, **options: Any
) -> None:
    """Run the notification again at `when`: a scheduled job, not a busy wait (one per time)."""
    job_id = f"{envelope['id']}-at-{int(when)}"
    if Job.exists(job_id, connection=queue.connection):
        return
    queue.enqueue_at(datetime.fromtimestamp(when, UTC), function, envelope, job_id=job_id, **options)

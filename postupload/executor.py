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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from handlers import REGISTRY
from handlers import explicit as explicit_handler
from handlers import tags as tags_handler
from handlers.tags import COMMANDS as TAG_COMMANDS
from postupload import history
from postupload.batches import Spec, TagBatches
from postupload.budget import AdminBudget
from postupload.cloudinary_api import CloudinaryClient
from postupload.errors import ActionError, RateLimitError
from postupload.notification import Target, targets
from postupload.plan import PlannedAction
from postupload.queue import DONE_TTL

log = logging.getLogger(__name__)

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
    queue: Queue  # postupload-batch: where refused tag items become jobs of their own
    retry_job: Callable[[dict[str, Any], float], None]  # run the notification again at a time
    cap: int = 100  # actions per asset per hour; 0 turns the loop guard off
    retries: int = 6
    batches: TagBatches = field(init=False)
    budget: AdminBudget = field(init=False)

    def __post_init__(self) -> None:
        self.batches = TagBatches(self.connection, self.queue, self.client.timeout + 10, self.retries)
        self.budget = AdminBudget(self.connection, self.client.account.cloud_name)

    def execute(
        self, envelope: dict[str, Any], rules: list[str], planned: list[PlannedAction]
    ) -> list[Outcome]:
        """Run the planned actions on every asset of the notification; every outcome, in order.

        Each asset's history first gets the notification and the rules it matched, then the outcomes.
        """
        notification, notification_id = envelope["notification"], envelope["id"]
        version = notification.get("version")
        occurrence = f"v{version}" if version else f"n{notification_id}"
        outcomes: list[Outcome] = []
        retry_at = 0.0
        for target in targets(notification):
            with self.connection.pipeline(transaction=False) as pipe:
                run = _Run(self, target, notification_id, outcomes, pipe)
                entry = {
                    "event": "notification",
                    "notification": notification_id,
                    "notification_type": notification.get("notification_type"),
                    "rules": rules,
                }
                history.record(pipe, target.key, target.public_id, entry)
                keys = [f"postupload:done:{target.key}:{occurrence}:{a.rule}:{a.index}" for a in planned]
                earlier = self.connection.mget(keys) if keys else []
                todo = []
                for action, key, done in zip(planned, keys, earlier, strict=True):
                    if action.error:
                        run.finish(
                            [action], run.outcome(action, "failed", error=action.error, permanent=True)
                        )
                    elif done is not None:
                        status = json.loads(done).get("status", "ok")
                        run.finish([action], run.outcome(action, "skipped", {"detail": f"already {status}"}))
                    else:
                        todo.append((action, key))
                retry_at = max(retry_at, run.make_calls(run.within_cap(todo)))
                pipe.execute()
        if retry_at:
            self.retry_job(envelope, retry_at)
        return outcomes


class _Run:
    """The calls for one asset of one notification. Records go into `pipe`, sent once at the end
    (and at once after each successful call, so a done mark is never lost to a crash after it)."""

    def __init__(
        self,
        executor: Executor,
        target: Target,
        notification_id: str,
        outcomes: list[Outcome],
        pipe: redis.client.Pipeline,
    ) -> None:
        self.x = executor
        self.target = target
        self.notification_id = notification_id
        self.outcomes = outcomes
        self.pipe = pipe

    def outcome(
        self,
        action: PlannedAction,
        status: str,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
        permanent: bool = False,
    ) -> Outcome:
        return Outcome(
            action.rule,
            action.index,
            action.action,
            self.target.public_id,
            status,
            detail or {},
            error,
            permanent,
        )

    def finish(self, actions: list[PlannedAction], outcome: Outcome, keys: list[str] | None = None) -> None:
        """Record an outcome for these actions (and mark them done with `keys` when it succeeded)."""
        for index, action in enumerate(actions):
            one = self.outcome(action, outcome.status, outcome.detail, outcome.error, outcome.permanent)
            self.outcomes.append(one)
            if keys:
                mark = {"status": outcome.status, "at": time.time()}
                self.pipe.set(keys[index], json.dumps(mark), ex=DONE_TTL)
            entry = {"event": "action", "notification": self.notification_id, "call": action.params}
            history.record(self.pipe, self.target.key, self.target.public_id, {**entry, **one.as_dict()})
        if keys and outcome.status == "ok":
            self.pipe.execute()

    def within_cap(self, todo: list[tuple[PlannedAction, str]]) -> list[tuple[PlannedAction, str]]:
        """The loop guard: past `cap` actions on this asset this hour, the rest are stopped, with why."""
        if not self.x.cap or not todo:
            return todo
        key = f"postupload:cap:{self.target.key}:{int(time.time()) // CAP_WINDOW}"
        with self.x.connection.pipeline() as pipe:
            pipe.incrby(key, len(todo))
            pipe.expire(key, 2 * CAP_WINDOW)
            count = int(pipe.execute()[0])
        allowed = max(0, self.x.cap - (count - len(todo)))
        for action, _ in todo[allowed:]:
            reason = (
                f"loop guard: more than {self.x.cap} actions on this asset within the hour "
                "(POSTUPLOAD_ASSET_ACTION_CAP); not run"
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
            self.direct([shared[index] for index in members], call, explicit_handler.run)
        for action, key in by_way.get("upload", []):
            self.direct([(action, key)], action.params, REGISTRY[action.action].run)
        tags = by_way.get("tags", [])
        for action, key in tags:  # a replace first, at once; adds and removes after it, in batches
            if "replace" in action.params:
                self.direct([(action, key)], action.params, tags_handler.replace_now)
        for action, key in tags:
            if "replace" not in action.params:
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
            self.finish(
                actions, self.outcome(actions[0], "failed", error=str(error), permanent=error.permanent)
            )
            return
        self.finish(actions, self.outcome(actions[0], "ok", detail), keys)

    def batch(self, action: PlannedAction, key: str) -> None:
        """Each command of a tags action joins its batch; the batches mark it done once sent."""
        for command in TAG_COMMANDS:
            if command in action.params:
                spec = Spec(
                    self.target.resource_type, self.target.type, command, tuple(action.params[command])
                )
                item = {
                    "public_id": self.target.public_id,
                    "asset": self.target.key,
                    "key": f"{key}:{command}",
                    "rule": action.rule,
                    "notification": self.notification_id,
                }
                self.x.batches.add(spec, item)
        self.finish([action], self.outcome(action, "batched"), [key])

    def admin(self, action: PlannedAction, key: str) -> float:
        """A budgeted Admin API call: made now, or scheduled for the reset (the time returned)."""
        retry_at = self.x.budget.take()
        if retry_at:
            self.finish([action], self.outcome(action, "deferred", {"until": _iso(retry_at)}))
            return retry_at
        run = REGISTRY[action.action].run
        assert run is not None
        try:
            detail, rate_limit = run(self.x.client, self.target, action.params)
        except RateLimitError as error:
            self.x.budget.spent(error.reset)
            self.finish([action], self.outcome(action, "deferred", {"until": _iso(error.reset)}))
            return error.reset
        except ActionError as error:
            self.x.budget.release()
            self.finish([action], self.outcome(action, "failed", error=str(error), permanent=error.permanent))
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

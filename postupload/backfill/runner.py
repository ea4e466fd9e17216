"""Running a backfill: list existing assets a page at a time within the Admin API budget, queue each
as a notification for the workers, checkpoint the cursor in Redis, and report progress.

A killed backfill run again with the same arguments continues from its last checkpoint: the page in
hand is listed again, and its assets are not queued twice (their job ids are the same, and stored
ones are deduplicated); done marks per asset version keep every effect single whatever happens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis

from postupload import backoff
from postupload.backfill.events import AssetSource, Backfill, envelope
from postupload.backfill.replay import Bound, Replay, Supersession, Window
from postupload.backfill.replay import job as replay_job
from postupload.core.calls import Plan
from postupload.core.client import RateLimit
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.ruleset import RuleSet
from postupload.errors import ActionError, RateLimitError
from postupload.store import keys
from postupload.store.budget import AdminBudget
from postupload.store.kept_notifications import between
from postupload.store.metrics import Counts
from postupload.store.queue import NotificationQueue, enqueue_notification

PAGE = 500  # the Admin API's largest page
LIST_RETRIES = 6  # a page that fails for a transient reason is asked again this often, with backoff


class Lister(Protocol):
    def list_assets(
        self, source: AssetSource, cursor: str | None, max_results: int = PAGE
    ) -> tuple[list[dict[str, Any]], str | None, RateLimit | None]: ...


@dataclass
class Progress:
    """The checkpoint: where listing is, and what became of the assets."""

    state: str = "listing"  # listing | queued (listing finished) | done
    cursor: str | None = None
    pages: int = 0
    listed: int = 0
    queued: int = 0
    skipped: int = 0  # listed but not wanted (--since, --type), or queued by an earlier run
    superseded: int = 0  # a replay's: about an asset since overwritten, deleted or renamed
    done: int = 0  # counted by the workers
    failed: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    description: str = ""
    dry_run: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state != "listing" and self.done + self.failed >= self.queued


class Run(Protocol):
    """A backfill or a replay, as its checkpoint knows it."""

    @property
    def key(self) -> str: ...

    def describe(self) -> str: ...

    def arguments(self) -> dict[str, Any]: ...


class Checkpoint:
    """A backfill's (or replay's) progress in Redis, and in the list of backfills the console shows."""

    def __init__(self, connection: redis.Redis, run: Run) -> None:
        self.connection = connection
        self.key = keys.backfill(run.key)
        self.run = run

    def load(self) -> Progress | None:
        stored = cast(dict[bytes, bytes], self.connection.hgetall(self.key))
        return _progress({k.decode(): v.decode() for k, v in stored.items()}) if stored else None

    def start(self, now: float) -> Progress:
        self.connection.delete(self.key)
        progress = Progress(started_at=now, updated_at=now, description=self.run.describe())
        self.save(progress, now)
        self.connection.zadd(keys.BACKFILLS, {self.run.key: now})
        return progress

    def save(self, progress: Progress, now: float) -> None:
        """Cursor, state and what this process counted; done and failed are the workers' to count."""
        progress.updated_at = now
        fields: dict[Any, Any] = {
            "state": progress.state,
            "cursor": progress.cursor or "",
            "pages": progress.pages,
            "listed": progress.listed,
            "queued": progress.queued,
            "skipped": progress.skipped,
            "superseded": progress.superseded,
            "started_at": progress.started_at,
            "updated_at": now,
            "description": progress.description,
            "arguments": json.dumps(self.run.arguments()),
        }
        self.connection.hset(self.key, mapping=fields)

    def counts(self, progress: Progress) -> Progress:
        """The workers' counts, read now."""
        done, failed = self.connection.hmget(self.key, ["done", "failed"])
        progress.done, progress.failed = int(done or 0), int(failed or 0)
        return progress


def recent_backfills(connection: redis.Redis, limit: int = 50) -> list[tuple[str, Progress]]:
    """The latest backfills (newest first), each with its progress."""
    found = []
    for raw in cast(list[bytes], connection.zrevrange(keys.BACKFILLS, 0, limit - 1)):
        key = raw.decode()
        stored = cast(dict[bytes, bytes], connection.hgetall(keys.backfill(key)))
        if stored:
            found.append((key, _progress({k.decode(): v.decode() for k, v in stored.items()})))
    return found


def _progress(raw: dict[str, str]) -> Progress:
    def number(name: str) -> int:
        return int(raw.get(name, 0))

    return Progress(
        state=raw.get("state", "listing"),
        cursor=raw.get("cursor") or None,
        pages=number("pages"),
        listed=number("listed"),
        queued=number("queued"),
        skipped=number("skipped"),
        superseded=number("superseded"),
        done=number("done"),
        failed=number("failed"),
        started_at=float(raw.get("started_at", 0)),
        updated_at=float(raw.get("updated_at", 0)),
        description=raw.get("description", ""),
    )


def paged(
    checkpoint: Checkpoint,
    progress: Progress,
    last: bool,
    now: float,
    counts: Counts | None,
    report: Callable[[Progress], None],
) -> None:
    """A page is queued: checkpoint it (queueing is over after the `last`), flush the counts, report."""
    progress.pages += 1
    if last:
        progress.state = "queued"
    checkpoint.save(progress, now)
    if counts is not None:
        counts.flush()
    report(checkpoint.counts(progress))


def wait(
    checkpoint: Checkpoint,
    report: Callable[[Progress], None],
    sleep: Callable[[float], None] = time.sleep,
    every: float = 1.0,
) -> Progress:
    """Until the workers have done (or failed) everything queued; reporting as they go."""
    while True:
        progress = checkpoint.load()
        if progress is None:
            raise KeyError(checkpoint.run.key)
        report(progress)
        if progress.finished:
            if progress.state != "done":
                checkpoint.connection.hset(checkpoint.key, "state", "done")
                progress.state = "done"
            return progress
        sleep(every)


@dataclass
class Tally:
    """A dry run's count: the notifications that would be worked, by rule, and their calls by kind,
    with a few examples each. A call already made for that asset occurrence (its done mark is there)
    is counted apart, as `made`: the run skips it, so `calls` is what the run would send."""

    connection: redis.Redis
    examples: int = 3
    notifications: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, planned: Plan) -> None:
        self.notifications += 1
        for name in planned.rules:
            self.rules[name] = self.rules.get(name, 0) + 1
        made = self.connection.mget([keys.done(call.key) for call in planned.calls]) if planned.calls else []
        for call, mark in zip(planned.calls, made, strict=True):
            name = f"{call.endpoint} (rule {', '.join(call.rules)})"
            entry = self.calls.setdefault(name, {"calls": 0, "made": 0, "examples": []})
            if mark is not None:
                entry["made"] += 1
                continue
            entry["calls"] += 1
            if len(entry["examples"]) < self.examples:
                entry["examples"].append({"public_ids": list(call.public_ids), "params": call.params})


@dataclass
class Runner:
    """What a backfill uses, each handed to it: Redis, the queue, the lister, the shared budget."""

    connection: redis.Redis
    queue: NotificationQueue
    lister: Lister
    budget: AdminBudget
    cloud_name: str
    retries: int = 6
    counts: Counts | None = None
    report: Callable[[Progress], None] = lambda progress: None
    page_size: int = PAGE  # smaller pages checkpoint (and report) more often, for more Admin calls
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def run(self, backfill: Backfill, restart: bool = False) -> Progress:
        """List and queue every wanted asset (from the checkpoint, unless `restart`)."""
        checkpoint = Checkpoint(self.connection, backfill)
        progress = checkpoint.load()
        if progress is None or restart:
            progress = checkpoint.start(self.clock())
        while progress.state == "listing":
            resources, cursor = self._page(backfill.source, progress.cursor)
            for resource in resources:
                progress.listed += 1
                if not backfill.wants(resource) or (
                    backfill.max is not None and progress.queued >= backfill.max
                ):
                    progress.skipped += 1
                    continue
                job = envelope(
                    backfill, resource, self.clock(), self.cloud_name, run=str(progress.started_at)
                )
                queued = enqueue_notification(self.queue, job, self.retries)
                progress.queued += 1  # a duplicate was queued by this run before it was stopped
                if self.counts is not None:
                    answer = "queued" if queued else "duplicate"
                    self.counts.notification("backfill", answer, self.cloud_name)
            progress.cursor = cursor
            full = backfill.max is not None and progress.queued >= backfill.max
            paged(checkpoint, progress, cursor is None or full, self.clock(), self.counts, self.report)
        return checkpoint.counts(progress)

    def wait(self, backfill: Backfill, every: float = 1.0) -> Progress:
        """Until the workers have done (or failed) every queued asset; reporting as they go."""
        return wait(Checkpoint(self.connection, backfill), self.report, self.sleep, every)

    def dry_run(self, backfill: Backfill, ruleset: RuleSet) -> dict[str, Any]:
        """What the backfill would cause, by rule and call kind, with a few assets each; queues nothing."""
        tally = Tally(self.connection)
        listed = 0
        cursor: str | None = None
        while True:
            resources, cursor = self._page(backfill.source, cursor)
            for resource in resources:
                listed += 1
                if not backfill.wants(resource) or (
                    backfill.max is not None and tally.notifications >= backfill.max
                ):
                    continue
                tally.add(decide(ruleset, envelope(backfill, resource, self.clock(), self.cloud_name)))
            if cursor is None or (backfill.max is not None and tally.notifications >= backfill.max):
                break
        return {"listed": listed, "wanted": tally.notifications, "rules": tally.rules, "calls": tally.calls}

    def _page(self, source: AssetSource, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page, within the shared Admin budget: waits for its reset rather than failing."""
        failures = 0
        while True:
            now = self.clock()
            retry_at = self.budget.take(now)
            if retry_at:
                self.sleep(max(0.05, retry_at - now))
                continue
            try:
                resources, next_cursor, rate_limit = self.lister.list_assets(source, cursor, self.page_size)
            except RateLimitError as error:
                self.budget.spent(error.reset)
                continue
            except ActionError as error:
                self.budget.release()
                failures += 1
                if error.permanent or failures > LIST_RETRIES:
                    raise
                self.sleep(backoff.LISTING.compute(failures - 1))
                continue
            self.budget.learn(rate_limit)
            return resources, next_cursor


# A replay goes back no further than the marks that keep each call single last (keys.DONE_TTL),
# less an hour for the replay itself to be worked: older notifications would make their calls again.
REPLAYABLE = keys.DONE_TTL - 3600


def replayable_from(now: float) -> float:
    return now - REPLAYABLE


@dataclass
class Replayer:
    """Replays: the notifications kept for previews, read a page at a time from Redis's stream
    within a window and queued again for the workers under the current rules (`replay.job`)."""

    connection: redis.Redis
    queue: NotificationQueue
    retries: int = 6
    counts: Counts | None = None
    report: Callable[[Progress], None] = lambda progress: None
    page_size: int = PAGE
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def bind(self, replay: Replay, restart: bool = False) -> tuple[Bound, Progress]:
        """The replay with its window: the window of a stopped run of the same replay (it goes on
        where it was), else one fixed now (a finished replay run again is done again: its effects
        are single all the same). ValueError when the window is not one."""
        stored = Checkpoint(self.connection, Bound(replay, Window(0, 0)))
        progress = stored.load()
        window = stored.connection.hget(stored.key, "arguments")
        if progress is not None and window and not restart and not progress.finished:
            since, until = json.loads(window)["window"]
            bound = Bound(replay, Window(since, until))
            return bound, progress
        bound = Bound(replay, replay.window(self.clock(), replayable_from(self.clock())))
        return bound, Checkpoint(self.connection, bound).start(self.clock())

    def run(self, bound: Bound, progress: Progress) -> Progress:
        """Queue every wanted notification of the window from the checkpoint on."""
        checkpoint = Checkpoint(self.connection, bound)
        if progress.state != "listing":  # all queued already: the workers go on
            return checkpoint.counts(progress)
        supersession = self._supersession(bound.window)
        start = f"({progress.cursor}" if progress.cursor else _stream_id(bound.window.since)
        for page in self._pages(start, _stream_id(bound.window.until)):
            for entry, recorded in page:
                progress.listed += 1
                left_out = _left_out(bound.replay, supersession, entry, recorded)
                if left_out == "not wanted":
                    progress.skipped += 1
                    continue
                if left_out:
                    progress.superseded += 1
                    continue
                job_id, replayed = replay_job(bound.replay, recorded, str(progress.started_at), self.clock())
                queued = enqueue_notification(self.queue, replayed, self.retries, job_id=job_id)
                progress.queued += 1
                if self.counts is not None:
                    self.counts.notification(
                        "replay", "queued" if queued else "duplicate", recorded.cloud_name
                    )
            if page:
                progress.cursor = page[-1][0]
            last = len(page) < self.page_size
            paged(checkpoint, progress, last, self.clock(), self.counts, self.report)
        return checkpoint.counts(progress)

    def wait(self, bound: Bound, every: float = 1.0) -> Progress:
        return wait(Checkpoint(self.connection, bound), self.report, self.sleep, every)

    def dry_run(self, replay: Replay, ruleset: RuleSet) -> dict[str, Any]:
        """What the replay would cause, by rule and call kind; queues nothing and keeps no checkpoint."""
        window = replay.window(self.clock(), replayable_from(self.clock()))
        supersession = self._supersession(window)
        tally = Tally(self.connection)
        read = skipped = 0
        superseded: dict[str, int] = {}
        for page in self._pages(_stream_id(window.since), _stream_id(window.until)):
            for entry, recorded in page:
                read += 1
                left_out = _left_out(replay, supersession, entry, recorded)
                if left_out == "not wanted":
                    skipped += 1
                elif left_out:
                    superseded[left_out] = superseded.get(left_out, 0) + 1
                else:
                    tally.add(decide(ruleset, replay_job(replay, recorded, "", self.clock())[1]))
        return {
            "window": window,
            "read": read,
            "skipped": skipped,
            "superseded": superseded,
            "wanted": tally.notifications,
            "rules": tally.rules,
            "calls": tally.calls,
        }

    def _supersession(self, window: Window) -> Supersession:
        """What later notifications say of the assets, read from the window's start to now."""
        supersession = Supersession()
        for page in self._pages(_stream_id(window.since), "+"):
            for entry, recorded in page:
                supersession.add(entry, recorded)
        return supersession

    def _pages(self, start: str, end: str) -> Iterator[list[tuple[str, Envelope]]]:
        """The recorded notifications from `start` to `end` (stream ids), a page at a time; the last
        page is the first shorter than a full one (it may be empty)."""
        while True:
            page = between(self.connection, start, end, self.page_size)
            yield page
            if len(page) < self.page_size:
                return
            start = f"({page[-1][0]}"


def _stream_id(seconds: float) -> str:
    """The first stream id of a time (a stream's ids are milliseconds)."""
    return str(int(seconds * 1000))


def _left_out(replay: Replay, supersession: Supersession, entry: str, recorded: Envelope) -> str | None:
    """Why a replay leaves a recorded notification out ("not wanted", or what became of its asset
    since), or None when it replays it."""
    if not replay.wants(recorded):
        return "not wanted"
    return supersession.fate(entry, recorded)

"""How the deployment is doing right now, read from Redis: what /metrics and the console both show."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.utils import utcparse

from postupload.store import keys
from postupload.store.queue import is_deferral, notification_queue

# The oldest waiting job is looked for among the first jobs of the queue: deferred work is put at
# the front (it waited already), so the head alone could hide an older job behind it.
HEAD = 10


@dataclass(frozen=True)
class Overview:
    queue: str
    queued: int
    oldest_age: float | None  # seconds the oldest waiting job has waited; None when none waits
    started: int
    retrying: int  # failed once, waiting in the scheduled registry for their next try
    deferred: int  # waiting in the scheduled registry for the Admin API budget's reset
    failed: int
    workers: int
    tag_batches: int  # tag batches waiting to be sent
    budgets: dict[str, Budget]  # by product environment (cloud name)


@dataclass(frozen=True)
class Budget:
    """A product environment's Admin API budget: calls left and when the window resets, when known."""

    remaining: int | None
    reset: float | None


def overview(connection: redis.Redis, cloud_names: Sequence[str], now: float | None = None) -> Overview:
    """Read it all; raises redis.RedisError when Redis cannot be reached."""
    now = time.time() if now is None else now
    queue = notification_queue(connection)
    scheduled = [_text(job_id) for job_id in connection.zrange(queue.scheduled_job_registry.key, 0, -1)]
    deferred = sum(1 for job_id in scheduled if is_deferral(job_id))
    return Overview(
        queue=queue.name,
        queued=queue.count,
        oldest_age=_oldest_age(connection, queue.get_job_ids(0, HEAD - 1), now),
        started=queue.started_job_registry.count,
        retrying=len(scheduled) - deferred,
        deferred=deferred,
        failed=queue.failed_job_registry.count,
        workers=Worker.count(connection=connection),
        tag_batches=int(connection.zcard(keys.TAG_BATCHES_DUE)),
        budgets={cloud_name: _budget(connection, cloud_name, now) for cloud_name in cloud_names},
    )


def _budget(connection: redis.Redis, cloud_name: str, now: float) -> Budget:
    budget = {_text(k): v for k, v in connection.hgetall(keys.admin_budget(cloud_name)[0]).items()}
    reset = float(budget["reset"]) if "reset" in budget else None
    if reset is None or reset <= now:  # never learned, or its window is over: unknown until a call
        return Budget(None, None)
    return Budget(int(budget["remaining"]) if "remaining" in budget else None, reset)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _oldest_age(connection: redis.Redis, job_ids: list[str], now: float) -> float | None:
    if not job_ids:
        return None
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "enqueued_at")
        stamps = [stamp for stamp in pipe.execute() if stamp]
    if not stamps:
        return None
    oldest = min(utcparse(_text(stamp)) for stamp in stamps)
    return max(0.0, now - oldest.timestamp())


def notifications_per_minute(
    connection: redis.Redis, now: float | None = None, minutes: int = keys.RECENT_MINUTES
) -> list[tuple[int, dict[str, int]]]:
    """The last `minutes` minutes, oldest first: (minute start, unix s; answer -> count)."""
    now = time.time() if now is None else now
    last = int(now) // 60
    wanted = list(range(last - minutes + 1, last + 1))
    with connection.pipeline(transaction=False) as pipe:
        for minute in wanted:
            pipe.hgetall(keys.notifications_in_minute(minute))
        counts = pipe.execute()
    return [
        (minute * 60, {_text(k): int(v) for k, v in found.items()})
        for minute, found in zip(wanted, counts, strict=True)
    ]


def origins_recent(
    connection: redis.Redis, now: float | None = None, minutes: int = keys.RECENT_MINUTES
) -> dict[str, int]:
    """Verified notifications of the last `minutes` minutes by who caused them (own, other, untold)."""
    last = int(time.time() if now is None else now) // 60
    return _summed(connection, [keys.origins_in_minute(m) for m in range(last - minutes + 1, last + 1)])


def matches_last_day(connection: redis.Redis, now: float | None = None) -> dict[str, int]:
    """Rule -> notifications it matched within the last RECENT_HOURS hours (by whole hours)."""
    last = int(time.time() if now is None else now) // 3600
    hours = range(last - keys.RECENT_HOURS + 1, last + 1)
    return _summed(connection, [keys.matches_in_hour(hour) for hour in hours])


def _summed(connection: redis.Redis, names: list[str]) -> dict[str, int]:
    """The hashes' counts, field by field, summed (one round trip)."""
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        found = pipe.execute()
    totals: dict[str, int] = {}
    for counts in found:
        for field, count in counts.items():
            totals[_text(field)] = totals.get(_text(field), 0) + int(count)
    return totals

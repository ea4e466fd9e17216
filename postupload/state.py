"""How the deployment is doing right now, read from Redis: what /metrics and the console both show."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.utils import utcparse

from postupload import keys
from postupload.queue import is_deferral, notification_queue

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
    budget_remaining: int | None  # Admin API calls left in the window, when known
    budget_reset: float | None  # unix time the window resets, when known


def overview(connection: redis.Redis, cloud_name: str, now: float | None = None) -> Overview:
    """Read it all; raises redis.RedisError when Redis cannot be reached."""
    now = time.time() if now is None else now
    queue = notification_queue(connection)
    scheduled = [_text(job_id) for job_id in connection.zrange(queue.scheduled_job_registry.key, 0, -1)]
    deferred = sum(1 for job_id in scheduled if is_deferral(job_id))
    budget = {_text(k): v for k, v in connection.hgetall(keys.admin_budget(cloud_name)[0]).items()}
    reset = float(budget["reset"]) if "reset" in budget else None
    known = reset is not None and reset > now
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
        budget_remaining=int(budget["remaining"]) if known and "remaining" in budget else None,
        budget_reset=reset if known else None,
    )


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

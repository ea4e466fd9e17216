"""Durable, deduplicated enqueue of notifications through RQ. The only module that writes jobs."""

from __future__ import annotations

import random
from typing import Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from postupload import BATCH_QUEUE_NAME, QUEUE_NAME

# Cloudinary retries for minutes and may deliver twice at any time; a day and an hour covers it.
DEDUPE_TTL = 25 * 3600
JOB_FUNCTION = "postupload.worker.process_notification"
JOB_TIMEOUT = 600
RESULT_TTL = 7 * 24 * 3600
# Done marks outlive failed jobs, so replaying one skips what had succeeded.
DONE_TTL = RESULT_TTL + 24 * 3600


def connect(url: str) -> redis.Redis:
    """A client that fails fast: the web answers 503 rather than hang when Redis is away."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


def notification_queue(connection: redis.Redis, name: str = QUEUE_NAME) -> Queue:
    """Our queue: JSON job arguments, so any RQ tool can read them."""
    return Queue(name, connection=connection, serializer=JSONSerializer)


def retry_policy(attempts: int, base: float = 2.0) -> Retry | None:
    """Exponential backoff (2, 4, 8, ... s) with jitter (x0.5 to x1.5), drawn per job so retries spread."""
    if attempts < 1:
        return None
    # At least 2 s: RQ schedules on whole seconds, so 1 s could come round almost at once.
    intervals = [max(2, round(base * 2**step * random.uniform(0.5, 1.5))) for step in range(attempts)]
    return Retry(max=attempts, interval=intervals)


def batch_queue(connection: redis.Redis) -> Queue:
    """Flushes of tag batches and notifications deferred to a rate-limit reset; workers take it first."""
    return notification_queue(connection, BATCH_QUEUE_NAME)


def dedupe_key(notification_id: str) -> str:
    return f"postupload:dedupe:{notification_id}"


def enqueue_notification(
    queue: Queue, notification_id: str, envelope: dict[str, Any], retries: int = 6
) -> bool:
    """Store the notification as a job unless an identical body was stored before; True if queued.

    The dedupe mark and the job are written in one MULTI/EXEC, so a failure leaves neither and
    Cloudinary's retry is not mistaken for a duplicate.
    """
    key = dedupe_key(notification_id)
    with queue.connection.pipeline() as pipe:
        try:
            pipe.watch(key)
            if pipe.exists(key):
                return False
            pipe.multi()
            pipe.set(key, notification_id, ex=DEDUPE_TTL)
            queue.enqueue_call(
                JOB_FUNCTION,
                args=(envelope,),
                job_id=notification_id,
                timeout=JOB_TIMEOUT,
                result_ttl=RESULT_TTL,
                failure_ttl=RESULT_TTL,
                description=f"notification {envelope['notification'].get('notification_type')}",
                retry=retry_policy(retries),
                pipeline=pipe,
            )
            pipe.execute()
        except redis.WatchError:
            return False  # an identical body was stored between our WATCH and EXEC
    return True

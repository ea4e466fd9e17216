"""Durable, deduplicated enqueue of notifications through RQ. The only module that writes jobs."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from postupload import QUEUE_NAME

# Cloudinary retries for minutes and may deliver twice at any time; a day and an hour covers it.
DEDUPE_TTL = 25 * 3600
JOB_FUNCTION = "postupload.worker.process_notification"
JOB_TIMEOUT = 600
RESULT_TTL = 7 * 24 * 3600


def connect(url: str) -> redis.Redis:
    """A client that fails fast: the web answers 503 rather than hang when Redis is away."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30)


def notification_queue(connection: redis.Redis, name: str = QUEUE_NAME) -> Queue:
    """Our queue: JSON job arguments, so any RQ tool can read them."""
    return Queue(name, connection=connection, serializer=JSONSerializer)


def dedupe_key(notification_id: str) -> str:
    return f"postupload:dedupe:{notification_id}"


def enqueue_notification(queue: Queue, notification_id: str, envelope: dict[str, Any]) -> bool:
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
                pipeline=pipe,
            )
            pipe.execute()
        except redis.WatchError:
            return False  # an identical body was stored between our WATCH and EXEC
    return True

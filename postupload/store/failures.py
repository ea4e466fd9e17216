"""Jobs that did not simply finish: those waiting for a retry or a budget reset, the dead letters in
RQ's failed registry, and sending the dead letters back through."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from postupload.store.queue import is_deferral, notification_queue, retry_policy


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    description: str
    failed_at: datetime | None
    reason: str  # the last line of the failure: what went wrong
    attempts: int = 1
    cloud_name: str = ""  # the product environment its notification came from


@dataclass(frozen=True)
class WaitingJob:
    """A job in the scheduled registry: a retry after a failure, or work deferred to a budget reset."""

    id: str
    description: str
    waiting_for: str  # retry | budget
    next_run: datetime
    attempts: int  # tries made so far
    attempts_left: int  # tries still allowed after the next one fails
    last_reason: str  # Cloudinary's HTTP status, timeout, connection, admin_budget, ...
    last_error: str
    last_failed_at: datetime | None
    cloud_name: str = ""  # the product environment its notification came from

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("next_run", "last_failed_at"):
            data[name] = data[name].isoformat(timespec="seconds") if data[name] else None
        return data


def waiting_jobs(connection: redis.Redis, soonest: int | None = None) -> list[WaitingJob]:
    """The jobs waiting for their next run (all, or the `soonest` few), soonest first."""
    queue = notification_queue(connection)
    waiting = []
    end = -1 if soonest is None else soonest - 1
    scheduled = cast(
        list[tuple[bytes, float]],
        connection.zrange(queue.scheduled_job_registry.key, 0, end, withscores=True),
    )
    scores = {raw_id.decode(): score for raw_id, score in scheduled}
    for job in _existing(queue, list(scores)):
        score = scores[job.id]
        failed_at = job.meta.get("last_failed_at")
        waiting.append(
            WaitingJob(
                id=job.id,
                description=job.description or "",
                waiting_for="budget" if is_deferral(job.id) else "retry",
                next_run=datetime.fromtimestamp(score, UTC),
                attempts=int(job.meta.get("attempts", 0)),
                attempts_left=int(job.retries_left or 0),
                last_reason=str(job.meta.get("last_reason", "")),
                last_error=str(job.meta.get("last_error", "")),
                last_failed_at=datetime.fromtimestamp(failed_at, UTC) if failed_at else None,
                cloud_name=_cloud_of(job),
            )
        )
    return waiting


def _existing(queue: Queue, job_ids: list[str]) -> Iterator[Job]:
    """The jobs of these ids that still exist (a registry can outlive a job's expiry)."""
    for job_id in job_ids:
        try:
            job = queue.fetch_job(job_id)
        except NoSuchJobError:
            continue
        if job is not None:
            yield job


def _cloud_of(job: Job) -> str:
    """The product environment of a notification's job (a tag job's is in its batch spec)."""
    argument = job.args[0] if job.args else None
    if isinstance(argument, dict):
        return str(argument.get("cloud_name") or "")
    if isinstance(argument, str) and argument.startswith("["):  # apply_tag_item: Spec.as_json()
        fields = json.loads(argument)
        return str(fields[4]) if len(fields) > 4 else ""
    return ""


def failed_job_ids(connection: redis.Redis) -> list[str]:
    return list(notification_queue(connection).failed_job_registry.get_job_ids())


def failed_jobs(connection: redis.Redis, latest: int | None = None) -> list[FailedJob]:
    """The failed jobs (all, or the `latest` few), oldest failure first."""
    found = []
    queue = notification_queue(connection)
    registry = queue.failed_job_registry
    if latest is None:
        job_ids = registry.get_job_ids()
    else:  # scored by when they expire: failed_at + a TTL that is the same for all
        latest_ids = cast(list[bytes], connection.zrevrange(registry.key, 0, latest - 1))
        job_ids = [raw.decode() for raw in latest_ids]
    for job in _existing(queue, job_ids):
        result = job.latest_result()
        text = (result.exc_string if result else None) or job.exc_info or ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        # The traceback's last line, without the exception's class: what went wrong, as we said it.
        reason = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else ""
        reason = reason or str(job.meta.get("last_error", ""))
        attempts = int(job.meta.get("attempts", 1))
        description = job.description or ""
        found.append(
            FailedJob(job.id, queue.name, description, job.ended_at, reason, attempts, _cloud_of(job))
        )
    return sorted(found, key=lambda job: job.failed_at.timestamp() if job.failed_at else 0.0)


def replay(connection: redis.Redis, ids: list[str], retries: int) -> list[str]:
    """Queue these failed jobs again, each with a fresh retry policy; answers the ids requeued.

    Actions that had succeeded are skipped when they run again (their done marks outlive the job).
    A job named twice is queued once (the second requeue found it gone and failed).
    """
    ids = list(dict.fromkeys(ids))
    known = set(failed_job_ids(connection))
    unknown = [job_id for job_id in ids if job_id not in known]
    if unknown:
        raise KeyError(", ".join(unknown))
    queue = notification_queue(connection)
    for job_id in ids:
        job = queue.job_class.fetch(job_id, connection=connection, serializer=queue.serializer)
        policy = retry_policy(retries)
        job.retries_left = policy.max if policy else None
        job.retry_intervals = policy.intervals if policy else None
        job.save(include_meta=False, include_result=False)
        queue.failed_job_registry.requeue(job)
    return ids

"""The dead letters: jobs in RQ's failed registries, and sending them back through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from postupload.queue import notification_queue, retry_policy


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    description: str
    failed_at: datetime | None
    reason: str  # the last line of the failure: what went wrong


def failed_jobs(connection: redis.Redis) -> list[FailedJob]:
    """Every failed job of our queues, oldest failure first."""
    found = []
    queue = notification_queue(connection)
    for job_id in queue.failed_job_registry.get_job_ids():
        try:
            job = queue.fetch_job(job_id)
        except NoSuchJobError:
            continue
        if job is None:
            continue
        result = job.latest_result()
        text = (result.exc_string if result else None) or job.exc_info or ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        found.append(
            FailedJob(job.id, queue.name, job.description or "", job.ended_at, lines[-1] if lines else "")
        )
    return sorted(found, key=lambda job: job.failed_at or datetime.min)


def replay(connection: redis.Redis, ids: list[str], retries: int) -> list[str]:
    """Queue these failed jobs again, each with a fresh retry policy; answers the ids requeued.

    Actions that had succeeded are skipped when they run again (their done marks outlive the job).
    """
    known = {job.id: job.queue for job in failed_jobs(connection)}
    unknown = [job_id for job_id in ids if job_id not in known]
    if unknown:
        raise KeyError(", ".join(unknown))
    for job_id in ids:
        queue = notification_queue(connection, known[job_id])
        job = Job.fetch(job_id, connection=connection, serializer=queue.serializer)
        policy = retry_policy(retries)
        job.retries_left = policy.max if policy else None
        job.retry_intervals = policy.intervals if policy else None
        job.save(include_meta=False, include_result=False)
        queue.failed_job_registry.requeue(job)
    return ids

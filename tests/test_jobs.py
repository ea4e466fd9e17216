"""Jobs that wait: listed with why they wait and until when."""

from __future__ import annotations

import time

import redis

from postupload.core.envelope import Envelope
from postupload.store.failures import waiting_jobs
from postupload.store.queue import notification_queue, schedule_again
from tests.conftest import ACCOUNT, signed_headers


def test_work_deferred_to_the_budget_reset_is_listed_as_waiting_for_it(redis_conn: redis.Redis) -> None:
    body = b'{"notification_type":"upload","public_id":"later","resource_type":"image"}'
    envelope = Envelope.from_http(
        body,
        signed_headers(body),
        secret=ACCOUNT.api_secret,
        cloud_name=ACCOUNT.cloud_name,
        now=time.time(),
        tolerance=7200,
        algorithms=("sha1", "sha256"),
    )
    reset = time.time() + 120
    schedule_again(notification_queue(redis_conn), envelope, reset, retries=6)
    (job,) = waiting_jobs(redis_conn)
    assert job.waiting_for == "budget" and job.description == "notification upload"
    assert abs(job.next_run.timestamp() - reset) <= 1
    assert job.last_reason == "admin_budget" and "Admin API budget is spent until" in job.last_error
    assert job.attempts == 0 and job.attempts_left == 6


def test_permanence_is_declared_by_each_error_class() -> None:
    """Whether a failed job is tried again is the error's own word, never a guess: a rule set that
    could not be loaded is fixed by ops and the job tried again; a 404 is not."""
    from types import SimpleNamespace
    from typing import Any, cast

    from postupload.errors import ActionError, ConfigError, RateLimitError, RuleSetError
    from postupload.worker.jobs import no_retry_when_permanent

    def retries_left_after(error: Exception) -> int:
        job = SimpleNamespace(retries_left=3)
        assert no_retry_when_permanent(cast(Any, job), type(error), error, cast(Any, None))
        return job.retries_left

    assert retries_left_after(RuleSetError([])) == 3
    assert retries_left_after(RateLimitError("spent", reset=0)) == 3
    assert retries_left_after(ActionError("503", permanent=False, status=503)) == 3
    assert retries_left_after(ActionError("404", permanent=True, status=404)) == 0
    assert retries_left_after(ConfigError("POSTUPLOAD_ACCOUNTS", "unknown")) == 0
    assert retries_left_after(ValueError("a bug")) == 3  # not ours: RQ's policy, with the traceback

"""The worker process: load the rule set, match, plan, execute. RQ calls the job functions here."""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from rq.job import Job, get_current_job
from rq.serializers import JSONSerializer

from postupload import backoff
from postupload.cloudinary_api import widen_http_pools
from postupload.config import Settings
from postupload.core.client import Client
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.errors import ActionError, ConfigError, PostuploadError, RuleSetError
from postupload.parts import Parts
from postupload.rules.source import RuleSource
from postupload.store import keys
from postupload.store.batches import Flusher, TagBatches
from postupload.store.metrics import Recorder
from postupload.store.queue import notification_queue, schedule_again, waiting
from postupload.worker import rq_adapter
from postupload.worker.executor import Executor, Outcome
from postupload.worker.rq_adapter import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a job needs beyond its arguments: the rule set, and per product environment a Cloudinary
    client and an executor (its own credentials and Admin budget; the tag batches are shared)."""

    rules: RuleSource
    executors: dict[str, Executor]  # by cloud name; "" is the one a job naming none is for
    batches: TagBatches
    connection: redis.Redis
    recorder: Recorder
    timeout: float  # of one Cloudinary call

    @classmethod
    def from_settings(cls, settings: Settings, connection: redis.Redis | None = None) -> Runtime:
        """The worker's parts (postupload.parts), and an executor per product environment."""
        parts = Parts(settings, connection)

        def again(envelope: Envelope, when: float) -> None:
            schedule_again(parts.queue, envelope, when, settings.retries)
            parts.recorder.count("postupload_admin_budget_waits")

        executors = {
            cloud_name: Executor(
                parts.connection,
                parts.client(account),
                parts.batches,
                parts.budget(cloud_name),
                again,
                settings.asset_action_cap,
            )
            for cloud_name, account in parts.accounts.items()
        }
        with contextlib.suppress(ConfigError):  # several, none the default: each job names its own
            executors[""] = executors[settings.require_account().cloud_name]
        return cls(
            parts.rules, executors, parts.batches, parts.connection, parts.recorder, settings.api_timeout
        )

    def executor_for(self, cloud_name: str) -> Executor:
        """The executor of a job's product environment; a permanent failure if it is not configured."""
        executor = self.executors.get(cloud_name)
        if executor is None:
            raise ActionError(
                f"product environment {cloud_name!r} is not configured on this worker "
                "(POSTUPLOAD_ACCOUNTS); add it, then replay the job",
                permanent=True,
                reason="unknown_cloud",
            )
        return executor

    def client_for(self, cloud_name: str) -> Client:
        return self.executor_for(cloud_name).client

    def process(self, job_argument: Any) -> dict[str, Any]:
        """Match one notification and perform its plan; raise if any action failed."""
        try:
            return self._process(job_argument)
        finally:
            self.recorder.flush_soon()

    def _process(self, job_argument: Any) -> dict[str, Any]:
        ruleset = self.rules.current()
        if ruleset is None:
            raise self.rules.error or RuleSetError([])
        envelope = Envelope.from_job(job_argument)
        executor = self.executor_for(envelope.cloud_name)
        planned = decide(ruleset, envelope)
        self.recorder.matched(planned.rules)
        if planned.problems:
            log.warning("notification %s: %s", envelope.id, "; ".join(planned.problems))
        job = get_current_job()
        outcomes = executor.execute(envelope, planned, job.id if job else None)
        for outcome in outcomes:
            self.recorder.count(
                "postupload_actions",
                kind=outcome.action,
                rule=outcome.rule,
                outcome=outcome.status,
                cloud=envelope.cloud_name,
            )
        result = {
            "id": envelope.id,
            "rules": list(planned.rules),
            "actions": [outcome.as_dict() for outcome in outcomes],
            "problems": list(planned.problems),
        }
        failed = [outcome for outcome in outcomes if outcome.status == "failed"]
        if failed or planned.problems:
            # Actions that could not even be planned on an asset fail the job too, permanently: the
            # failed registry is where ops look, and the reason says what was refused.
            reasons = [f"rule {o.rule} {o.action} on {o.public_id!r}: {o.error}" for o in failed]
            reasons += list(planned.problems)
            permanent = all(outcome.permanent for outcome in failed)
            reason = next((o.reason for o in failed if o.reason), None) or "refused"
            raise ActionError(
                f"{len(failed)} of {len(outcomes)} actions failed"
                f"{f', {len(planned.problems)} assets refused' if planned.problems else ''}: "
                + "; ".join(reasons),
                permanent=permanent,
                reason=reason,
            )
        self.recorder.count("postupload_jobs", outcome="finished")
        log.info(
            "notification %s (%s%s): %s",
            envelope.id,
            envelope.notification_type,
            f" in {envelope.cloud_name}" if envelope.cloud_name else "",
            job_summary(list(planned.rules), [outcome.status for outcome in outcomes]),
            extra=log_context(envelope, job.id if job else None, outcomes, "finished"),
        )
        if envelope.backfill:
            self.connection.hincrby(keys.backfill(envelope.backfill), "done", 1)
        return result


def job_summary(rules: list[str], statuses: list[str]) -> str:
    """`rules a, b: 3 actions (2 ok, 1 skipped)`, or that no rule matched."""
    if not rules:
        return "no rule matched"
    counts = Counter(statuses)
    said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    actions = f"{len(statuses)} action{'s' if len(statuses) != 1 else ''}" + (f" ({said})" if said else "")
    return f"rule{'s' if len(rules) != 1 else ''} {', '.join(rules)}: {actions}"


def log_context(
    envelope: Envelope, job_id: str | None, outcomes: list[Outcome], outcome: str
) -> dict[str, Any]:
    """The fields of a job's log line (logs.CONTEXT): the asset when the notification is about one."""
    assets = {o.public_id for o in outcomes}
    context: dict[str, Any] = {
        "notification": envelope.id,
        "job": job_id,
        "cloud": envelope.cloud_name or None,
        "type": envelope.notification_type,
        "outcome": outcome,
    }
    if len(assets) == 1:
        context["asset"] = assets.pop()
    rules = sorted({o.rule for o in outcomes})
    if len(rules) == 1:
        context["rule"] = rules[0]
    return context


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The worker's runtime. Under a plain `rq worker` it configures itself from the environment."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_settings(Settings.from_env())
    return _runtime


def process_notification(envelope: dict[str, Any]) -> dict[str, Any]:
    """Job: one notification."""
    return runtime().process(envelope)


def apply_tag_item(spec_json: str, item: dict[str, Any]) -> dict[str, Any]:
    """Job: one asset's tag change that Cloudinary refused as part of a batch."""
    current = runtime()
    try:
        return current.batches.apply_single(spec_json, item, current.client_for)
    finally:
        current.recorder.flush_soon()


def note_failure(job: Job, error: BaseException | None, recorder: Recorder | None) -> None:
    """Keep the failure on the job (what `postupload jobs` and the console show of a job waiting for
    its next try) and count it; RQ keeps only the last failure's traceback, and only once it failed
    for good."""
    reason = getattr(error, "reason", None) or type(error).__name__
    retrying = bool(job.retries_left)  # RQ retries after this, once the exception handlers ran
    argument = job.args[0] if job.args else None
    backfill = argument.get("backfill") if isinstance(argument, dict) else None
    job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
    job.meta["last_error"] = str(error)[:2000]
    job.meta["last_reason"] = reason
    job.meta["last_failed_at"] = time.time()
    try:
        job.save_meta()
        if backfill and not retrying:
            job.connection.hincrby(keys.backfill(str(backfill)), "failed", 1)
        if recorder is not None:
            recorder.count("postupload_jobs", outcome="retrying" if retrying else "failed")
            if retrying:
                recorder.count("postupload_retries", reason=reason)
            recorder.flush_soon()
    except redis.RedisError as failure:  # RQ meets the same trouble next, and says so
        log.warning("job %s: its failure could not be noted: %s", job.id, failure)


def no_retry_when_permanent(
    job: Job, kind: type[BaseException], error: BaseException, tb: TracebackType
) -> bool:
    """RQ exception handler: a permanent failure (400, 401, 403, 404, a bad placeholder, a product
    environment not configured) is not retried; anything else follows the job's retry policy."""
    if isinstance(error, PostuploadError) and error.permanent:
        job.retries_left = 0
    return True  # go on to RQ's own handling: the failed registry, with the reason


def run_worker(
    settings: Settings, connection: redis.Redis, queue_names: list[str], burst: bool, concurrency: int = 1
) -> bool:
    """Work the queues, `concurrency` jobs at a time, until stopped (or, with burst, until they are
    empty), riding out Redis outages."""
    global _runtime
    widen_http_pools(concurrency + 2)  # every job in hand, and the tag flusher, keep a connection
    current = Runtime.from_settings(settings, connection)
    if current.rules.current() is None:
        assert current.rules.error is not None
        raise current.rules.error
    _runtime = current
    stopping = _StopSignals()
    current.rules.watch()  # reloads happen beside the jobs, not in them
    flusher = Flusher(current.batches, current.client_for, current.timeout).start()
    current.recorder.flush_in_background()  # an idle worker's last counts
    rq_connection = waiting(connection, rq_adapter.IDLE_WAIT)  # RQ's, which blocks IDLE_WAIT s for a job
    worked = False
    try:
        for attempt in itertools.count():
            if not stopping.wait_for_redis(connection):
                return worked
            worker = _worker(rq_connection, queue_names, concurrency)
            worker.stopping = stopping.stop
            worker.on_failure = lambda job, error: note_failure(job, error, current.recorder)
            try:
                worked = worker.work(burst=burst, with_scheduler=True, logging_level="INFO") or worked
            except redis.RedisError as error:  # while starting or stopping, outside RQ's own loop
                log.warning("worker %s: Redis failed: %s", worker.name, error)
            stopping.reinstall()  # RQ's handlers were in place while it worked
            if burst or stopping.requested:
                return worked
            # RQ left its loop on an error (Redis went away under a job): start afresh. The job in
            # hand stops heartbeating and is run again; done marks keep its effects single.
            pause = backoff.RESTART.compute(attempt)
            log.warning("worker stopped working on an error; starting again in %.0f s", pause)
            if stopping.sleep(pause):
                return worked
        return worked
    finally:
        current.rules.stop()
        flusher.stop()
        if burst:  # the queues are empty: send what waits in batches now rather than leave it
            current.batches.drain(current.client_for)
        current.recorder.close()
        rq_connection.close()


def _worker(connection: redis.Redis, queue_names: list[str], concurrency: int) -> Worker:
    return Worker(
        [notification_queue(connection, name) for name in queue_names],
        concurrency=concurrency,
        connection=connection,
        serializer=JSONSerializer,
        exception_handlers=[no_retry_when_permanent],
        maintenance_interval=rq_adapter.IDLE_WAIT,
        worker_ttl=rq_adapter.IDLE_WAIT + 15,  # RQ waits for a job worker_ttl - 15 s
    )


class _StopSignals:
    """SIGTERM and SIGINT while no RQ worker is working (waiting for Redis, or between two)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reinstall()

    @property
    def requested(self) -> bool:
        return self.stop.is_set()

    def reinstall(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: self.stop.set())

    def sleep(self, seconds: float) -> bool:
        """Sleep; True if a stop was asked for meanwhile."""
        return self.stop.wait(seconds)

    def wait_for_redis(self, connection: redis.Redis) -> bool:
        """Until Redis answers (True) or a stop is asked for (False); says once that it waits."""
        for attempt in itertools.count():
            try:
                connection.ping()
                if attempt:
                    log.warning("Redis answers again")
                return not self.requested
            except redis.RedisError as error:
                if not attempt:
                    log.warning("Redis does not answer (%s); waiting for it", error)
            if self.sleep(backoff.REDIS_POLL.compute(attempt)):
                return False
        return False

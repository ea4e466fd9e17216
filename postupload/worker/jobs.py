"""The jobs: match one notification, plan, execute; apply one tag change a batch could not. RQ calls
the job functions here by name; what they need (the Runtime) is built once per worker process."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from rq.job import Job, get_current_job

from postupload.config import Settings
from postupload.core.calls import Status
from postupload.core.client import Client
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.errors import ActionError, ConfigError, PostuploadError, RuleSetError
from postupload.parts import Parts
from postupload.rules.source import RuleSource
from postupload.store import keys
from postupload.store.batches import TagBatches
from postupload.store.metrics import Counts
from postupload.store.queue import schedule_again
from postupload.worker.executor import Executor, Outcome
from postupload.worker.rq_adapter import failure_reason, job_field

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a job needs beyond its arguments: the rule set, and per product environment a Cloudinary
    client and an executor (its own credentials and Admin budget; the tag batches are shared)."""

    rules: RuleSource
    executors: dict[str, Executor]  # by cloud name; "" is the one a job naming none is for
    batches: TagBatches
    connection: redis.Redis
    counts: Counts
    timeout: float  # of one Cloudinary call

    @classmethod
    def from_settings(cls, settings: Settings, connection: redis.Redis | None = None) -> Runtime:
        """The worker's parts (postupload.parts), and an executor per product environment."""
        parts = Parts(settings, connection)

        def again(envelope: Envelope, when: float) -> None:
            schedule_again(parts.queue, envelope, when, settings.retries)
            parts.counts.count("postupload_admin_budget_waits")

        executors = {
            cloud_name: Executor(
                parts.connection,
                parts.client(account),
                parts.batches,
                parts.budget(cloud_name),
                again,
                settings.asset_action_cap,
                api_key=account.api_key,
            )
            for cloud_name, account in parts.accounts.items()
        }
        with contextlib.suppress(ConfigError):  # several, none the default: each job names its own
            executors[""] = executors[settings.require_account().cloud_name]
        return cls(
            parts.rules, executors, parts.batches, parts.connection, parts.counts, settings.api_timeout
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
            self.counts.flush_soon()

    def _process(self, job_argument: Any) -> dict[str, Any]:
        ruleset = self.rules.current()
        if ruleset is None:
            raise self.rules.error or RuleSetError([])
        envelope = Envelope.from_job(job_argument)
        executor = self.executor_for(envelope.cloud_name)
        planned = decide(ruleset, envelope)
        self.counts.matched(planned.rules)
        if planned.problems:
            log.warning("notification %s: %s", envelope.id, "; ".join(planned.problems))
        job = get_current_job()
        outcomes = executor.execute(envelope, planned, job.id if job else None)
        for outcome in outcomes:
            self.counts.count(
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
        failed = [outcome for outcome in outcomes if outcome.status is Status.FAILED]
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
        self.counts.count("postupload_jobs", outcome="finished")
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


# RQ resolves a job's function by name and passes it only the job's arguments: the process's
# Runtime is installed here once, by the worker loop (or built from the environment on first use
# under a plain `rq worker`).
_installed: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _installed
    _installed = runtime


def runtime() -> Runtime:
    """The worker process's runtime."""
    global _installed
    if _installed is None:
        _installed = Runtime.from_settings(Settings.from_env())
    return _installed


def process_notification(envelope: dict[str, Any]) -> dict[str, Any]:
    """Job: one notification."""
    return runtime().process(envelope)


def apply_tag_item(spec_json: str, item: dict[str, Any]) -> dict[str, Any]:
    """Job: one asset's tag change that Cloudinary refused as part of a batch."""
    current = runtime()
    try:
        return current.batches.apply_single(spec_json, item, current.client_for)
    finally:
        current.counts.flush_soon()


def note_failure(job: Job, error: BaseException | None, counts: Counts | None) -> None:
    """Keep the failure on the job (what `postupload jobs` and the console show of a job waiting for
    its next try) and count it; RQ keeps only the last failure's traceback, and only once it failed
    for good."""
    reason = failure_reason(error)
    retrying = bool(job.retries_left)  # RQ retries after this, once the exception handlers ran
    backfill = job_field(job, "backfill")
    job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
    job.meta["last_error"] = str(error)[:2000]
    job.meta["last_reason"] = reason
    job.meta["last_failed_at"] = time.time()
    try:
        job.save_meta()
        if backfill and not retrying:
            job.connection.hincrby(keys.backfill(str(backfill)), "failed", 1)
        if counts is not None:
            counts.count("postupload_jobs", outcome="retrying" if retrying else "failed")
            if retrying:
                counts.count("postupload_retries", reason=reason)
            counts.flush_soon()
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

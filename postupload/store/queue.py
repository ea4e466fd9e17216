"""Durable, deduplicated enqueue of notifications through RQ. The only module that writes their jobs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from rq import Queue, Retry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import as_text, utcparse

from postupload import backoff
from postupload.core.envelope import Envelope
from postupload.logs import printable
from postupload.store import job_template, kept_notifications, keys
from postupload.store.group_commit import GroupCommit

JOB_FUNCTION = "postupload.worker.process_notification"
# Seconds a job may sit taken but not started before it counts as lost with its worker. A live
# worker starts what it took within milliseconds; a lost one is run again (done marks keep its
# effects single) at the first registry cleaning after this (every few seconds: worker.py).
STUCK_AFTER = 10

log = logging.getLogger(__name__)


class TakenJobs(IntermediateQueue):
    """RQ's list of jobs taken off the queue by a worker that has not yet marked them started. A job
    left there (its worker died in between) is run again once it was seen there STUCK_AFTER s,
    not RQ's minute: a worker running many jobs at once spends much of its time in between."""

    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        if first_seen is None:
            return False
        # RQ keeps a job's "first seen" a day and never clears it: a job retried (the same id, taken
        # again) would be found "stuck" by the mark of its earlier take, and failed while a live
        # worker was starting it. A mark older than the job's latest enqueue is that earlier one.
        enqueued = self.connection.hget(Job.key_for(job_id), "enqueued_at")
        if enqueued and utcparse(as_text(enqueued)) > first_seen:
            self.connection.set(self.get_first_seen_key(job_id), datetime.now(UTC).timestamp(), ex=keys.DAY)
            return False
        return (datetime.now(UTC) - first_seen).total_seconds() > STUCK_AFTER


class NotificationJob(Job):
    """RQ's job, whose retry writes the job's new status in the retry's own transaction.

    RQ 3.0's `Job.retry` writes "scheduled" at once, apart from the transaction that takes the job
    out of the started registry and schedules it. When Redis went away in between (a restart, a
    failover), the job was left "scheduled" in no schedule, and the started registry's cleanup,
    which takes back only "started" jobs as abandoned, dropped it: a notification answered 200,
    never done (the chaos test lost one this way). Written in the transaction, the status stays
    "started" until the job is scheduled, and a lost transaction leaves a job the cleanup retries.
    """

    def retry(self, queue: Queue, pipeline: Any) -> None:
        interval = self.get_retry_interval()
        if not interval:  # enqueued again at once: RQ writes all of it in the transaction
            super().retry(queue, pipeline)
            return
        assert self.retries_left
        self.retries_left -= 1
        when = datetime.now(UTC) + timedelta(seconds=interval)
        self.set_status(JobStatus.SCHEDULED, pipeline=pipeline)
        queue.schedule_job(self, when, pipeline=pipeline)
        log.debug("job %s: scheduled for retry at %s, %s remaining", self.id, when, self.retries_left)


class NotificationQueue(Queue):
    """RQ's queue, whose registry-cleaning lock lapses in CLEANING_LOCK_TTL s instead of RQ's 899: a
    worker killed while it cleans would otherwise keep every worker from cleaning, and so from
    bringing back dead workers' jobs, for 15 minutes. Its taken jobs are `TakenJobs`."""

    job_class = NotificationJob

    def acquire_maintenance_lock(self) -> bool:
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=keys.CLEANING_LOCK_TTL))

    @property
    def intermediate_queue(self) -> IntermediateQueue:
        return TakenJobs(self.key, connection=self.connection)

    @functools.cached_property
    def stores(self) -> GroupCommit[_Store]:
        """Its notifications being stored at one moment, sent to Redis together (`group_commit`)."""
        return GroupCommit(functools.partial(_Storing, self.connection))


def notification_queue(connection: redis.Redis, name: str = keys.QUEUE) -> NotificationQueue:
    """Our queue: JSON job arguments, so any RQ tool can read them."""
    return NotificationQueue(name, connection=connection, serializer=JSONSerializer)


def quiet(connection: redis.Redis) -> bool:
    """Nothing left to do: no job queued, being worked (or stuck between queue and worker) or
    scheduled, and no tag change waiting in a batch. Read in one transaction: read one after
    another, in the order a job moves (scheduled, queued, taken, started, scheduled again for a
    retry), a job moving along was missed at each look, and a test saw quiet while it was there."""
    queue = notification_queue(connection)
    with connection.pipeline(transaction=True) as pipe:
        pipe.llen(queue.key)
        pipe.llen(queue.intermediate_queue_key)
        pipe.zcard(queue.started_job_registry.key)
        pipe.zcard(queue.scheduled_job_registry.key)
        pipe.zcard(keys.TAG_BATCHES_DUE)
        return not any(pipe.execute())


def retry_policy(attempts: int) -> Retry | None:
    """backoff.RETRY's intervals (2-4, 4-8, 8-16, ... s), drawn per job so retries spread."""
    if attempts < 1:
        return None
    # At least 2 s: RQ schedules on whole seconds, so 1 s could come round almost at once.
    intervals = [max(2, round(backoff.RETRY.compute(step))) for step in range(attempts)]
    return Retry(max=attempts, interval=intervals)


# The dedupe mark and, only when it was not there, every write of the enqueue: one round trip, and
# atomic. The writes are RQ's own (and the kept copy's), recorded from a pipeline as RQ made them,
# so nothing of RQ's job format is written here. ARGV: the mark's value and TTL, then (`_ANY_WRITES`)
# each command as its number of words followed by its words. A job template's script
# (`job_template`) has RQ's writes written into it and takes only a job's values before those.
_SET_MARK = "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end"
_ANY_WRITES = """
local i = {first}
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""


@dataclass(frozen=True)
class _Script:
    source: str
    order: tuple[str, ...] = ()  # a template's values, from ARGV[3] on

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


_STORE_UNLESS_SEEN = _Script(_SET_MARK + _ANY_WRITES.format(first=3))


def enqueue_notification(
    queue: NotificationQueue,
    envelope: Envelope,
    retries: int = 6,
    keep: kept_notifications.Keep | None = None,
    replicas: int = 0,
    job_id: str | None = None,
) -> bool:
    """Store the notification as a job unless an identical body was stored before; True if queued.

    The dedupe mark, the job and (with `keep`) the copy kept for previews are written by one script
    in one round trip (three before: WATCH, EXISTS, MULTI/EXEC): a failure leaves none of them, so
    Cloudinary's retry is not mistaken for a duplicate. With `replicas`, that many replicas must
    have the writes too (NotReplicated otherwise): a primary that fails over cannot take a
    notification answered 200 with it.
    """
    job_id = job_id or envelope.id  # a replay's job is not the notification's first one
    key = keys.dedupe(job_id)
    argument = envelope.to_job()
    job = job_template.Job(
        job_id,
        argument,
        json.dumps(argument, separators=(",", ":")),  # once, for the job and the kept copy
        f"notification {printable(envelope.notification_type)}",
        retry_policy(retries),
    )
    learnt = _template(queue, retries)
    words: list[Any] = [job_id, keys.DEDUPE_TTL]
    if learnt is not None:
        template, script = learnt
        words += template.arguments(job, list(script.order))
    else:
        script = _STORE_UNLESS_SEEN
        for command in _rq_writes(queue, job):
            words += [len(command), *command]
    with queue.connection.pipeline() as writes:  # only records the commands: never executed
        trim_to_memory = keep is not None and kept_notifications.keep_copy(
            writes, envelope, keep, envelope.received_at, job.encoded
        )
        for command, _options in writes.command_stack:
            words += [len(command), *command]
        writes.reset()
    if not _store_unless_seen(queue.stores, _Store(script, key, words, replicas)):
        return False
    if trim_to_memory and keep is not None:
        try:
            kept_notifications.trim_to_memory(queue.connection, keep)
        except redis.RedisError as error:  # the notification is stored: the next look trims
            log.warning("the notifications kept for previews could not be trimmed: %s", error)
    return True


def _rq_writes(queue: Queue, job: job_template.Job) -> job_template.Writes:
    """The writes RQ makes to enqueue a notification job, recorded from a pipeline, not sent."""
    with queue.connection.pipeline() as writes:
        queue.enqueue_call(
            JOB_FUNCTION,
            args=(job.argument,),
            job_id=job.id,
            timeout=keys.JOB_TIMEOUT,
            result_ttl=keys.FINISHED_JOB_TTL,
            failure_ttl=keys.FAILED_JOB_TTL,
            description=job.description,
            retry=job.retry,
            pipeline=writes,
        )
        recorded = [command for command, _options in writes.command_stack]
        writes.reset()
    return recorded


_TEMPLATES: dict[tuple[str, str, int], tuple[job_template.Template, _Script] | None] = {}


def _template(queue: Queue, retries: int) -> tuple[job_template.Template, _Script] | None:
    """The queue's job template (`job_template`) and its script, learnt at its first job; None when
    RQ's writes cannot be filled in, and RQ builds every job."""
    found = (queue.name, type(queue).__name__, retries)
    if found not in _TEMPLATES:
        template = job_template.learn(queue, JOB_FUNCTION, retries, _rq_writes)
        if template is None:
            log.warning("RQ's job writes could not be learnt: RQ builds every job (slower)")
            _TEMPLATES[found] = None
        else:
            source, order = template.script(_SET_MARK, 3)
            script = _Script(source + _ANY_WRITES.format(first=3 + len(order)), tuple(order))
            _TEMPLATES[found] = (template, script)
    return _TEMPLATES[found]


class NotReplicated(redis.RedisError):
    """Fewer replicas than asked for confirmed a notification's writes in REPLICA_WAIT_MS."""


REPLICA_WAIT_MS = 2000  # a replica on a network confirms in a millisecond or two; it is gone by then


@dataclass(frozen=True)
class _Store:
    """One notification's script run: its dedupe key, its words, and the replicas it waits for."""

    script: _Script
    key: str
    words: list[Any]
    replicas: int


def _store_unless_seen(group: GroupCommit[_Store], store: _Store) -> bool:
    """Run the store's script in a round trip shared with the process's other notifications being
    stored at that moment (`group`); with `replicas`, WAIT for them in the same round trip."""
    stored, confirmed = group(store)
    if store.replicas and confirmed < store.replicas:
        if stored:  # Cloudinary's retry must store it again, not be taken for a duplicate
            with contextlib.suppress(redis.RedisError):
                group_connection(group).delete(store.key)
        raise NotReplicated(
            f"{confirmed} of {store.replicas} replicas confirmed the notification in {REPLICA_WAIT_MS} ms"
        )
    return bool(stored)


class _Storing:
    """A group commit's round trips, on a connection of its own. Only the caller whose turn it is
    sends, one at a time, so the connection is taken from no pool: redis-py's work around a pooled
    command (taking a connection, a system call to see it holds no stray reply, giving it back) was
    about 4% of a web process's CPU in a profile under load. Made in each process (a group commit
    is made again in a forked child), from the client's pool: the same Redis, or the sentinels'
    primary, and its retries."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.line: Any = client.connection_pool.make_connection()  # redis-py's Connection

    def __call__(self, stores: list[_Store]) -> list[Any]:
        """Each store's answer: (stored, replicas that confirmed), or the error its script met.
        A lost connection is made again and the round trip sent again, as redis-py's retries say:
        a script that ran the first time finds its mark and answers "seen"."""
        line = self.line
        return list(line.retry.call_with_retry(lambda: self._round_trip(stores), lambda _: line.disconnect()))

    def _round_trip(self, stores: list[_Store]) -> list[Any]:
        """Each store's script; then, if any asks, a WAIT for the most replicas any asks for, which
        covers every write before it. A script Redis does not have (a Redis started since it was
        loaded: nothing ran) is loaded, and those stores sent again."""
        line = self.line
        replicas = max(store.replicas for store in stores)
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", store.script.sha, 1, store.key, *store.words) for store in stores
        ]
        if replicas:
            commands.append(("WAIT", replicas, REPLICA_WAIT_MS))
        line.connect()  # if not connected: through sentinels, to the primary they name now
        line.send_packed_command(line.pack_commands(commands))
        answers = [self._reply() for _ in commands]
        confirmed = answers.pop() if replicas else 0
        if isinstance(confirmed, Exception):  # no WAIT on this Redis: every write's fate is unknown
            return [confirmed] * len(stores)
        unknown = [
            n for n, answer in enumerate(answers) if isinstance(answer, redis.exceptions.NoScriptError)
        ]
        for script in {stores[n].script for n in unknown}:
            line.send_command("SCRIPT", "LOAD", script.source)
            line.read_response()
        again = iter(self._round_trip([stores[n] for n in unknown]) if unknown else [])
        return [
            next(again) if n in unknown else answer if isinstance(answer, Exception) else (answer, confirmed)
            for n, answer in enumerate(answers)
        ]

    def _reply(self) -> Any:
        try:
            return self.line.read_response()
        except redis.ResponseError as error:  # this command's alone: the replies after it are read
            return error


def group_connection(group: GroupCommit[_Store]) -> redis.Redis:
    """The client a queue's group commit stores through."""
    return cast(_Storing, group.send).client


_DEFERRAL = re.compile(r"-at-\d+$")


def is_deferral(job_id: str) -> bool:
    """A job `schedule_again` made (waiting for a reset), not a retry of a failed one."""
    return _DEFERRAL.search(job_id) is not None


def schedule_again(queue: Queue, envelope: Envelope, when: float, retries: int) -> None:
    """Run the notification again at `when`: a scheduled job, not a busy wait (one per time)."""
    job_id = f"{envelope.id}-at-{int(when)}"
    if Job.exists(job_id, connection=queue.connection):
        return
    until = datetime.fromtimestamp(when, UTC)
    queue.enqueue_at(
        until,
        JOB_FUNCTION,
        envelope.to_job(),
        job_id=job_id,
        description=f"notification {printable(envelope.notification_type)}",
        meta={
            "last_reason": "admin_budget",
            "last_error": f"the Admin API budget is spent until {until.isoformat(timespec='seconds')}",
        },
        at_front=True,  # it waited already: ahead of what came since
        retry=retry_policy(retries),
        result_ttl=keys.FINISHED_JOB_TTL,
        failure_ttl=keys.FAILED_JOB_TTL,
    )

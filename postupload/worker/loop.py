"""The worker process's loop: work the queues with RQ (worker.rq_adapter), `concurrency` jobs at a
time, and ride out Redis outages and RQ's own stops until told to stop."""

from __future__ import annotations

import itertools
import logging
import signal

import redis
from rq.serializers import JSONSerializer

from postupload import backoff
from postupload.cloudinary_api import widen_http_pools
from postupload.config import Settings
from postupload.processes import StopFlag
from postupload.store.batches import Flusher
from postupload.store.connection import waiting
from postupload.store.queue import notification_queue
from postupload.worker import jobs, rq_adapter
from postupload.worker.jobs import Runtime, no_retry_when_permanent, note_failure
from postupload.worker.rq_adapter import Worker

log = logging.getLogger(__name__)


def run_worker(
    settings: Settings, connection: redis.Redis, queue_names: list[str], burst: bool, concurrency: int = 1
) -> bool:
    """Work the queues, `concurrency` jobs at a time, until stopped (or, with burst, until they are
    empty), riding out Redis outages."""
    widen_http_pools(concurrency + 2)  # every job in hand, and the tag flusher, keep a connection
    current = Runtime.from_settings(settings, connection)
    if current.rules.current() is None:
        assert current.rules.error is not None
        raise current.rules.error
    jobs.install(current)
    stopping = _StopSignals()
    current.rules.watch()  # reloads happen beside the jobs, not in them
    flusher = Flusher(current.batches, current.client_for, current.timeout).start()
    current.counts.flush_in_background()  # an idle worker's last counts
    rq_connection = waiting(connection, rq_adapter.IDLE_WAIT)  # RQ's, which blocks IDLE_WAIT s for a job
    worked = False
    try:
        for attempt in itertools.count():
            if not stopping.wait_for_redis(connection):
                return worked
            worker = _worker(rq_connection, queue_names, concurrency)
            worker.stopping = stopping.stop
            worker.on_failure = lambda job, error: note_failure(job, error, current.counts)
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
        current.counts.close()
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
        self.stop = StopFlag()  # set by the handlers below: no lock (processes.StopFlag)
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

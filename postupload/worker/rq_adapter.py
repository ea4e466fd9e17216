"""Where postupload's worker departs from RQ's: every override of an RQ internal lives here, each
with its reason, and tests/test_rq_contract.py checks that what each one replaces is still there,
as it was, in the RQ and redis-py versions pyproject.toml allows.

What RQ does that we change, and why (details at each override):

- Worker.execute_job / dequeue_job_and_maintain_ttl / _take_slot: many jobs at once, each in a
  thread (a job mostly waits for Cloudinary), as one RQ worker on RQ's registries.
- Worker.heartbeat / get_heartbeat_ttl / _beat: jobs in hand beat every HEARTBEAT_TTL / 3 s, so a
  killed worker's jobs run again within seconds; the worker's own key always lives longer than
  its longest wait for a job, so a live worker is never counted dead.
- Worker.subscribe: RQ's command channel thread wakes every second, so a stop is never held up.
- Worker.handle_job_success: a finished job is deleted, and RQ's delete fails on an execution of
  the job that a dead worker left behind.
- Worker.run_maintenance_tasks / Scheduler.enqueue_scheduled_jobs: RQ's upkeep is done once per
  Redis by the one scheduler, not by every idle worker.
- Worker._install_signal_handlers / request_stop / _shutdown / teardown: a stop asked at any moment
  (starting, idle, busy) stops the worker; jobs in hand finish first.
- Worker._start_scheduler / Scheduler.start / _install_signal_handlers / work / acquire_locks: the
  scheduler is ours, dies with its worker, gets a stop sent while it forks, and takes over a lock
  its dead owner could not release.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from rq import Queue, SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty
from rq.utils import as_text
from rq.utils import now as utcnow

from postupload.errors import PostuploadError
from postupload.processes import StopFlag, die_with_parent
from postupload.store.connection import same_redis
from postupload.store.queue import NotificationJob

log = logging.getLogger(__name__)

# A job whose worker stops heartbeating (beats every HEARTBEAT_TTL / 3 s) this long is run again. The
# one scheduler (one per Redis, in whichever worker holds its lock) looks for such jobs every
# RESCUE_EVERY s, so a killed worker's job runs again within about 15 s. Three missed beats are
# needed, so a slow Redis round trip does not orphan a live job.
HEARTBEAT_TTL = 9
RESCUE_EVERY = 5
# An idle worker blocks on the queue IDLE_WAIT s at a time (RQ waits worker_ttl - 15 s), and between
# two waits heartbeats and, if no scheduler of its own runs, tries to take the scheduler's lock: a
# few commands every 15 s, so 50 idle workers hardly load Redis. A dead scheduler's lock is so taken
# over within about IDLE_WAIT s (after STALE_LOCK when it could not be released). A worker that dies
# leaves RQ's count of live workers (and /readyz) within IDLE_WAIT + 10 s, its key's time to live,
# and the next cleaning.
IDLE_WAIT = 15
# The worker's own key lives this much longer than its longest wait for a job, whatever RQ asks.
ALIVE_MARGIN = 10
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
STALE_LOCK = 10  # seconds a scheduler lock went without its owner's refresh (every second): it is gone
# Delete the lock only while its time to live says it was not refreshed lately (atomic with the check).
_BREAK_STALE_LOCK = """
local ttl = redis.call('TTL', KEYS[1])
if ttl >= 0 and ttl < tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Worker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job: the rule set and HTTP connections are reused) that runs up
    to `concurrency` jobs at once, each in a thread of its own: a job mostly waits for Cloudinary, so
    one process keeps many calls in flight. It is still one RQ worker, on RQ's queues and registries:
    each job has its own execution in the started registry (RQ 3 tracks several per worker), and
    RQ's own code records each outcome.

    Every job in hand is heartbeaten, so a worker killed mid-job is noticed within HEARTBEAT_TTL
    seconds and its jobs run again (RQ retries abandoned jobs), instead of after the job timeout.
    A stop request lets the jobs in hand finish and takes no new one; a second one stops at once
    (those jobs then run again elsewhere, and their done marks keep what they did single)."""

    stopping: StopFlag | None = None  # set on SIGTERM/SIGINT, for whoever runs this worker
    on_failure: Callable[[Job, BaseException | None], None] | None = None  # after RQ's handlers
    death_penalty_class = TimerDeathPenalty  # a job's timeout: SIGALRM would reach only the main thread
    job_class = NotificationJob  # its retry is written in one transaction (store/queue.py)

    def __init__(self, *args: Any, concurrency: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._running: dict[str, tuple[Execution, StartedJobRegistry]] = {}
        self._changed = threading.Condition()  # a job ended
        self._listening = False  # blocked on Redis for the next job
        self._beats_stop = threading.Event()
        self._burst = False

    def subscribe(self) -> None:
        """RQ's, with its listening thread waking every second instead of every 60 s: redis-py 8 has
        the thread's stop wait for it, and a thread still waiting for its subscription (a worker
        stopped just after it started) held the stop up to a minute."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ's says None
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's, keeping the worker's key IDLE_WAIT + 10 s (RQ: worker_ttl + 60), so a dead worker
        leaves the count of live workers soon; a live one beats at least every IDLE_WAIT s. RQ beats
        before and after each dequeue and after each job it starts: with many jobs a second, once
        a second is enough (the heartbeat thread covers the jobs in hand)."""
        recent = self.last_heartbeat is not None and (utcnow() - self.last_heartbeat).total_seconds() < 1.0
        if pipeline is None and timeout is None and recent:
            return
        # Never shorter: RQ's beat as a job starts asks for the job's HEARTBEAT_TTL, and the next beat
        # was skipped as recent, so an idle worker's key expired during its wait for the next job
        # and a live worker left RQ's registry, /readyz and the metrics for good.
        super().heartbeat(max(timeout or 0, IDLE_WAIT + ALIVE_MARGIN), pipeline)

    def run_maintenance_tasks(self) -> None:
        """Start a scheduler if none of ours runs (it may take a dead one's lock). Bringing back dead
        workers' jobs and cleaning registries is the scheduler's (see Scheduler): done once per Redis
        every RESCUE_EVERY s, not by every worker. A burst worker, whose scheduler does not stay, does
        RQ's whole maintenance, as does one without a scheduler."""
        if self._burst or self.scheduler is None:
            super().run_maintenance_tasks()
            return
        if self.last_cleaned_at:
            process = self.scheduler._process
            if process is None or not process.is_alive():
                self.scheduler.acquire_locks(auto_start=True)
        self.last_cleaned_at = utcnow()  # type: ignore[assignment]  # RQ's is set to None first

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Our own failures (what Cloudinary answered, what was refused) are one log line each, with
        the reason; anything else keeps RQ's traceback."""
        error = exc_info[1]
        if not isinstance(error, PostuploadError):
            super().handle_exception(job, *exc_info)
        else:
            final = error.permanent or not job.retries_left
            then = "failed for good" if final else "failed, will retry"
            context = {
                "job": job.id,
                "notification": job_field(job, "id"),
                "outcome": "failed" if final else "retrying",
                "reason": failure_reason(error),
            }
            log.warning("job %s (%s) %s: %s", job.id, job.description, then, error, extra=context)
            call_exception_handlers(self._exc_handlers, job, *exc_info)
        if self.on_failure is not None:
            self.on_failure(job, error)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """Forget the job's executions that are gone from Redis, then RQ's own handling.

        A finished job is deleted (result_ttl 0), and RQ's delete fetches each execution the job
        ever had (rq 3.0: Execution.fetch raises ValueError on a missing one). A job run again after
        its worker was killed still lists that worker's execution, whose hash went with its
        heartbeats: the delete then raised, and RQ failed a job whose calls had all been made."""
        found = cast(list[bytes], self.connection.zrange(job.execution_registry.key, 0, -1))
        listed = [as_text(i) for i in found]
        if len(listed) > 1:  # only ours, nearly always: one round trip
            with self.connection.pipeline(transaction=False) as pipe:
                for execution_id in listed:
                    pipe.exists(Execution(execution_id, job.id, self.connection).key)
                present = pipe.execute()
            lost = [i for i, there in zip(listed, present, strict=True) if not there and i != execution.id]
            if lost:
                self.connection.zrem(job.execution_registry.key, *lost)
        super().handle_job_success(job, queue, started_job_registry, execution)

    def request_stop(self, signum: int, frame: Any) -> None:
        if self.stopping is not None:
            self.stopping.set()
        super().request_stop(signum, frame)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stopping is not None and self.stopping.is_set():
            self._stop_requested = True  # asked while it started, before RQ's handlers: stop at once

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own, with our Scheduler (which does not outlive this worker). Its name is this
        process's, so after a Redis outage (which its scheduler does not survive, nor can it release
        its lock then) this process takes its own lock back at once instead of after the lock's 61 s."""
        self._burst = burst
        self.scheduler = Scheduler(
            self.queues,
            name=f"{socket.gethostname()}:{os.getpid()}",
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.maintainer = self
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self._beats_stop.clear()
        threading.Thread(target=self._beat, name="heartbeats", daemon=True).start()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Start the job in a thread of its own and go back for the next one (a slot was taken)."""
        execution = self.prepare_execution(job)
        with self._changed:
            self._running[execution.id] = (execution, queue.started_job_registry)
        threading.Thread(
            target=self._perform, args=(job, queue, execution), name=f"job-{job.id}", daemon=True
        ).start()

    def _perform(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            self.perform_job(job, queue, execution)  # RQ's own: it records the outcome, whatever it is
        except redis.RedisError as error:
            # Redis went away under the job, so RQ could not record its outcome either. Its execution
            # stays in the started registry without heartbeats: it is run again (done marks keep its
            # calls single) once Redis is back and the scheduler finds it orphaned.
            log.warning(
                "job %s: Redis went away while it ran (%s); it runs again once Redis is back", job.id, error
            )
        finally:
            with self._changed:
                self._running.pop(execution.id, None)
                self._changed.notify_all()
            self._slots.release()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's, once a slot is free. A burst worker (timeout None) that finds the queues empty waits
        for the jobs in hand and looks again, as they may have queued more."""
        self._take_slot()
        result = None
        try:
            while True:
                self._listening = True  # from now on a stop interrupts the wait (see _shutdown)
                try:
                    if self._stop_requested:  # asked just before: do not wait IDLE_WAIT s for nothing
                        raise StopRequested()
                    result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                finally:
                    self._listening = False
                if result is not None or timeout is not None or not self._wait_for_jobs_in_hand():
                    return result
        finally:
            if result is None:
                self._slots.release()

    def _take_slot(self) -> None:
        """Wait until fewer than `concurrency` jobs run, doing RQ's maintenance meanwhile."""
        while not self._slots.acquire(timeout=1.0):
            if self._stop_requested:
                raise StopRequested()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()

    def _wait_for_jobs_in_hand(self) -> bool:
        """Until no job runs; False if none did."""
        with self._changed:
            if not self._running:
                return False
            self._changed.wait_for(lambda: not self._running)
            return True

    def _shutdown(self) -> None:
        """Warm shutdown (RQ's, for many jobs): take no new job, let those in hand finish."""
        self._stop_requested = True
        # Only shown by RQ's tools. A stop often comes with Redis going away (`postupload run` killed:
        # its Redis and workers get SIGTERM together); failing here, in the signal handler, the
        # error went into RQ's wait for a job, which then retried Redis forever instead of stopping.
        with contextlib.suppress(redis.RedisError):
            self.set_shutdown_requested_date()
        if self.scheduler:
            self.stop_scheduler()
        if self._listening:  # blocked on Redis for the next job: nothing in hand is lost
            raise StopRequested()

    def teardown(self) -> None:
        if self._running:
            log.info("worker %s: waiting for %d jobs in hand to finish", self.name, len(self._running))
            self._wait_for_jobs_in_hand()
        self._beats_stop.set()
        super().teardown()

    def _beat(self) -> None:
        """Every HEARTBEAT_TTL / 3 s, one round trip for every job in hand and the worker itself."""
        while not self._beats_stop.wait(HEARTBEAT_TTL / 3):
            with self._changed:
                running = list(self._running.values())
            if not running:
                continue  # an idle worker heartbeats itself as it waits for a job
            try:
                with self.connection.pipeline() as pipe:
                    self.heartbeat(pipeline=pipe)  # it may be waiting for a slot, not for a job
                    for execution, registry in running:
                        execution.heartbeat(registry, HEARTBEAT_TTL, pipe)
                    pipe.execute()
            except redis.RedisError as error:  # the jobs themselves will meet the same trouble
                log.warning("heartbeat for %d jobs failed: %s", len(running), error)


class Scheduler(RQScheduler):
    """RQ's scheduler (retries with intervals, work deferred to a rate-limit reset) in a process
    forked from its worker. A worker killed outright would leave it running, orphaned; this one gets
    SIGTERM when its worker dies, stops, and releases its lock, so another worker's scheduler takes
    over at its next maintenance (MAINTENANCE_INTERVAL) instead of after the lock's 61 s.

    A scheduler that could not release its lock (Redis was away when it stopped) refreshes it no
    more: a lock left STALE_LOCK seconds without a refresh is taken over.

    Being one per Redis, and awake every second anyway, it also does the workers' maintenance every
    RESCUE_EVERY s (RQ has every worker do it between two waits for a job): the jobs of dead
    workers, and jobs taken off the queue but never started, run again; registries are cleaned.
    It uses its worker's code for it (forked, it has a copy of the worker)."""

    maintainer: Worker | None = None
    _next_rescue = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake: StopFlag | None = None  # made in the scheduler's own process
        self._origin: redis.Redis = kwargs["connection"]

    @property
    def connection(self) -> Any:  # as RQ types it
        """A client of its worker's Redis, made again in the forked process. RQ makes it from the
        pool's class and settings, which cannot make a pool that follows Redis Sentinels."""
        if self._connection is None:
            self._connection = cast(Any, same_redis(self._origin))
        return self._connection

    def enqueue_scheduled_jobs(self) -> None:
        super().enqueue_scheduled_jobs()
        if self.maintainer is not None and time.monotonic() >= self._next_rescue:
            self._next_rescue = time.monotonic() + RESCUE_EVERY
            self.maintainer.clean_registries()
            self.maintainer.clean_group_registries()

    def acquire_locks(self, auto_start: bool = False) -> Any:
        fresh = self.interval + 60 - STALE_LOCK  # RQ refreshes its locks to interval + 60 s
        names = [self.get_locking_key(name) for name in self._queue_names]
        with self.connection.pipeline(transaction=False) as pipe:  # a worker's look, every 15 s: cheap
            for key in names:
                pipe.get(key).ttl(key)
            found = pipe.execute()
        owners = [owner.decode() if isinstance(owner, bytes) else owner for owner in found[::2]]
        held = [owner for owner, ttl in zip(owners, found[1::2], strict=True) if owner and ttl >= fresh]
        if len(held) == len(names) and self.name not in held:
            self._acquired_locks = set()  # every lock is another live scheduler's
            return set()
        breaker = self.connection.register_script(_BREAK_STALE_LOCK)
        for name, key in zip(self._queue_names, names, strict=True):
            if breaker(keys=[key], args=[fresh]):
                log.warning("scheduler lock for %s not refreshed for %d s: taken over", name, STALE_LOCK)
        return super().acquire_locks(auto_start)

    def start(self) -> Any:
        """RQ's fork, with SIGTERM and SIGINT blocked across it. Forked, the scheduler has its worker's
        handlers (which only set a flag in the worker) until RQ installs its own: a stop sent in
        between was lost, and the worker waited for the scheduler forever (it happened when a worker
        was stopped as it started). Blocked, the signal waits in the scheduler until its handlers
        are in place; in the worker it is delivered as soon as the fork is done."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a stop sent meanwhile comes now

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        """The SIGTERM handler: it takes no lock (`StopFlag`; a threading.Event here left a
        scheduler orphaned by a killed worker alive for good, which a clean clone's suite saw)."""
        super().request_stop(signum, frame)
        if self._wake is not None:
            self._wake.set()

    def work(self) -> None:
        """RQ's loop, its wait between two looks cut short by a stop. RQ sleeps, and a sleep resumes
        after the signal: each stop of a worker (which waits for its scheduler) took up to a second."""
        die_with_parent()
        self._wake = wake = StopFlag()
        self._install_signal_handlers()
        self.register_birth()
        while not self._stop_requested:
            if self.should_reacquire_locks:
                self.acquire_locks()
            self.heartbeat()
            self.enqueue_scheduled_jobs()
            wake.wait(self.interval)
        self.stop()


def job_field(job: Job, name: str) -> Any:
    """A field of the job's envelope argument (a notification job's `id`, `backfill`), or None."""
    argument = job.args[0] if job.args else None
    return argument.get(name) if isinstance(argument, dict) else None


def failure_reason(error: BaseException | None) -> str:
    """Few values, for a metric label and a log field: ours say theirs, others their class name."""
    return getattr(error, "reason", None) or type(error).__name__

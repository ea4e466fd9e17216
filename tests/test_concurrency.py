"""A worker process with many jobs in hand: calls overlap, every effect happens once, a stop lets the
jobs in hand finish, and a job lost between queue and worker comes back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from postupload.core.envelope import Envelope
from postupload.local.redis_server import RedisServer
from postupload.store.queue import STUCK_AFTER, enqueue_notification, notification_queue
from postupload.worker.rq_adapter import Worker
from tests.conftest import ROOT, Stack, wait_until
from tests.test_actions import EVERYDAY, _all_done, _faults, assert_exactly_once

EXPLICIT_ONLY = """
rules:
  - name: slow
    match: {resource_type: image}
    actions:
      - explicit: {eager: "c_scale,w_300"}
"""


def most_at_once(calls: list[dict[str, Any]]) -> int:
    """The most calls the emulator was answering at the same moment."""
    edges = sorted(
        [(call["time"], 1) for call in calls] + [(call["time"] + call["duration"], -1) for call in calls]
    )
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def _work(stack: Stack, concurrency: int, uploads: int) -> list[str]:
    """One worker with this many jobs at once, and this many uploads; their public ids."""
    stack.workers.append(stack.processes.start("worker", "--concurrency", str(concurrency)))
    names = [f"asset/{number}" for number in range(uploads)]
    for name in names:
        stack.upload(public_id=name)
    return names


def test_one_worker_keeps_many_calls_in_flight_and_does_each_effect_once(make_stack: Any) -> None:
    stack: Stack = make_stack(EVERYDAY, faults=_faults(latency=0.3))
    names = _work(stack, concurrency=8, uploads=24)
    assert wait_until(lambda: stack.idle() and _all_done(stack, names), 60), stack.processes.output()[-3000:]
    # 8 jobs in hand, each making one 0.3 s call at a time: up to 8 explicit calls overlap.
    assert most_at_once(stack.calls("explicit")) >= 4
    assert not stack.failed()
    assert_exactly_once(stack, names)


def test_concurrency_one_makes_one_call_at_a_time(make_stack: Any) -> None:
    stack: Stack = make_stack(EXPLICIT_ONLY, faults=_faults(latency=0.2))
    _work(stack, concurrency=1, uploads=5)
    assert wait_until(lambda: len(stack.calls("explicit")) == 5 and stack.idle(), 30)
    assert most_at_once(stack.calls("explicit")) == 1


def test_a_stop_lets_the_jobs_in_hand_finish_and_takes_no_new_one(make_stack: Any) -> None:
    stack: Stack = make_stack(EXPLICIT_ONLY, faults=_faults(latency=1.5))
    worker = stack.processes.start("worker", "--concurrency", "4")
    stack.workers.append(worker)
    names = [f"stop/{number}" for number in range(8)]
    for name in names:
        stack.upload(public_id=name)
    queue = notification_queue(stack.redis)
    assert wait_until(lambda: queue.started_job_registry.count == 4, 20), stack.processes.output()[-3000:]
    in_hand = queue.started_job_registry.get_job_ids()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert stack.finished(in_hand)
    assert queue.started_job_registry.count == 0
    assert queue.count == 4  # the rest wait for the next worker, untouched
    assert len(stack.calls("explicit")) == 4
    assert not stack.failed()


def _taken_but_not_started(connection: redis.Redis, seen_ago: float) -> tuple[Job, Any]:
    """A queued notification moved to RQ's list of taken jobs, first seen there `seen_ago` s ago, as
    if its worker had died between taking and starting it."""
    queue = notification_queue(connection)
    notification = {"notification_type": "upload", "public_id": "lost", "resource_type": "image"}
    envelope = Envelope("lost-1", time.time(), "test-cloud", notification)
    enqueue_notification(queue, envelope)
    taken = queue.intermediate_queue
    connection.lmove(queue.key, taken.key, "RIGHT", "LEFT")
    first_seen = datetime.now(UTC).timestamp() - seen_ago
    connection.set(taken.get_first_seen_key(envelope.id), first_seen)
    enqueued = datetime.fromtimestamp(first_seen - 0.5, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    connection.hset(Job.key_for(envelope.id), "enqueued_at", enqueued)  # before it was seen taken
    job = Job.fetch(envelope.id, connection=connection, serializer=JSONSerializer)
    return job, queue


def test_a_job_taken_by_a_worker_that_died_before_starting_it_runs_again(redis_conn: redis.Redis) -> None:
    job, queue = _taken_but_not_started(redis_conn, seen_ago=STUCK_AFTER + 1)
    queue.intermediate_queue.cleanup(Worker([queue], connection=redis_conn), queue)
    assert redis_conn.llen(queue.intermediate_queue.key) == 0
    assert job.get_status(refresh=True) in ("scheduled", "queued")  # its retry, not a failure
    assert job.retries_left is not None


def test_a_retried_job_taken_again_is_not_found_stuck_by_its_earlier_take(redis_conn: redis.Redis) -> None:
    """RQ keeps a job's first-seen mark a day: a retry of the same job, caught between being taken
    and started, was failed as "stuck in intermediate queue" by the mark of its first take (a clean
    clone's suite saw a retried job fail so, its Cloudinary error lost)."""
    job, queue = _taken_but_not_started(redis_conn, seen_ago=STUCK_AFTER + 20)
    again = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    redis_conn.hset(job.key, "enqueued_at", again)  # enqueued again for its retry, taken again
    queue.intermediate_queue.cleanup(Worker([queue], connection=redis_conn), queue)
    assert redis_conn.llen(queue.intermediate_queue.key) == 1
    assert job.get_status(refresh=True) == "queued" and not queue.failed_job_registry.count
    seen = queue.intermediate_queue.get_first_seen(job.id)
    assert seen is not None and (datetime.now(UTC) - seen).total_seconds() < STUCK_AFTER  # this take's


def test_a_job_taken_moments_ago_is_left_to_its_worker(redis_conn: redis.Redis) -> None:
    job, queue = _taken_but_not_started(redis_conn, seen_ago=STUCK_AFTER / 2)
    queue.intermediate_queue.cleanup(Worker([queue], connection=redis_conn), queue)
    assert redis_conn.llen(queue.intermediate_queue.key) == 1
    assert job.get_status(refresh=True) == "queued"


def test_idle_workers_hardly_load_redis(own_redis: RedisServer, make_stack: Any) -> None:
    """Idle, workers wait on Redis instead of asking it: the RQ scheduler (one, whichever worker holds
    its lock) wakes every second, and each worker adds a few commands every 15 s. Four idle workers
    measured 12.6 commands/s in all; before (a flusher looking every second, every worker doing
    RQ's upkeep every 5 s) 31.4."""
    stack: Stack = make_stack(EXPLICIT_ONLY, on=own_redis)  # no other test's clients counted
    stack.start_workers(4)
    idle = lambda: [w.get_state() for w in Worker.all(connection=stack.redis)] == ["idle"] * 4  # noqa: E731
    assert wait_until(idle, 30)
    # Settled: the scheduler elected (one holds its lock) and past its first look at the registries.
    assert wait_until(lambda: stack.redis.exists(RQScheduler.get_locking_key("postupload")), 30)
    time.sleep(1)

    def commands() -> int:
        return sum(int(entry["calls"]) for entry in stack.redis.info("commandstats").values())

    before, started = commands(), time.monotonic()
    time.sleep(16)  # a whole idle cycle of every worker (IDLE_WAIT)
    rate = (commands() - before) / (time.monotonic() - started)
    assert rate < 27, f"{rate:.1f} Redis commands/s for 4 idle workers"


STOP_UNDER_SIGNALS = """
import signal, sys, time
from postupload.processes import StopFlag
flag = StopFlag()
signal.signal(signal.SIGALRM, lambda signum, frame: flag.set())
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)  # a signal every half millisecond
end = time.monotonic() + 1
while time.monotonic() < end:
    flag.wait(0)
signal.setitimer(signal.ITIMER_REAL, 0)
woken = StopFlag()
signal.signal(signal.SIGALRM, lambda signum, frame: woken.set())
signal.setitimer(signal.ITIMER_REAL, 0.2)
started = time.monotonic()
print("done", woken.wait(20), round(time.monotonic() - started, 1))
"""


def test_a_stop_set_by_a_signal_handler_never_waits_for_a_lock() -> None:
    """A handler runs between two bytecodes of the main thread. With a threading.Event, a stop
    signal that came while the main thread was inside the Event's `wait` blocked for good on the
    lock that very `wait` held (this same loop never finishes with one: it hangs or dies), and a
    worker's scheduler, orphaned, stayed alive. StopFlag takes no lock; and a long wait wakes."""
    done = subprocess.run(
        [sys.executable, "-c", STOP_UNDER_SIGNALS], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.startswith("done True 0."), done.stdout + done.stderr

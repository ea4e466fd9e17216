"""The worker's departures from RQ (postupload/rq_adapter.py): what each override replaces is still in
the RQ and redis-py installed, with the parameters it relies on; and the behaviour each one is for."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest
import redis
import requests
from redis.client import PubSub
from rq import SimpleWorker
from rq import Worker as RqWorker
from rq.scheduler import RQScheduler
from rq.worker_registration import clean_worker_registry

from postupload.store.queue import notification_queue
from postupload.worker import rq_adapter
from tests.conftest import Stack, metric_samples, quick_timings, wait_until

# Each RQ method our Worker or Scheduler overrides, and the parameters RQ passes it (or our code
# calls it with). A new RQ that renames, drops or reshapes one fails here, not in production.
OVERRIDDEN = [
    (SimpleWorker, "heartbeat", ["timeout", "pipeline"]),
    (SimpleWorker, "get_heartbeat_ttl", ["job", "working_time"]),
    (SimpleWorker, "subscribe", []),
    (SimpleWorker, "run_maintenance_tasks", []),
    (SimpleWorker, "handle_exception", ["job"]),
    (SimpleWorker, "handle_job_success", ["job", "queue", "started_job_registry", "execution"]),
    (SimpleWorker, "request_stop", ["signum", "frame"]),
    (SimpleWorker, "_install_signal_handlers", []),
    (SimpleWorker, "_start_scheduler", ["burst", "logging_level", "date_format", "log_format"]),
    (SimpleWorker, "bootstrap", []),
    (SimpleWorker, "execute_job", ["job", "queue"]),
    (SimpleWorker, "dequeue_job_and_maintain_ttl", ["timeout", "max_idle_time"]),
    (SimpleWorker, "_shutdown", []),
    (SimpleWorker, "teardown", []),
    (RQScheduler, "enqueue_scheduled_jobs", []),
    (RQScheduler, "acquire_locks", ["auto_start"]),
    (RQScheduler, "start", []),
    (RQScheduler, "_install_signal_handlers", []),
    (RQScheduler, "work", []),
]
# What the overrides use of RQ besides: called, read or set.
USED = [
    (
        SimpleWorker,
        [
            "prepare_execution",
            "perform_job",
            "set_shutdown_requested_date",
            "stop_scheduler",
            "clean_registries",
            "clean_group_registries",
            "handle_payload",
            "_pubsub_exception_handler",
            "should_run_maintenance_tasks",
        ],
    ),
    (RQScheduler, ["get_locking_key", "register_birth", "register_death", "release_locks"]),
]


@pytest.mark.parametrize(("base", "name", "parameters"), OVERRIDDEN, ids=lambda v: getattr(v, "__name__", v))
def test_each_overridden_rq_method_is_still_there_as_it_was(
    base: type, name: str, parameters: list[str]
) -> None:
    original = getattr(base, name)
    assert callable(original), f"{base.__name__}.{name} is no longer a method"
    found = list(inspect.signature(original).parameters)
    assert [p for p in parameters if p not in found] == [], f"{base.__name__}.{name}{found}"
    ours = rq_adapter.Worker if issubclass(rq_adapter.Worker, base) else rq_adapter.Scheduler
    assert getattr(ours, name) is not original  # ours replaces it


def test_what_the_overrides_use_of_rq_is_still_there(redis_conn: redis.Redis) -> None:
    for base, names in USED:
        assert [name for name in names if not hasattr(base, name)] == []
    # The stop override reads and sets these instance attributes RQ's own code uses.
    worker = SimpleWorker([], connection=redis_conn)
    for attribute in ("_stop_requested", "scheduler", "last_heartbeat", "last_cleaned_at"):
        assert hasattr(worker, attribute), attribute
    run_in_thread = list(inspect.signature(PubSub.run_in_thread).parameters)
    assert {"sleep_time", "daemon", "exception_handler"} <= set(run_in_thread)


def test_no_beat_leaves_a_worker_key_shorter_than_its_wait_for_a_job(redis_conn: redis.Redis) -> None:
    """RQ's beat as a job starts asks for the job's HEARTBEAT_TTL (9 s), shorter than an idle worker's
    wait for a job (15 s): the key lapsed while the worker waited, and it left RQ's registry."""
    worker = rq_adapter.Worker([notification_queue(redis_conn)], connection=redis_conn)
    worker.register_birth()
    with redis_conn.pipeline() as pipe:
        worker.heartbeat(rq_adapter.HEARTBEAT_TTL, pipeline=pipe)  # as RQ's prepare_job_execution
        pipe.execute()
    worker.heartbeat()  # skipped as recent
    assert redis_conn.ttl(worker.key) > rq_adapter.IDLE_WAIT
    assert redis_conn.ttl(worker.key) <= rq_adapter.IDLE_WAIT + rq_adapter.ALIVE_MARGIN


SEEN = "rules:\n  - {name: seen, match: {resource_type: image}, actions: [{context: {set: {seen: 'yes'}}}]}\n"
# A job's own beat (HEARTBEAT_TTL) is far shorter than an idle worker's wait for a job (IDLE_WAIT): a
# worker key that took the job's lifetime lapsed during the wait. Here its key lives IDLE_WAIT +
# ALIVE_MARGIN = 4 s, twice the wait.
SHORT_TIMINGS = quick_timings(heartbeat_ttl=1, idle_wait=2)


def test_a_live_worker_is_counted_after_a_job_however_long_it_idles(make_stack: Any) -> None:
    stack: Stack = make_stack(SEEN)
    stack.workers.append(stack.processes.start("worker", prelude=SHORT_TIMINGS))
    assert wait_until(lambda: RqWorker.count(connection=stack.redis) == 1, 20)
    queue = notification_queue(stack.redis)
    stack.upload(public_id="alive/one")
    # One job, then idle across two lifetimes of its key (4 s), RQ's cleaning of dead workers run all
    # along (the scheduler runs it every second): a lapsed key was gone from the registry for good.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        clean_worker_registry(queue)
        assert RqWorker.count(connection=stack.redis) == 1, stack.processes.output()[-2000:]
        time.sleep(0.1)
    assert stack.assets()["alive/one"]["context"] == {"custom": {"seen": "yes"}}
    web = f"http://127.0.0.1:{stack.web.server_port}"
    assert requests.get(f"{web}/readyz", timeout=5).json()["workers"] == 1
    metrics = metric_samples(requests.get(f"{web}/metrics", timeout=5).text)
    assert metrics[("postupload_workers", frozenset())] == 1
    assert stack.workers[0].poll() is None
    # RQ's registry upkeep ran every second all along: at INFO it is not a line each time.
    output = stack.processes.output()
    assert "Listening on postupload" in output and "cleaning registries" not in output


def test_rqs_routine_lines_are_logged_at_debug() -> None:
    """Upkeep every few seconds, and four lines per job that the worker's own line replaces: DEBUG.
    What an operator acts on (a worker starting, stopping) stays INFO."""
    import logging

    from postupload.logs import RoutineAtDebug

    def record(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("rq.worker", logging.INFO, "", 0, message, args, None)

    routine = [
        record("Worker %s: cleaning registries", "w"),
        record("Worker %s: %s: %s (%s)", "w", "postupload", "Job OK", "j"),
        record("Worker %s: %s: %s (%s)", "w", "postupload", "notification upload", "j"),
        record("Worker %s: job %s result discarded immediately", "w", "j"),
        record("Successfully completed %s job in %ss on worker %s", "notification upload", 0.1, "w"),
    ]
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert not any(RoutineAtDebug().filter(line) for line in routine)
        assert {line.levelname for line in routine} == {"DEBUG"}
        root.setLevel(logging.DEBUG)
        assert all(RoutineAtDebug().filter(line) for line in routine)
    finally:
        root.setLevel(level)
    started = record("Worker %s: started with PID %d, version %s", "w", 1, "3.0.0")
    stopping = record("Worker %s: stopping on request", "w")
    assert RoutineAtDebug().filter(started) and RoutineAtDebug().filter(stopping)
    assert started.levelname == stopping.levelname == "INFO"


def test_a_retry_writes_the_jobs_status_in_its_transaction_only(redis_conn: redis.Redis) -> None:
    """A job's retry whose transaction Redis never ran (it went away just then) leaves the job as it
    was, "started", for the started registry's cleanup to take back as abandoned. RQ 3.0's own retry
    writes "scheduled" at once, apart: the cleanup then skipped the job as not abandoned, and it was
    in no schedule either (a notification the chaos test lost). When RQ's own stops doing so, the
    second half fails: store.queue.NotificationJob can go."""
    from rq import Retry
    from rq.job import Job, JobStatus

    queue = notification_queue(redis_conn, name="contract-retry")
    retries: tuple[Any, ...] = (queue.job_class.retry, Job.retry)  # ours, then RQ's
    for retry in retries:
        job = queue.enqueue_call("postupload.worker.process_notification", args=({},), retry=Retry(3, [5]))
        job.set_status(JobStatus.STARTED)
        with redis_conn.pipeline() as transaction:
            retry(job, queue, transaction)
            transaction.reset()  # never executed: Redis went away
        status = queue.job_class.fetch(
            job.id, connection=redis_conn, serializer=queue.serializer
        ).get_status()
        assert status == (JobStatus.STARTED if retry is queue.job_class.retry else JobStatus.SCHEDULED)


def test_a_job_stored_from_the_learnt_template_is_the_job_rq_itself_stores(
    redis_server: Any, redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake writes RQ's job from a template learnt from RQ (store/job_template.py): the same
    job, enqueued by RQ in another database, is field for field the same, timestamps aside."""
    from rq import Retry

    from postupload.core.envelope import Envelope
    from postupload.store import queue as queue_module
    from postupload.store.queue import JOB_FUNCTION, enqueue_notification

    retry = Retry(6, [2, 5, 9, 17, 40, 90])
    monkeypatch.setattr(queue_module, "retry_policy", lambda attempts: retry)
    envelope = Envelope(
        "a1b2", time.time(), "test-cloud", {"notification_type": "upload", "public_id": "é/x"}
    )
    assert queue_module._template(notification_queue(redis_conn), 6) is not None
    assert enqueue_notification(notification_queue(redis_conn), envelope, 6)
    theirs = redis.Redis.from_url(redis_server.url, db=1)
    theirs.flushdb()
    notification_queue(theirs).enqueue_call(
        JOB_FUNCTION,
        args=(envelope.to_job(),),
        job_id=envelope.id,
        timeout=600,
        result_ttl=0,
        failure_ttl=7 * 86400,
        description="notification upload",
        retry=retry,
    )

    def stored(connection: redis.Redis) -> dict[Any, Any]:
        job = connection.hgetall(b"rq:job:a1b2")
        return {k: v for k, v in job.items() if k not in (b"created_at", b"enqueued_at")}

    assert stored(redis_conn) == stored(theirs) and b"data" in stored(redis_conn)
    assert redis_conn.lrange("rq:queue:postupload", 0, -1) == theirs.lrange("rq:queue:postupload", 0, -1)
    assert redis_conn.smembers("rq:queues") == theirs.smembers("rq:queues")
    job = notification_queue(redis_conn).fetch_job("a1b2")
    assert job is not None and list(job.args) == [envelope.to_job()] and job.enqueued_at is not None


def test_when_rq_writes_what_cannot_be_learnt_rq_builds_every_job(redis_conn: redis.Redis) -> None:
    from postupload.store import job_template

    def record(queue: Any, job: job_template.Job) -> job_template.Writes:
        return [("HSET", f"rq:job:{job.id}", "nonce", str(time.time_ns()))]  # unexplained: differs

    assert job_template.learn(notification_queue(redis_conn), "f", 6, record) is None

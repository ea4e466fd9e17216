"""Fixtures: a real redis-server for the session, the emulator on a real port, signed requests."""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from werkzeug.serving import make_server

from postupload.config import Account, Settings
from postupload.core.signature import sign_notification
from postupload.emulator import Emulator, serve
from postupload.local.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
# Signature vectors and sample notification bodies, kept byte-exact in the repository (see data/README.md).
SAMPLES = ROOT / "tests" / "data"
ACCOUNT = Account("test-cloud", "111222333444555", "test-secret")


def _own_ports() -> Iterator[int]:
    """This pytest process's own ports: 200 per xdist worker from 10000 up, below the kernel's
    ephemeral ports (32768-60999 on Linux). A port the kernel chose (bind to 0) was free a moment
    ago, but any connection or bind(0) of another test could take it before our server bound it,
    and did: a web process failed with 'Address already in use'. Here nothing else in the session is
    handed the port; a second pytest session on the machine starts elsewhere in the range (chosen by
    its controller's process id) and at a random point of it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    session = (os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()) % 10
    first = 10000 + 2200 * session + 200 * (int(worker) % 11 if worker.isdigit() else 0)
    ports = list(range(first, first + 200))
    start = random.randrange(len(ports))
    return itertools.cycle(ports[start:] + ports[:start])


_ports = _own_ports()


def free_port() -> int:
    """A loopback port for a server a test starts, free now and handed to no one else."""
    for _ in range(200):
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # a server of an earlier test still holds it
        return port
    raise RuntimeError("no free port in this test process's range")


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), free_port()) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for this test alone: what it counts or stops touches nothing else of the session."""
    with RedisServer(tmp_path / "own-redis", free_port()) as server:
        yield server


@pytest.fixture(autouse=True)
def counts_stay_in_their_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Web apps made in this process add their last counts as the test ends, as a web process does
    as it exits (postupload.web.app.close). Left to their background flusher, they were added a second
    later to the next test's Redis (each test empties it first), and an exact total there was off."""
    from postupload.store.metrics import Counts

    recorders: list[Counts] = []
    start = Counts.flush_in_background

    def tracked(counts: Counts) -> Counts:
        recorders.append(counts)
        return start(counts)

    monkeypatch.setattr(Counts, "flush_in_background", tracked)
    yield
    for counts in recorders:
        counts.close()


@pytest.fixture
def redis_conn(redis_server: RedisServer) -> redis.Redis:
    connection = redis.Redis.from_url(redis_server.url)
    connection.flushall()
    return connection


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "10-sample.yaml").write_text(
        """
rules:
  - name: sample-thumbnails
    match: {resource_type: image, tags: [remove-background]}
    actions:
      - explicit:
          eager: ["c_scale,w_200", {crop: crop, gravity: north, height: 200, width: 360}]
"""
    )
    return directory


@pytest.fixture
def settings(redis_server: RedisServer, rules_dir: Path) -> Settings:
    return Settings(account=ACCOUNT, redis_url=redis_server.url, rules_dir=rules_dir, api_timeout=5)


def signed_headers(
    body: bytes, secret: str = ACCOUNT.api_secret, *, timestamp: int | None = None, algorithm: str = "sha1"
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "X-Cld-Timestamp": stamp,
        "X-Cld-Signature": sign_notification(body, stamp, secret, algorithm),
    }


class RunningEmulator:
    """An in-process emulator behind a real HTTP server on a free port."""

    def __init__(self, account: Account, notify_url: str | None = None, **options: Any) -> None:
        self.service = Emulator(account, notify_url, **options)
        self.server = serve(self.service, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.account = Account(account.cloud_name, account.api_key, account.api_secret, self.url)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = requests.get(f"{self.url}/emulator/calls", timeout=5).json()["calls"]
        return calls

    def sdk(self, **extra: Any) -> dict[str, Any]:
        """Per-call options for the official SDK: this emulator's account and a timeout."""
        return {**self.account.sdk_options(), "timeout": 5, **extra}


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    started: list[RunningEmulator] = []

    def make(notify_url: str | None = None, **options: Any) -> RunningEmulator:
        started.append(RunningEmulator(ACCOUNT, notify_url, **options))
        return started[-1]

    yield make
    for running in started:
        running.server.shutdown()


@pytest.fixture
def emulator(make_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return make_emulator()


class Receiver:
    """A notification endpoint on a real port that keeps every request and answers `statuses` in turn."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.targets: list[str] = []  # each request's path and query as sent (not decoded)
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/cloudinary"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        with self.lock:
            self.received.append((headers, body))
            self.targets.append(environ.get("REQUEST_URI") or environ.get("RAW_URI", ""))
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [b"{}"]

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


class Processes:
    """Our own commands as real processes, stopped (by pid) at the end of the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, prelude: str = "") -> subprocess.Popen[bytes]:
        """`postupload ARGS`; `prelude`, Python run first in the process (to inject short timings)."""
        log = open(self.logs / f"{args[0]}-{len(self.started)}.log", "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "postupload", *args]
        if prelude:
            command = [
                sys.executable,
                "-c",
                f"{prelude}\nfrom postupload.cli import main\nmain({list(args)!r})",
            ]
        process = subprocess.Popen(
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.started.append(process)
        return process

    def output(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.logs.iterdir())
        )

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Processes(dict(os.environ), logs)
    yield running
    running.stop()


def uploaded_in(connection: redis.Redis, cloud_name: str, public_id: str) -> None:
    """An asset's history as a worker leaves it after one upload notification of `cloud_name`
    (notification id n-CLOUD, asset_id id-PUBLIC_ID)."""
    from postupload.store import history

    entry = {
        "event": "notification",
        "notification": f"n-{cloud_name}",
        "notification_type": "upload",
        "cloud_name": cloud_name,
        "rules": [],
    }
    key, index = f"{cloud_name}:id-{public_id}", f"{cloud_name}:{public_id}"
    history.record(connection, key, index, entry, 1_700_000_000)


def quick_timings(
    heartbeat_ttl: int = 3,
    rescue_every: int = 1,
    idle_wait: int = 3,
    stuck_after: int = 3,
) -> str:
    """A worker's prelude that shortens its upkeep timings (worker.rq_adapter, store.queue, store.batches): a
    test of what follows a kill waits seconds for it, not the production half-minute. The chaos test
    keeps the production timings; test_rq_contract checks how they relate."""
    return (
        "import postupload.worker.rq_adapter as worker\n"
        "import postupload.store.queue as queue, postupload.store.batches as batches\n"
        f"worker.HEARTBEAT_TTL, worker.RESCUE_EVERY = {heartbeat_ttl}, {rescue_every}\n"
        f"worker.IDLE_WAIT, worker.ALIVE_MARGIN = {idle_wait}, {idle_wait}\n"
        f"queue.STUCK_AFTER, batches.IDLE = {stuck_after}, {idle_wait}"
    )


def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


__all__ = [
    "ACCOUNT",
    "ROOT",
    "Processes",
    "Receiver",
    "RunningEmulator",
    "free_port",
    "quick_timings",
    "signed_headers",
    "uploaded_in",
    "wait_until",
]


class Stack:
    """Everything as deployed: the emulator (Cloudinary), the web app on a real port, real worker
    processes, all on the test's Redis. Notifications start at the emulator, as they do at Cloudinary."""

    def __init__(
        self,
        processes: Processes,
        redis_server: RedisServer,
        rules_dir: Path,
        env: dict[str, str],
        **emulator_options: Any,
    ) -> None:
        from postupload.store.connection import connect
        from postupload.web.app import create_app

        self.processes = processes
        defaults = {
            "CLOUDINARY_URL": ACCOUNT.to_url(),
            "REDIS_URL": redis_server.url,
            "POSTUPLOAD_RULES_DIR": str(rules_dir),
            "POSTUPLOAD_API_TIMEOUT": "2",
        }
        processes.env.update({**defaults, **env})
        self.redis = connect(processes.env["REDIS_URL"])  # through sentinels, when env says so
        self.web = make_server("127.0.0.1", 0, create_app(Settings.from_env(processes.env)), threaded=True)
        threading.Thread(target=self.web.serve_forever, args=(0.05,), daemon=True).start()
        webhook = f"http://127.0.0.1:{self.web.server_port}/webhooks/cloudinary"
        emulator_options.setdefault("retry_delays", (0.5, 1.0, 2.0))
        self.emulator = RunningEmulator(ACCOUNT, webhook, **emulator_options)
        processes.env["CLOUDINARY_URL"] = self.emulator.account.to_url()
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web.server_port}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`postupload ARGS` against this stack, as ops would run it."""
        return subprocess.run(
            [sys.executable, "-m", "postupload", *args],
            env=self.processes.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_workers(self, count: int = 1, prelude: str = "") -> None:
        for _ in range(count):
            self.workers.append(self.processes.start("worker", prelude=prelude))

    def upload(self, **fields: Any) -> Any:
        answer = requests.post(f"{self.emulator.url}/emulator/upload", json=fields, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def assets(self) -> dict[str, dict[str, Any]]:
        answer = requests.get(f"{self.emulator.url}/emulator/state", timeout=10).json()
        return {asset["public_id"]: asset for asset in answer["assets"]}

    def calls(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        calls = self.emulator.calls()
        return [call for call in calls if endpoint is None or call["endpoint"] == endpoint]

    def idle(self) -> bool:
        """No job queued, running or scheduled, and no tag waiting in a batch."""
        from postupload.store.queue import quiet

        return quiet(self.redis)

    def failed(self) -> list[Any]:
        from postupload.store.queue import notification_queue

        queue = notification_queue(self.redis)
        return [queue.fetch_job(job_id) for job_id in queue.failed_job_registry.get_job_ids()]

    def finished(self, job_ids: list[str]) -> bool:
        """Each of these jobs finished: gone, as a finished job is deleted, and not among the failed."""
        from rq.job import Job

        from postupload.store.queue import notification_queue

        failed = set(notification_queue(self.redis).failed_job_registry.get_job_ids())
        return not failed & set(job_ids) and not any(Job.exists(i, connection=self.redis) for i in job_ids)

    def stop(self) -> None:
        self.emulator.server.shutdown()
        self.web.shutdown()


@pytest.fixture
def make_stack(
    processes: Processes, redis_server: RedisServer, redis_conn: redis.Redis, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(
        rules: str, env: dict[str, str] | None = None, on: RedisServer | None = None, **emulator_options: Any
    ) -> Stack:
        """A stack on the session's Redis, or `on` another."""
        directory = tmp_path / "stack-rules"
        directory.mkdir(exist_ok=True)
        (directory / "rules.yaml").write_text(rules)
        stacks.append(Stack(processes, on or redis_server, directory, env or {}, **emulator_options))
        return stacks[-1]

    yield make
    processes.stop()
    for stack in stacks:
        stack.stop()


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A /metrics page parsed with prometheus-client's own parser: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The value of the samples with these labels, summed over any others (0 when never counted)."""
    wanted = frozenset(labels.items())
    return sum(value for (found, have), value in samples.items() if found == name and wanted <= have)

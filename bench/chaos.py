"""Chaos: uploads through the whole deployment while it is faulted and its processes are killed.

Run with `make chaos` or `.venv/bin/python bench/chaos.py [--uploads 2000] [--seed 1]`.
The emulator answers with errors, lost answers (the effect is applied, the answer never comes) and
duplicated notifications, reproducibly from the seed. While the uploads arrive, a worker is
SIGKILLed, Redis is restarted (with `--failover`: Redis Sentinels fail the primary over to its
replica instead), and the web is SIGKILLed and started again (as a platform would).
The emulator redelivers every notification not answered 200, as Cloudinary does. Killed processes
are started again a second later, as a platform's process manager would.

Printed: uploads, faults injected by kind, lost assets (an effect missing), doubled effects (the same
endpoint, asset and parameters answered 200 again), of which explained and unexplained, workers left
dead, and the time from the last upload to quiet, then the first unexplained repeats. A repeat is
explained only by the very call it repeats, never by a time window: that call's answer was lost (the
emulator's timeout, an answer slower than the workers' timeout, an answer given while Redis was away,
or one on a connection the killed worker held). Everything runs on 127.0.0.1, bounded in uploads and
time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
from rq import Worker as RqWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from postupload.config import DEV_ACCOUNT, Account
from postupload.local.redis_server import RedisServer, free_port
from postupload.local.sentinels import Sentinels
from postupload.processes import die_with_parent
from postupload.store.connection import connect
from postupload.store.queue import notification_queue, quiet

ROOT = Path(__file__).resolve().parents[1]
RULES = """
rules:
  - name: everyday
    match: {resource_type: image, public_id: [{prefix: chaos/}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
      - tags: {add: [processed]}
      - context: {set: {state: done}}
      - metadata: {set: {stage: published}}
"""
API_TIMEOUT = 2.0  # the workers' POSTUPLOAD_API_TIMEOUT; a call answered slower lost its answer
HANG = 3  # seconds the emulator holds a call whose answer it loses


@dataclass
class Report:
    uploads: int
    faults: Counter[str]
    lost: dict[str, list[str]]  # asset -> the effects it lacks
    failed_jobs: int
    doubled: int
    explained: int
    dead_workers: int
    quiet_after: float
    events: list[str] = field(default_factory=list)
    unexplained_calls: list[str] = field(default_factory=list)

    @property
    def unexplained(self) -> int:
        return self.doubled - self.explained

    def lines(self) -> list[str]:
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items())) or "none"
        return [
            f"uploads {self.uploads}; faults injected: {faults}",
            f"disruptions: {'; '.join(self.events)}",
            f"lost assets: {len(self.lost)} {dict(list(self.lost.items())[:5]) if self.lost else ''}; "
            f"failed jobs: {self.failed_jobs}",
            f"doubled effects: {self.doubled} ({self.explained} explained by lost answers or calls "
            f"in flight, {self.unexplained} unexplained)",
            f"workers left dead: {self.dead_workers}; quiet {self.quiet_after:.1f} s after the last upload",
            *(f"unexplained: {call}" for call in self.unexplained_calls),
        ]


class Deployment:
    """Emulator, web and workers as processes on one Redis, each restartable by the chaos run."""

    def __init__(self, scratch: Path, seed: int, workers: int, error_rate: float, failover: bool) -> None:
        self.scratch = scratch
        self.sentinels = Sentinels(scratch / "sentinels").start() if failover else None
        self.redis = self.sentinels.primary if self.sentinels else RedisServer(scratch / "redis").start()
        self.redis_url = self.sentinels.url if self.sentinels else self.redis.url
        self.emulator_port, self.web_port = free_port(), free_port()
        self.emulator = f"http://127.0.0.1:{self.emulator_port}"
        rules = scratch / "rules"
        rules.mkdir()
        (rules / "chaos.yaml").write_text(RULES)
        account = Account(DEV_ACCOUNT.cloud_name, DEV_ACCOUNT.api_key, DEV_ACCOUNT.api_secret, self.emulator)
        self.env = {
            **os.environ,
            "CLOUDINARY_URL": account.to_url(),
            "REDIS_URL": self.redis_url,
            "POSTUPLOAD_REDIS_REPLICAS": "1" if failover else "0",
            "POSTUPLOAD_RULES_DIR": str(rules),
            "POSTUPLOAD_API_TIMEOUT": str(API_TIMEOUT),
            "POSTUPLOAD_ASSET_ACTION_CAP": "0",
        }
        faults = [
            "--error-rate",
            str(error_rate),
            "--timeout-rate",
            "0.01",
            "--hang",
            str(HANG),
            "--duplicate-rate",
            "0.1",
        ]
        webhook = f"http://127.0.0.1:{self.web_port}/webhooks/cloudinary"
        self.emulator_process = self._start(
            "emulator",
            "--port",
            str(self.emulator_port),
            "--notify-url",
            webhook,
            "--latency",
            "0.02",
            "--seed",
            str(seed),
            "--retry-delays",
            "1,2,4,8,16,30",
            *faults,
        )
        self.web = self._start("web", "--port", str(self.web_port))
        self.workers = [self._start("worker") for _ in range(workers)]
        self._wait(f"{self.emulator}/emulator/state")
        self._wait(f"http://127.0.0.1:{self.web_port}/healthz")

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.scratch / f"{args[0]}-{time.monotonic_ns()}.log").open("wb")
        command = [sys.executable, "-m", "postupload", *args]
        return subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )

    def _wait(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(url, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer within 30 s")

    def connection(self) -> redis.Redis:
        return connect(self.redis_url)

    def stop(self) -> None:
        for process in [*self.workers, self.web, self.emulator_process]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.web, self.emulator_process]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.sentinels:
            self.sentinels.stop()
        else:
            self.redis.stop()


def idle(connection: redis.Redis) -> bool:
    try:
        return quiet(connection)
    except redis.RedisError:
        return False


def missing(asset: dict[str, Any] | None) -> list[str]:
    """The effects the rules ask for that an asset lacks (all of them if it is not there)."""
    if asset is None:
        return ["the asset"]
    wanted = {
        "explicit": asset["derived"] == ["c_scale,w_300"],
        "tags": "processed" in asset["tags"],
        "context": asset["context"] == {"custom": {"state": "done"}},
        "metadata": asset["metadata"] == {"stage": "published"},
    }
    return [effect for effect, there in wanted.items() if not there]


def run(
    uploads: int,
    seed: int,
    *,
    workers: int = 2,
    error_rate: float = 0.05,
    quiet_within: float = 900,
    logs: Path | None = None,
    failover: bool = False,
) -> Report:
    """The whole chaos run; returns what it found. The processes' logs go to `logs` when given."""
    with tempfile.TemporaryDirectory() as temporary:
        scratch = logs or Path(temporary)
        deployment = Deployment(scratch, seed, workers, error_rate, failover)
        events: list[str] = []
        lapses: list[Lapse] = []
        try:
            names = [f"chaos/{number}" for number in range(uploads)]
            session = requests.Session()

            def upload(name: str) -> None:
                session.post(f"{deployment.emulator}/emulator/upload", json={"public_id": name}, timeout=30)

            def upload_all() -> None:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(upload, names))

            uploading = threading.Thread(target=upload_all)
            uploading.start()
            # From this thread: a child dies with the thread that started it (PR_SET_PDEATHSIG).
            _disrupt(deployment, uploads, events, lapses)
            uploading.join()
            last_upload = time.monotonic()
            connection = deployment.connection()
            deadline = time.monotonic() + quiet_within
            assets: dict[str, Any] = {}
            while time.monotonic() < deadline:
                state = requests.get(f"{deployment.emulator}/emulator/state", timeout=60).json()
                assets = {asset["public_id"]: asset for asset in state["assets"]}
                if not any(missing(assets.get(name)) for name in names) and idle(connection):
                    break
                time.sleep(1)
            quiet_after = time.monotonic() - last_upload
            calls = requests.get(f"{deployment.emulator}/emulator/calls", timeout=120).json()["calls"]
            if logs:
                (logs / "calls.json").write_text(json.dumps(calls))
            lost = {name: gaps for name in names if (gaps := missing(assets.get(name)))}
            failed_jobs = notification_queue(connection).failed_job_registry.count
            doubled, explained, unexplained = _doubles(calls, lapses)
            dead = sum(worker.poll() is not None for worker in deployment.workers)
            faults = Counter(call["fault"] for call in calls if call.get("fault"))
            sent = requests.get(f"{deployment.emulator}/emulator/notifications", timeout=60).json()
            faults["duplicated notification"] = sum(entry["copies"] == 2 for entry in sent["notifications"])
            return Report(
                uploads, faults, lost, failed_jobs, doubled, explained, dead, quiet_after, events, unexplained
            )
        finally:
            deployment.stop()


def _disrupt(deployment: Deployment, uploads: int, events: list[str], lapses: list[Lapse]) -> None:
    """Kill a worker, restart Redis, kill and restart the web, spread over the uploads."""
    connection = deployment.connection()

    def uploaded_at_least(share: float) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if connection.dbsize() and _notifications_seen(connection) >= uploads * share:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)

    uploaded_at_least(0.2)
    victim = deployment.workers[0]
    killed = time.time()  # from now on it does nothing more
    victim.send_signal(signal.SIGSTOP)  # frozen: it opens no connection between the look and the kill
    ports = _ports_to(victim.pid, deployment.emulator_port)
    in_hand = _assets_in_hand(connection, victim.pid)
    victim.kill()  # SIGKILL: its job in hand is run again by another
    # Calls it sent are still answered after its death, to no one: within the emulator's longest
    # hang. (Not later: a later call on one of these ports is another process's, the port reused.)
    lapses.append(Lapse("worker killed", killed, killed + HANG + 1, ports, in_hand))
    time.sleep(1)
    deployment.workers[0] = deployment._start("worker")  # as a platform restarts a crashed process
    events.append(
        f"worker SIGKILLed at {killed:.3f} (calls in flight on ports {sorted(ports)}, jobs for"
        f" {sorted(in_hand)} in hand) and started again"
    )
    uploaded_at_least(0.45)
    began = time.time()
    if deployment.sentinels:
        first = deployment.sentinels.primary_port()
        deployment.sentinels.fail_over()
        while deployment.sentinels.primary_port() == first or not _writable(connection):
            time.sleep(0.05)
        lapses.append(Lapse("Redis failing over", began, time.time()))
        events.append(f"Redis failed over to its replica ({began:.3f} to {time.time():.3f})")
    else:
        deployment.redis.stop()
        time.sleep(2)
        deployment.redis.start(timeout=60)
        lapses.append(Lapse("Redis away", began, time.time()))
        events.append(f"Redis restarted ({began:.3f} to {time.time():.3f})")
    uploaded_at_least(0.7)
    began = time.time()
    deployment.web.kill()
    deployment.web.wait()
    time.sleep(1)
    deployment.web = deployment._start("web", "--port", str(deployment.web_port))
    deployment._wait(f"http://127.0.0.1:{deployment.web_port}/healthz")
    events.append(f"web SIGKILLed and started again ({time.time() - began:.1f} s away)")


def _writable(connection: redis.Redis) -> bool:
    try:
        return bool(connection.set("chaos:probe", 1))
    except redis.RedisError:
        return False


def _notifications_seen(connection: redis.Redis) -> int:
    return sum(1 for _ in connection.scan_iter("postupload:dedupe:*", count=1000))


# The form fields that sign a call, not part of what it does.
SIGNING = frozenset({"signature", "signature_algorithm", "timestamp", "api_key"})
# From Cloudinary's answer to its done mark in Redis: a local round trip, but a thread of a worker
# with many may wait its turn that long on a loaded 2-core machine (0.5 s was seen to be too short).
RECORD_MARGIN = 1.0


@dataclass(frozen=True)
class Lapse:
    """When answers could arrive and not be recorded: while Redis was away (any caller's), or when a
    worker was killed: any answer on a connection it held then (by local port) or for a job it held,
    and any answer within RECORD_MARGIN before the kill (its done mark not yet sent)."""

    what: str
    began: float  # unix times
    ended: float
    ports: frozenset[int] | None = None  # the killed worker's connections; None: Redis away
    assets: frozenset[str] = frozenset()  # public_ids of the jobs it had in hand

    def lost(self, call: dict[str, Any], answered: float) -> bool:
        held = (
            self.ports is None
            or call.get("client_port") in self.ports
            or bool(set(_public_ids(call)) & self.assets)  # for a job it held: its thread may have sent it
        )
        return self.began - RECORD_MARGIN <= answered <= (self.ended if held else self.began)


def _assets_in_hand(connection: redis.Redis, pid: int) -> frozenset[str]:
    """The public_ids of the jobs a worker process runs, as RQ's registry has them."""
    found: set[str] = set()
    for worker in RqWorker.all(connection=connection):
        if worker.pid == pid:
            for execution in worker.get_current_executions():
                job = Job.fetch(execution.job_id, connection=connection, serializer=JSONSerializer)
                public_id = job.args[0]["notification"].get("public_id")
                if isinstance(public_id, str):  # not a notification of several assets (tags changed)
                    found.add(public_id)
    return frozenset(found)


def _public_ids(call: dict[str, Any]) -> list[str]:
    params = call["params"]
    return [params["public_id"]] if "public_id" in params else list(params.get("public_ids") or [])


def _ports_to(pid: int, port: int) -> frozenset[int]:
    """The local ports of a process's TCP connections to `port` on this machine."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return frozenset(c.laddr.port for c in connections if c.raddr and c.raddr.port == port)


def _effects(call: dict[str, Any]) -> list[tuple[str, ...]]:
    """What a call does, once per asset it names: endpoint, public_id and every other parameter."""
    params = {name: value for name, value in call["params"].items() if name not in SIGNING}
    ids = [params.pop("public_id")] if call["endpoint"] == "explicit" else params.pop("public_ids")
    rest = json.dumps(params, sort_keys=True)
    return [(call["endpoint"], public_id, rest) for public_id in ids]


def _answer_lost(call: dict[str, Any], lapses: list[Lapse]) -> bool:
    """The call took effect but its caller could not know or record it: the answer came too late
    (the emulator's hang, or slower than the workers' timeout), or the call was in flight when a
    worker was killed or Redis went away."""
    if call.get("fault") == "timeout" or "answered" not in call:
        return True
    answered = call["answered"]
    if answered - call["time"] >= API_TIMEOUT * 0.9:
        return True
    return any(lapse.lost(call, answered) for lapse in lapses)


def _doubles(calls: list[dict[str, Any]], lapses: list[Lapse]) -> tuple[int, int, list[str]]:
    """Effects made again, per call: the same endpoint, asset and parameters answered 200 more than
    once. A repeat is explained only by the call it repeats: that very earlier call lost its answer.
    Returns the repeats, how many are explained, and a line for each of the first unexplained."""
    last_lost: dict[tuple[str, ...], bool] = {}  # effect -> did its latest call lose its answer
    last_call: dict[tuple[str, ...], dict[str, Any]] = {}
    doubled = explained = 0
    unexplained: list[str] = []
    for call in sorted(calls, key=lambda call: call["time"]):
        if call["endpoint"] not in ("explicit", "tags", "context", "metadata") or call["status"] != 200:
            continue
        lost = _answer_lost(call, lapses)
        for effect in _effects(call):
            if effect in last_lost:
                doubled += 1
                if last_lost[effect]:
                    explained += 1
                elif len(unexplained) < 10:
                    first = last_call[effect]
                    unexplained.append(
                        f"{effect[0]} {effect[1]} {effect[2]}: answered at {first['answered']:.3f}"
                        f" (call {first['seq']}, port {first.get('client_port')}), made again at"
                        f" {call['time']:.3f} (call {call['seq']})"
                    )
            last_lost[effect] = lost
            last_call[effect] = call
    return doubled, explained, unexplained


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--seeds", default="1,2,3", help="one run per seed")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs (and Redis) in this directory")
    parser.add_argument(
        "--failover",
        action="store_true",
        help="Redis behind three sentinels: fail it over instead of a restart",
    )
    options = parser.parse_args()
    for seed in options.seeds.split(","):
        logs = options.logs / f"seed-{seed}" if options.logs else None
        if logs:
            logs.mkdir(parents=True, exist_ok=True)
        report = run(options.uploads, int(seed), logs=logs, failover=options.failover)
        print(f"seed {seed}:")
        for line in report.lines():
            print(f"  {line}", flush=True)


if __name__ == "__main__":
    main()

"""Redis that fails over: a real primary, a replica and three Redis Sentinels (the redis-server the
project installs, in sentinel mode). The web, workers, scheduler and CLI follow the sentinels to the
new primary, and a notification answered 200 is on a replica too, so a failover cannot lose it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from postupload import processes as process_control
from postupload.config import Settings
from postupload.local.redis_server import RedisServer, redis_server_binary
from postupload.processes import die_with_parent
from postupload.store.connection import connect
from postupload.store.queue import notification_queue
from postupload.web.app import create_app
from tests.conftest import ACCOUNT, Processes, Stack, free_port, quick_timings, signed_headers, wait_until
from tests.test_actions import _faults

SERVICE = "postupload"


# As docs/deployment.md asks of a Redis that fails over: a primary that has lost its replica (to a
# failover the sentinels have not finished) takes no writes, so none is made where it will be lost.
SAFE_PRIMARY = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")


class Sentinels:
    """A primary, its replica, and three sentinels that fail over after 1 s without the primary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.primary = RedisServer(directory / "a", free_port(), SAFE_PRIMARY)
        replica_of = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica = RedisServer(directory / "b", free_port(), (*SAFE_PRIMARY, *replica_of))
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + f"/{SERVICE}"

    def start(self) -> Sentinels:
        self.primary.start()
        self.replica.start()
        for number, port in enumerate(self.ports):
            home = self.directory / f"sentinel-{number}"
            home.mkdir()
            config = home / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [redis_server_binary(), str(config), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            )
        assert wait_until(self.ready, 30), "the sentinels did not see the replica and each other"
        return self

    def ready(self) -> bool:
        try:
            for port in self.ports:
                state: Any = redis.Redis(port=port, decode_responses=True).sentinel_master(SERVICE)
                if int(state["num-slaves"]) != 1 or int(state["num-other-sentinels"]) != 2:
                    return False
            replication = redis.Redis(port=self.primary.port).info("replication")
            return bool(replication.get("slave0", {}).get("state") == "online")
        except redis.RedisError:
            return False

    def primary_port(self) -> int:
        address: Any = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def fail_over(self) -> None:
        """The sentinels promote the replica (as when the primary's host is retired): the old
        primary goes on running, and becomes the new one's replica."""
        redis.Redis(port=self.ports[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            process_control.stop(sentinel, 5)
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    cluster = Sentinels(tmp_path / "sentinels").start()
    yield cluster
    cluster.stop()


UPLOAD = json.dumps(
    {
        "notification_type": "upload",
        "public_id": "failover/one",
        "resource_type": "image",
        "type": "upload",
        "asset_id": "0123456789abcdef0123456789abcdef",
        "version": 1,
    }
).encode()


def test_a_notification_is_answered_200_only_once_a_replica_has_it(tmp_path: Path) -> None:
    """POSTUPLOAD_REDIS_REPLICAS=1: the notification's writes and a WAIT for a replica go in one
    round trip. With the replica away, the answer is 503 and the dedupe mark is taken back, so
    Cloudinary's retry stores it once the replica is back (not a "duplicate" of a write a failover
    would lose)."""
    primary = RedisServer(tmp_path / "a", free_port()).start()
    replica = RedisServer(tmp_path / "b", free_port(), ("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        replica.start()
        on_primary, on_replica = redis.Redis(port=primary.port), redis.Redis(port=replica.port)
        assert wait_until(lambda: on_primary.info("replication").get("connected_slaves") == 1, 15)
        settings = Settings(account=ACCOUNT, redis_url=primary.url, redis_replicas=1, rules_dir=tmp_path)
        client = create_app(settings, connect(primary.url)).test_client()

        def post(body: bytes) -> Any:
            return client.post("/webhooks/cloudinary", data=body, headers=signed_headers(body))

        assert post(UPLOAD).status_code == 200
        assert notification_queue(on_replica).count == 1  # on the replica when answered

        replica.stop()
        second = UPLOAD.replace(b"failover/one", b"failover/two")
        started = time.monotonic()
        answer = post(second)
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json()["error"]["code"] == "store_unavailable"
        assert time.monotonic() - started < 10  # the WAIT gives up (2 s), it does not hang

        replica.start()
        assert wait_until(lambda: on_primary.info("replication").get("connected_slaves") == 1, 15)
        assert post(second).status_code == 200  # stored now: the failed attempt left no mark
        assert post(second).status_code == 200  # and a retry after that is a duplicate
        # Both on the replica. (The refused attempt's job may be queued twice: the job runs once
        # more and finds its effects done, as any redelivery does.)
        assert wait_until(lambda: len(set(notification_queue(on_replica).job_ids)) == 2, 10)
    finally:
        replica.stop()
        primary.stop()


def writable(connection: redis.Redis) -> bool:
    try:
        return bool(connection.set("failover-test:probe", 1))
    except redis.RedisError:
        return False


RULES = """rules:
  - name: seen
    match: {resource_type: image}
    actions:
      - context: {set: {seen: "yes"}}
"""


def test_a_failover_while_notifications_arrive_and_jobs_run_loses_and_doubles_nothing(
    sentinels: Sentinels, processes: Processes, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    # 20% of API calls fail (retried through RQ's scheduler, which must carry on too); each takes 0.1 s
    env = {"REDIS_URL": sentinels.url, "POSTUPLOAD_REDIS_REPLICAS": "1", "POSTUPLOAD_RETRIES": "8"}
    faults = _faults(latency=0.1, error_rate=0.2, seed=7)
    stack = Stack(processes, sentinels.primary, rules, env, faults=faults, retry_delays=(1, 2, 4, 8, 16))
    try:
        stack.start_workers(2, prelude=quick_timings())
        names = [f"failover/{number}" for number in range(40)]

        def upload_all() -> None:
            for name in names:
                stack.upload(public_id=name)
                time.sleep(0.1)

        uploads = threading.Thread(target=upload_all)
        uploads.start()
        first = sentinels.primary_port()
        time.sleep(1.5)  # notifications queued and jobs running on the first primary
        switch_started = time.time()
        sentinels.fail_over()
        assert wait_until(lambda: sentinels.primary_port() != first, 30)
        assert wait_until(lambda: writable(stack.redis), 60)  # the new primary has its replica
        writable_again = time.time()
        uploads.join(30)

        def done() -> bool:
            assets = stack.assets()
            return all(assets.get(n, {}).get("context") == {"custom": {"seen": "yes"}} for n in names)

        assert wait_until(done, 90), processes.output()[-4000:]
        assert sentinels.primary_port() == sentinels.replica.port
        notifications = requests.get(f"{stack.emulator.url}/emulator/notifications", timeout=10).json()
        answers = Counter(status for sent in notifications["notifications"] for status in sent["deliveries"])
        assert set(answers) <= {200, 503}, answers  # never a 500 or a dropped connection
        assert all(sent["deliveries"][-1] == 200 for sent in notifications["notifications"])
        # No effect doubled beyond a lost answer: an asset's context is set again only when the call
        # that set it first was answered while Redis took no writes (its outcome could not be kept).
        first_answered: dict[str, float] = {}
        doubled = explained = 0
        for call in sorted(stack.calls("context"), key=lambda call: call["time"]):
            for public_id in call["params"].get("public_ids") or [] if call["status"] == 200 else []:
                if public_id in first_answered:
                    doubled += 1
                    explained += switch_started <= first_answered[public_id] <= writable_again
                first_answered.setdefault(public_id, call.get("answered", call["time"]))
        assert doubled == explained, (doubled, explained, switch_started, writable_again)
        assert all(worker.poll() is None for worker in stack.workers)  # the same processes, working
        print(f"deliveries: {dict(answers)}; effects made again after a lost answer: {doubled}")
    finally:
        processes.stop()
        stack.stop()

"""Redis that fails over: a real primary, a replica and three Redis Sentinels (the redis-server the
project installs, in sentinel mode). The web, workers, scheduler and CLI follow the sentinels to the
new primary, and a notification answered 200 is on a replica too, so a failover cannot lose it."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from postupload.config import Settings
from postupload.local.redis_server import RedisServer
from postupload.local.sentinels import Sentinels
from postupload.store.connection import connect
from postupload.store.queue import notification_queue
from postupload.web.app import create_app
from tests.conftest import ACCOUNT, Processes, Stack, free_port, quick_timings, signed_headers, wait_until
from tests.test_actions import _faults


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    cluster = Sentinels(tmp_path / "sentinels", free_port).start()
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


# Bounded, but past the suite's 120 s: alone it takes 28-80 s (the switch holds writes 10-12 s, and
# Cloudinary-like redeliveries wait up to 16 s), and under the full suite's load longer.
@pytest.mark.timeout(300)
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

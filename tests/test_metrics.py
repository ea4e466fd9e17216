"""Metrics as deployed: two gunicorn workers and two worker processes add to one set of totals."""

from __future__ import annotations

import itertools
import json
import signal
from pathlib import Path
from typing import Any

import requests

from postupload.config import Account
from postupload.local.redis_server import RedisServer
from postupload.store import keys
from postupload.store.measures import families
from tests.conftest import ACCOUNT, Processes, free_port, metric_samples, sample, signed_headers, wait_until

RULES = """
rules:
  - name: every-upload
    match: {resource_type: [image]}
    actions:
      - explicit: {eager: ["c_scale,w_100"]}
      - tags: {add: [seen]}
  - name: banners
    match: {public_id: [{prefix: "banners/"}]}
    actions:
      - context: {set: {kind: banner}}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    return rules


def test_totals_across_two_web_and_two_worker_processes_equal_what_happened(
    processes: Processes, redis_server: RedisServer, redis_conn: Any, tmp_path: Path
) -> None:
    rules = rules_dir(tmp_path)
    emulator_port, web_port = free_port(), free_port()
    emulator_url, web_url = f"http://127.0.0.1:{emulator_port}", f"http://127.0.0.1:{web_port}"
    account = Account(ACCOUNT.cloud_name, ACCOUNT.api_key, ACCOUNT.api_secret, emulator_url)
    processes.env.update(
        CLOUDINARY_URL=account.to_url(), REDIS_URL=redis_server.url, POSTUPLOAD_RULES_DIR=str(rules)
    )
    webhook = f"{web_url}/webhooks/cloudinary"
    processes.start("emulator", "--port", str(emulator_port), "--notify-url", webhook)
    processes.start("web", "--port", str(web_port), "--workers", "2")
    processes.start("worker")
    processes.start("worker")
    assert wait_until(lambda: _ready(web_url, workers=2), 30), processes.output()

    scrapes: list[Samples] = []

    def scrape() -> Samples:
        answer = requests.get(f"{web_url}/metrics", timeout=5)
        assert answer.status_code == 200
        scrapes.append(metric_samples(answer.text))
        return scrapes[-1]

    uploads = ["products/1", "products/2", "products/3", "products/4", "banners/1", "banners/2"]
    for public_id in uploads:
        requests.post(f"{emulator_url}/emulator/upload", json={"public_id": public_id}, timeout=10)
        scrape()
    ghost = _body({"notification_type": "upload", "public_id": "ghost", "resource_type": "image"})
    assert requests.post(webhook, data=ghost, headers=signed_headers(ghost), timeout=5).ok  # 404 there
    assert requests.post(webhook, data=ghost, headers=signed_headers(ghost), timeout=5).ok  # duplicate
    for _ in range(3):
        answer = requests.post(webhook, data=ghost, headers=signed_headers(ghost, "wrong"), timeout=5)
        assert answer.status_code == 401
        scrape()

    def settled() -> bool:
        now = scrape()
        queued = sum(v for (name, labels), v in now.items() if ("answer", "queued") in labels)
        worked = sum(sample(now, "postupload_jobs_total", outcome=end) for end in ("finished", "failed"))
        tag_calls = sample(now, "postupload_cloudinary_call_seconds_count", endpoint="tags/add", status="200")
        told = sample(now, "postupload_notifications_total", type="resource_tags_changed", answer="queued")
        progress.update(
            queued=queued,
            worked=worked,
            failed=sample(now, "postupload_jobs_total", outcome="failed"),
            batches_waiting=sample(now, "postupload_tag_batches_waiting"),
            batched_adds=sample(now, "postupload_tag_batch_size_sum", command="add"),
            tag_calls=tag_calls,
            told=told,
        )
        return (
            worked == queued
            and progress["failed"] == 1
            and progress["batches_waiting"] == 0
            and progress["batched_adds"] == 7
            and tag_calls == told >= 1  # Cloudinary tells of each tag call it answered
        )

    progress: dict[str, float] = {}
    assert wait_until(settled, 30, interval=0.3), (progress, processes.output())
    final = scrape()

    def value(name: str, **labels: str) -> float:
        return sample(final, name, **labels)

    assert value("postupload_notifications_total", type="upload", answer="queued") == 7
    assert value("postupload_notifications_total", type="upload", answer="duplicate") == 1
    assert value("postupload_notifications_total", type="resource_context_changed", answer="queued") == 2
    assert value("postupload_notifications_total", type="unknown", answer="bad_signature") == 3
    assert value("postupload_rule_matches_total", rule="every-upload") == 7
    assert value("postupload_rule_matches_total", rule="banners") == 2
    actions = "postupload_actions_total"
    assert value(actions, kind="explicit", rule="every-upload", outcome="ok") == 6
    assert value(actions, kind="explicit", rule="every-upload", outcome="failed") == 1
    assert value(actions, kind="tags", rule="every-upload", outcome="batched") == 7
    assert value(actions, kind="context", rule="banners", outcome="ok") == 2
    calls = "postupload_cloudinary_call_seconds_count"
    assert value(calls, endpoint="explicit", status="200") == 6
    assert value(calls, endpoint="explicit", status="404") == 1
    assert value(calls, endpoint="context", status="200") == 2
    assert value(calls, endpoint="tags/add", status="200") >= 1
    assert value("postupload_retries_total", reason="404") == 0  # a 404 is not retried
    assert value("postupload_job_registry", state="failed") == 1
    assert value("postupload_queue_jobs", queue="postupload") == 0
    assert value("postupload_workers") == 2
    assert value("postupload_rules_valid") == 1
    (version,) = [dict(labels)["version"] for name, labels in final if name == "postupload_rules"]
    assert value("postupload_rules", version=version) == 2

    # Whichever gunicorn worker answered, no counter ever went backwards between two scrapes.
    for before, after in itertools.pairwise(scrapes):
        for key, earlier in before.items():
            if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                assert after.get(key, 0.0) >= earlier, (key, earlier, after.get(key))


def test_an_invalid_rule_edit_is_counted_once_and_shown_as_kept_out(
    processes: Processes, redis_server: RedisServer, redis_conn: Any, tmp_path: Path
) -> None:
    rules = rules_dir(tmp_path)
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    processes.env.update(
        CLOUDINARY_URL=ACCOUNT.to_url(), REDIS_URL=redis_server.url, POSTUPLOAD_RULES_DIR=str(rules)
    )
    processes.start("web", "--port", str(web_port), "--workers", "2")
    processes.start("worker")
    assert wait_until(lambda: _ready(web_url, workers=1), 30), processes.output()

    (rules / "rules.yaml").write_text(RULES.replace("context:", "contxt:"))

    def kept_out() -> Samples | None:
        now = metric_samples(requests.get(f"{web_url}/metrics", timeout=5).text)
        return now if sample(now, "postupload_rules_valid") == 0 else None

    now = wait_until(kept_out, 10, interval=0.2)
    assert now, processes.output()
    wait_until(lambda: "rule set in" in processes.output() and processes.output().count("invalid") >= 2, 5)
    # Three processes (two web, one worker) met the same bad content: one edit, counted once.
    after = metric_samples(requests.get(f"{web_url}/metrics", timeout=5).text)
    assert sample(after, "postupload_rule_load_errors_total") == 1
    assert [labels for name, labels in after if name == "postupload_rules"], (
        after,
        processes.output()[-4000:],
    )  # the last good set runs


def _ready(web_url: str, workers: int) -> bool:
    try:
        answer = requests.get(f"{web_url}/readyz", timeout=1)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and answer.json().get("workers") == workers


def _body(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def test_a_worker_adds_its_counts_at_most_once_a_second(redis_conn: Any) -> None:
    from postupload.store import keys
    from postupload.store.measures import field
    from postupload.store.metrics import Counts

    now = [100.0]
    counts = Counts(redis_conn, every=1.0, monotonic=lambda: now[0])
    finished = field("postupload_jobs", {"outcome": "finished"})

    def stored() -> int:
        return int(redis_conn.hget(keys.METRICS, finished) or 0)

    counts.count("postupload_jobs", outcome="finished")
    counts.flush_soon()
    assert stored() == 1  # the first flush goes at once
    for moment in (100.3, 100.9):
        now[0] = moment
        counts.count("postupload_jobs", outcome="finished")
        counts.flush_soon()
    assert stored() == 1  # within the second: kept in the process
    now[0] = 101.0
    counts.flush_soon()
    assert stored() == 3


def test_counts_made_while_redis_is_away_are_added_once_when_it_answers(redis_conn: Any) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from postupload.store import keys
    from postupload.store.measures import field
    from postupload.store.metrics import Counts

    away = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    counts = Counts(away)
    counts.observe("postupload_cloudinary_call_seconds", 0.2, endpoint="explicit", status="200", cloud="c")
    counts.count("postupload_retries", reason="503")
    assert counts.flush() is False
    counts.count("postupload_retries", reason="503")
    counts.connection = redis_conn
    assert counts.flush() is True
    assert counts.flush() is True  # nothing left: nothing added twice
    assert redis_conn.hget(keys.METRICS, field("postupload_retries", {"reason": "503"})) == b"2"
    calls = {"endpoint": "explicit", "status": "200", "cloud": "c"}
    assert redis_conn.hget(keys.METRICS, field("postupload_cloudinary_call_seconds", calls, "4")) == b"1"
    assert (
        float(redis_conn.hget(keys.METRICS, field("postupload_cloudinary_call_seconds", calls, "sum"))) == 0.2
    )


def test_a_web_process_that_stops_adds_its_last_counts_first(
    processes: Processes, redis_server: RedisServer, redis_conn: Any, tmp_path: Path
) -> None:
    """A web process adds its counts at most once a second; stopped within that second (gunicorn's
    quick stop), it adds what it has as it exits (worker_exit) instead of losing them."""
    port = free_port()
    processes.env.update(
        CLOUDINARY_URL=ACCOUNT.to_url(),
        REDIS_URL=redis_server.url,
        POSTUPLOAD_RULES_DIR=str(rules_dir(tmp_path)),
    )
    web = processes.start("web", "--port", str(port), "--workers", "1")
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _answers(f"{url}/healthz"), 30), processes.output()
    forged = _body({"notification_type": "upload", "public_id": "x"})
    for _ in range(5):  # the first is added at once, the rest wait for the next second's flush
        answer = requests.post(
            f"{url}/webhooks/cloudinary", data=forged, headers=signed_headers(forged, "wrong")
        )
        assert answer.status_code == 401
    web.send_signal(signal.SIGINT)  # gunicorn's quick stop: no second goes by
    web.wait(30)
    stored = {
        (found.name, frozenset(found.labels.items())): found.value
        for family in families(redis_conn.hgetall(keys.METRICS))
        for found in family.samples
    }
    assert sample(stored, "postupload_notifications_total", type="unknown", answer="bad_signature") == 5


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False

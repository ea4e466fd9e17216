"""The webhook endpoint against a real Redis: verify, dedupe, enqueue, and the documented answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from postupload.config import Account, Settings
from postupload.local.redis_server import RedisServer
from postupload.store.queue import notification_queue
from postupload.web.app import create_app
from tests.conftest import ACCOUNT, free_port, metric_samples, sample, signed_headers

UPLOAD = json.dumps(
    {
        "notification_type": "upload",
        "public_id": "products/shoe",
        "resource_type": "image",
        "type": "upload",
        "version": 1,
        "tags": ["product"],
    },
    separators=(",", ":"),
).encode()


@pytest.fixture
def client(settings: Settings, redis_conn: redis.Redis) -> FlaskClient:
    return create_app(settings, redis_conn).test_client()


def queued_jobs(connection: redis.Redis) -> int:
    return notification_queue(connection).count


def test_signed_notification_is_queued_with_json_arguments(
    client: FlaskClient, redis_conn: redis.Redis, samples: Path
) -> None:
    body = (samples / "notifications/upload-image.json").read_bytes()
    answer = client.post("/webhooks/cloudinary", data=body, headers=signed_headers(body))
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["status"] == "queued"
    job = notification_queue(redis_conn).fetch_job(answer.json["id"])
    assert job is not None
    envelope = job.args[0]
    assert envelope["notification"] == json.loads(body)
    assert envelope["cloud_name"] == "test-cloud"
    # JSON serializer: any RQ tool (and any language) can read the stored arguments.
    raw = redis_conn.hget(f"rq:job:{job.id}", "data")
    assert raw is not None and json.loads(__import__("zlib").decompress(raw))


def test_sha256_signatures_are_accepted(client: FlaskClient) -> None:
    answer = client.post(
        "/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD, algorithm="sha256")
    )
    assert answer.status_code == 200


def test_duplicate_delivery_is_one_job(client: FlaskClient, redis_conn: redis.Redis) -> None:
    sent = int(time.time())
    first = client.post(
        "/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD, timestamp=sent - 60)
    )
    # a redelivery is signed anew, with a later timestamp
    second = client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD, timestamp=sent))
    assert first.json is not None and first.json["status"] == "queued"
    assert second.json == {"status": "duplicate", "id": first.json["id"]}
    assert queued_jobs(redis_conn) == 1
    assert redis_conn.ttl(f"postupload:dedupe:{first.json['id']}") >= 24 * 3600


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "not_an_object"),
        (b'{"public_id": "\xff"}', "application/json", 400, "invalid_utf8"),
        (b"", "application/json", 400, "invalid_json"),
        (b"{}", "application/json", 400, "not_a_notification"),
        (b'{"notification_type": "upload"}', "application/json", 400, "not_a_notification"),
        (
            b'{"notification_type": "upload", "public_id": "a", "version": "1"}',
            "application/json",
            400,
            "not_a_notification",
        ),
        (b"x" * 2048, "application/json", 413, "body_too_large"),
        (UPLOAD, "text/plain", 415, "unsupported_media_type"),
        (UPLOAD, "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
    ids=[
        "not-json",
        "array",
        "bad-utf8",
        "empty",
        "no-type",
        "upload-without-public-id",
        "bad-version",
        "oversize",
        "text-plain",
        "form",
    ],
)
def test_bad_input_gets_a_json_error_and_nothing_is_queued(
    settings: Settings, redis_conn: redis.Redis, body: bytes, content_type: str, status: int, code: str
) -> None:
    small = Settings(**{**settings.__dict__, "max_body": 1024})
    client = create_app(small, redis_conn).test_client()
    headers = {**signed_headers(body), "Content-Type": content_type}
    answer = client.post("/webhooks/cloudinary", data=body, headers=headers)
    assert answer.status_code == status
    assert answer.json is not None
    assert answer.json["error"]["code"] == code
    assert answer.json["error"]["message"]
    assert queued_jobs(redis_conn) == 0
    assert redis_conn.keys("postupload:dedupe:*") == []


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda: {},
        lambda: {"X-Cld-Timestamp": str(int(time.time()))},
        lambda: signed_headers(UPLOAD, "wrong-secret"),
        lambda: signed_headers(UPLOAD, timestamp=int(time.time()) - 7300),
        lambda: signed_headers(UPLOAD, timestamp=int(time.time()) + 7300),
    ],
    ids=["no-headers", "no-signature", "wrong-secret", "stale", "far-future"],
)
def test_bad_signatures_get_401_and_nothing_is_queued(
    client: FlaskClient, redis_conn: redis.Redis, make_headers: Callable[[], dict[str, str]]
) -> None:
    headers = make_headers()  # at run time: a timestamp made at collection time ages while tests run
    answer = client.post(
        "/webhooks/cloudinary", data=UPLOAD, headers={"Content-Type": "application/json", **headers}
    )
    assert answer.status_code == 401
    assert answer.json is not None and answer.json["error"]["code"].endswith("signature")
    assert queued_jobs(redis_conn) == 0


def test_tampered_body_gets_401(client: FlaskClient, redis_conn: redis.Redis) -> None:
    headers = signed_headers(UPLOAD)
    answer = client.post("/webhooks/cloudinary", data=UPLOAD.replace(b"shoe", b"sock"), headers=headers)
    assert answer.status_code == 401
    assert queued_jobs(redis_conn) == 0


def test_redis_down_answers_503_and_the_retry_is_queued(settings: Settings, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "own-redis", free_port()).start()
    try:
        connection = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=1)
        client = create_app(settings, connection).test_client()
        server.stop()
        down = client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD))
        assert down.status_code == 503
        assert down.json is not None and down.json["error"]["code"] == "store_unavailable"
        unready = client.get("/readyz")
        assert unready.status_code == 503 and unready.json is not None
        assert str(server.port) not in unready.json["error"]["message"]  # where Redis is: logs only
        server.start()
        # Cloudinary retries the same body: it must be queued, not taken for a duplicate.
        again = client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD))
        assert again.status_code == 200
        assert again.json is not None and again.json["status"] == "queued"
        assert notification_queue(connection).count == 1
    finally:
        server.stop()


def test_queued_work_survives_a_redis_restart(settings: Settings, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "own-redis", free_port()).start()
    try:
        client = create_app(settings, redis.Redis.from_url(server.url)).test_client()
        assert (
            client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD)).status_code
            == 200
        )
        server.stop()
        server.start()
        assert notification_queue(redis.Redis.from_url(server.url)).count == 1
    finally:
        server.stop()


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    sign=st.booleans(),
    extra=st.dictionaries(
        st.sampled_from(["X-Cld-Timestamp", "X-Cld-Signature"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=70),
    ),
)
def test_no_input_gets_a_500(
    client: FlaskClient, body: bytes, content_type: str, sign: bool, extra: dict[str, str]
) -> None:
    headers = signed_headers(body) if sign else {}
    headers.update(extra)
    headers["Content-Type"] = content_type
    answer = client.post("/webhooks/cloudinary", data=body, headers=headers)
    assert answer.status_code in {200, 400, 401, 413, 415}
    assert answer.is_json


def test_health_and_readiness(client: FlaskClient, settings: Settings) -> None:
    from postupload.rules.loading import load_ruleset

    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {
        "status": "ready",
        "rules": 1,
        "version": load_ruleset(settings.rules_dir).version,  # which rule set runs
        "workers": 0,
        "workers_error": "no worker is alive: notifications are stored but not worked",
    }


def test_readiness_reports_a_broken_rule_set(settings: Settings, redis_conn: redis.Redis) -> None:
    (settings.rules_dir / "20-broken.yaml").write_text("rules:\n  - name: Bad Name\n")
    answer = create_app(settings, redis_conn).test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json is not None
    assert answer.json["error"]["message"].startswith("no valid rule set: invalid: E100 (")
    assert "20-broken.yaml" not in answer.json["error"]["message"]  # the details: rules check, console


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    assert client.get("/webhooks/cloudinary").status_code == 405
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.is_json


def test_metrics_count_answers(settings: Settings, own_redis: RedisServer) -> None:
    # A Redis of its own: an earlier test's app may still flush its counts into the session's.
    client = create_app(settings, redis.Redis.from_url(own_redis.url)).test_client()
    client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD))
    client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD, "wrong"))
    client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD))
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    name = "postupload_notifications_total"
    assert sample(samples, name, type="upload", answer="queued") == 1
    assert sample(samples, name, type="upload", answer="duplicate") == 1
    assert sample(samples, name, type="unknown", answer="bad_signature") == 1
    # By product environment: the one whose path it came to (the bare path's is CLOUDINARY_URL's).
    assert sample(samples, name, type="upload", answer="queued", cloud=ACCOUNT.cloud_name) == 1


def _deep(levels: int) -> bytes:
    inner = '{"notification_type":"upload","public_id":"deep","x":' + "[" * levels + "]" * levels + "}"
    return inner.encode()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (_deep(10_000), 400, "too_deep"),  # past Python's recursion limit while parsing
        (_deep(40), 400, "too_deep"),  # parses, but deeper than any Cloudinary body
        (b"[" * 200_000 + b"]" * 200_000, 400, "too_deep"),
        (b'{"notification_type":"upload","public_id":"n","n":' + b"9" * 5000 + b"}", 400, "invalid_number"),
        (b'{"notification_type":"upload","public_id":"n","n":1e400}', 400, "invalid_number"),
        (b'{"notification_type":"upload","public_id":"n","n":NaN}', 400, "invalid_number"),
        (b'{"notification_type":"upload","public_id":"n","n":-Infinity}', 400, "invalid_number"),
        (b'{"notification_type":"upload","public_id":"n","n":"' + b"\\\\" * 200_000 + b'"}', 200, "queued"),
        (b'{"notification_type":"upload","public_id":"\\ud800\\u0000"}', 200, "queued"),
        (_deep(20), 200, "queued"),
    ],
    ids=[
        "10k-deep",
        "40-deep",
        "200k-deep-array",
        "5000-digits",
        "1e400",
        "nan",
        "infinity",
        "escapes",
        "lone-surrogate",
        "20-deep",
    ],
)
def test_signed_pathological_json_gets_an_answer_never_a_500(
    client: FlaskClient, redis_conn: redis.Redis, body: bytes, status: int, code: str
) -> None:
    answer = client.post("/webhooks/cloudinary", data=body, headers=signed_headers(body))
    assert answer.status_code == status, answer.json
    assert answer.json is not None
    assert (answer.json.get("status") or answer.json["error"]["code"]) == code
    assert queued_jobs(redis_conn) == (1 if status == 200 else 0)


def test_a_wide_body_is_taken(client: FlaskClient, redis_conn: redis.Redis) -> None:
    fields = {f"k{number}": number for number in range(60_000)}
    body = json.dumps({"notification_type": "upload", "public_id": "wide", **fields}).encode()
    assert len(body) < 1_048_576
    answer = client.post("/webhooks/cloudinary", data=body, headers=signed_headers(body))
    assert answer.status_code == 200 and queued_jobs(redis_conn) == 1


def test_the_same_bytes_for_two_environments_are_two_notifications(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    """The dedupe mark and the job id include the environment: the second delivery was answered
    `duplicate` and never worked."""
    other = Account("other-cloud", "999888777666555", "other-secret")
    client = create_app(replace(settings, accounts=(other,)), redis_conn).test_client()
    first = client.post("/webhooks/cloudinary", data=UPLOAD, headers=signed_headers(UPLOAD))
    second = client.post(
        "/webhooks/cloudinary/other-cloud", data=UPLOAD, headers=signed_headers(UPLOAD, other.api_secret)
    )
    assert first.json is not None and second.json is not None
    assert first.json["status"] == second.json["status"] == "queued"
    assert first.json["id"] != second.json["id"] and queued_jobs(redis_conn) == 2

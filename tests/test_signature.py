"""Notification signatures: the shared vectors, and every way a request can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from postupload.core.signature import sign_notification, verify_notification
from postupload.errors import SignatureError


def vectors(samples: Path, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads((samples / "signatures.json").read_text())[kind]
    return found


def body_of(samples: Path, vector: dict[str, Any]) -> bytes:
    if "body_file" in vector:
        return (samples / vector["body_file"]).read_bytes()
    return str(vector["body"]).encode()


def verify(
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    secret: str,
    *,
    now: float,
    tolerance: int = 7200,
    algorithms: tuple[str, ...] = ("sha1", "sha256"),
) -> None:
    verify_notification(
        body, timestamp, signature, secret, now=now, tolerance=tolerance, algorithms=algorithms
    )


def test_every_shared_vector_verifies(samples: Path) -> None:
    cases = vectors(samples, "notification_vectors")
    assert len(cases) >= 10
    for vector in cases:
        body = body_of(samples, vector)
        now = float(vector["timestamp"])  # the vectors are old: freeze the clock at their time
        verify(body, vector["timestamp"], vector["signature"], vector["api_secret"], now=now)
        assert (
            sign_notification(body, vector["timestamp"], vector["api_secret"], vector["algorithm"])
            == (vector["signature"])
        )


def test_every_negative_vector_is_rejected(samples: Path) -> None:
    for vector in vectors(samples, "notification_negative_vectors"):
        with pytest.raises(SignatureError) as caught:
            verify(
                body_of(samples, vector),
                vector["timestamp"],
                vector["signature"],
                vector["api_secret"],
                now=float(vector["timestamp"]),
                # the account's digest is a setting (POSTUPLOAD_SIGNATURE_ALGORITHMS)
                algorithms=(vector["algorithm"],),
            )
        assert caught.value.status == 401, vector["id"]


BODY = b'{"notification_type":"upload","public_id":"a"}'
NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("body", "timestamp", "signature", "code"),
    [
        (BODY + b" ", str(NOW), sign_notification(BODY, str(NOW), "s"), "bad_signature"),
        (BODY, str(NOW), sign_notification(BODY, str(NOW), "other-secret"), "bad_signature"),
        (BODY, str(NOW + 1), sign_notification(BODY, str(NOW), "s"), "bad_signature"),
        (BODY, str(NOW - 7201), sign_notification(BODY, str(NOW - 7201), "s"), "stale_signature"),
        (BODY, str(NOW + 7201), sign_notification(BODY, str(NOW + 7201), "s"), "stale_signature"),
        (BODY, None, sign_notification(BODY, str(NOW), "s"), "missing_signature"),
        (BODY, str(NOW), None, "missing_signature"),
        (BODY, "yesterday", "0" * 40, "bad_timestamp"),
        (BODY, str(NOW), "zz" * 20, "bad_signature"),
        (BODY, str(NOW), "é" * 40, "bad_signature"),
        (BODY, str(NOW), "abc", "bad_signature"),
    ],
    ids=[
        "tampered-body",
        "wrong-secret",
        "other-timestamp",
        "stale",
        "far-future",
        "no-timestamp",
        "no-signature",
        "non-numeric-timestamp",
        "not-hex",
        "non-ascii",
        "wrong-length",
    ],
)
def test_wrong_requests_are_rejected(
    body: bytes, timestamp: str | None, signature: str | None, code: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(body, timestamp, signature, "s", now=NOW)
    assert caught.value.code == code


def test_clock_skew_within_tolerance_is_accepted_both_ways() -> None:
    for stamp in (NOW - 7200, NOW + 7200):
        verify(BODY, str(stamp), sign_notification(BODY, str(stamp), "s"), "s", now=NOW)


def test_sha256_is_accepted_only_when_configured() -> None:
    signature = sign_notification(BODY, str(NOW), "s", "sha256")
    verify(BODY, str(NOW), signature, "s", now=NOW)
    with pytest.raises(SignatureError):
        verify(BODY, str(NOW), signature, "s", now=NOW, algorithms=("sha1",))


def test_the_fast_schema_check_never_accepts_what_jsonschema_refuses() -> None:
    """The intake asks jsonschema-rs first and jsonschema only when it does not call a body valid:
    on any notification-shaped value, a body the fast check calls valid is valid to jsonschema."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from postupload.core.notification import _surely_valid, schema_validator

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=3),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=6,
    )
    fields = st.sampled_from(
        [
            "notification_type",
            "public_id",
            "asset_id",
            "resource_type",
            "type",
            "version",
            "tags",
            "context",
            "x",
        ]
    )
    kinds = st.sampled_from(["upload", "delete", "", "eager"])
    bodies = st.dictionaries(fields, values | kinds, max_size=6)

    @settings(max_examples=400, deadline=None)
    @given(bodies)
    def agree(body: dict[str, Any]) -> None:
        if _surely_valid(body):
            assert schema_validator().is_valid(body), body

    agree()
    assert _surely_valid({"notification_type": "upload", "public_id": "a"})
    assert not _surely_valid({"notification_type": "upload"})  # an upload names its asset

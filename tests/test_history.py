"""What an asset's history keeps: every entry within its bound, whatever a notification or Cloudinary's
answer holds, and what happened still readable."""

from __future__ import annotations

import json
from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from postupload.store import history, keys

# The largest call a notification can make: an asset's 1,000 tags of 255 characters, all added.
TAGS = [f"{number:03d}-" + "t" * 251 for number in range(1000)]


def _action(**more: Any) -> dict[str, Any]:
    return {
        "event": "action",
        "notification": "n" * 32,
        "job": "n" * 32,
        "call": {"command": "add", "tag": TAGS},
        "rule": "tag-all",
        "index": 0,
        "action": "tags",
        "public_id": "products/shoe",
        "status": "failed",
        "error": "400 " + "x" * 100_000,
        "reason": "bad_request",
        **more,
    }


def test_an_entry_over_its_bound_keeps_what_happened_and_the_start_of_its_long_values() -> None:
    text = history.bounded(_action())
    assert len(text.encode()) <= keys.HISTORY_ENTRY_BYTES
    kept = json.loads(text)
    assert (kept["rule"], kept["action"], kept["status"], kept["public_id"]) == (
        "tag-all",
        "tags",
        "failed",
        "products/shoe",
    )
    assert kept["call"].startswith('{"command":"add","tag":["000-ttt') and kept["call"].endswith(
        f"({len(json.dumps(_action()['call'], separators=(',', ':'))):,} characters in all)"
    )
    assert kept["error"].startswith("400 xxx") and kept["error"].endswith("(100,004 characters in all)")


def test_an_entry_within_its_bound_is_kept_whole() -> None:
    entry = _action(call={"command": "add", "tag": ["a", "b"]}, error="400 Bad tag")
    assert json.loads(history.bounded(entry)) == entry


def test_an_entry_of_many_long_values_keeps_its_essential_fields() -> None:
    entry = _action(**{f"extra_{number}": "é" * 2000 for number in range(20)})
    text = history.bounded(entry)
    assert len(text.encode()) <= keys.HISTORY_ENTRY_BYTES
    kept = json.loads(text)
    assert (kept["rule"], kept["action"], kept["status"], kept["reason"]) == (
        "tag-all",
        "tags",
        "failed",
        "bad_request",
    )
    assert "over the 4,096 an entry keeps" in kept["cut"] and "extra_0" not in kept


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*history.ESSENTIAL, "call", "error", "detail", "rules", "public_id"]),
        st.recursive(
            st.text(max_size=3000) | st.integers() | st.booleans(),
            lambda inner: (
                st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=20), inner, max_size=10)
            ),
            max_leaves=60,
        ),
    )
)
def test_any_entry_fits_its_bound_as_json(entry: dict[str, Any]) -> None:
    text = history.bounded(entry, limit=1024)
    assert len(text.encode()) <= 1024
    kept = json.loads(text)
    assert set(kept) <= set(entry) | {"cut"}


def test_an_assets_history_stays_within_its_memory_bound(redis_conn: redis.Redis) -> None:
    """500 entries of at most 4 KiB: about 2 MiB per asset, whatever each call carried (each of
    these is 300 KiB as sent)."""
    for batch in range(12):
        history.record_all(
            redis_conn,
            [history.Story("cloud:asset", "cloud:products/shoe", [(_action(), 1000.0 + batch)] * 50)],
        )
    assert redis_conn.llen(keys.history("cloud:asset")) == keys.HISTORY_LENGTH
    used = redis_conn.memory_usage(keys.history("cloud:asset"), samples=0) or 0
    assert used <= keys.HISTORY_LENGTH * keys.HISTORY_ENTRY_BYTES  # 2 MiB; uncut, these were 180 MB
    (newest, *_) = history.entries(redis_conn, "cloud:asset")[-1:]
    assert newest["rule"] == "tag-all" and newest["status"] == "failed"

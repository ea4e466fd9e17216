"""Notifications kept for previews (`rules diff`, the console): the latest, in a bounded Redis stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

import redis

from postupload import keys
from postupload.envelope import Envelope
from postupload.errors import BadNotification


@dataclass(frozen=True)
class Keep:
    """How many notifications are kept, and for how long: whichever bound is met first."""

    count: int = 10_000  # 0 keeps none
    days: float = 7.0


def record(pipe: redis.client.Pipeline, envelope: Envelope, keep: Keep, now: float) -> None:
    """Add the notification to the stream (in the caller's transaction), trimmed to both bounds.

    The count is trimmed approximately (`~`: Redis drops whole blocks of about 100), so memory stays
    flat at about `count` entries whatever the load; the age exactly (entries leave one by one)."""
    if keep.count <= 0:
        return
    entry = json.dumps(envelope.to_job(), separators=(",", ":"))
    pipe.xadd(keys.RECORDED, {"envelope": entry}, maxlen=keep.count, approximate=True)
    oldest = int((now - keep.days * keys.DAY) * 1000)
    pipe.xtrim(keys.RECORDED, minid=f"{max(oldest, 0)}-0", approximate=False)


def latest(connection: redis.Redis, count: int | None = None) -> list[Envelope]:
    """The recorded notifications, newest first (all that are kept, or the latest `count`)."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], connection.xrevrange(keys.RECORDED, count=count))
    found = []
    for _, fields in entries:
        try:
            found.append(Envelope.from_job(json.loads(fields[b"envelope"])))
        except (KeyError, ValueError, TypeError, BadNotification):
            continue  # not ours
    return found

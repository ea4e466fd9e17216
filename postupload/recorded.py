"""Notifications kept for previews (`rules diff`, the console): the latest, in a bounded Redis stream."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import cast

import redis

from postupload import keys
from postupload.envelope import Envelope
from postupload.errors import BadNotification

AGE_TRIM_EVERY = 60.0  # seconds between two trims by age in one process


@dataclass
class Keep:
    """How many notifications are kept, and for how long: whichever bound is met first."""

    count: int = 10_000  # 0 keeps none
    days: float = 7.0
    trimmed_at: float = field(default=float("-inf"), compare=False)  # by age, in this process

    def trim_by_age(self, now: float) -> bool:
        """True once every AGE_TRIM_EVERY s: a notification's stream entry then trims by age too."""
        if now - self.trimmed_at < AGE_TRIM_EVERY:
            return False
        self.trimmed_at = now
        return True


def record(pipe: redis.client.Pipeline, envelope: Envelope, keep: Keep, now: float) -> None:
    """Add the notification to the stream (in the caller's transaction), trimmed to both bounds.

    The count is trimmed approximately (`~`: Redis drops whole blocks of about 100), so memory stays
    flat at about `count` entries whatever the load; the age exactly (entries leave one by one), once
    a minute per process rather than with every notification (a Redis command each)."""
    if keep.count <= 0:
        return
    entry = json.dumps(envelope.to_job(), separators=(",", ":"))
    pipe.xadd(keys.RECORDED, {"envelope": entry}, maxlen=keep.count, approximate=True)
    if keep.trim_by_age(now):
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

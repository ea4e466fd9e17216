"""Notifications kept for previews (`rules diff`, the console): the latest, in a bounded Redis stream."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from postupload.core.envelope import Envelope
from postupload.errors import BadNotification, PostuploadError
from postupload.store import keys

AGE_TRIM_EVERY = 60.0  # seconds between two trims by age in one process


@dataclass
class Keep:
    """How many notifications are kept, for how long and in how much memory: whichever bound is met
    first."""

    count: int = 10_000  # 0 keeps none
    days: float = 7.0
    megabytes: float = 256.0  # 10,000 of Cloudinary's largest notifications (252 KiB) would be 2.5 GB
    trimmed_at: float = field(default=float("-inf"), compare=False)  # by age, in this process

    def trim_by_age(self, now: float) -> bool:
        """True once every AGE_TRIM_EVERY s: a notification's stream entry then trims by age too."""
        if now - self.trimmed_at < AGE_TRIM_EVERY:
            return False
        self.trimmed_at = now
        return True


def keep_copy(
    pipe: redis.client.Pipeline, envelope: Envelope, keep: Keep, now: float, encoded: str | None = None
) -> bool:
    """Add the notification to the stream (in the caller's transaction), trimmed to its count and
    age; True when it is time to trim it to its memory too (`trim_to_memory`, after the transaction).

    The count is trimmed approximately (`~`: Redis drops whole blocks of about 100), so memory stays
    flat at about `count` entries whatever the load; the age exactly (entries leave one by one), once
    a minute per process rather than with every notification (a Redis command each). `encoded`: the
    envelope's job as JSON, when the caller made it already."""
    if keep.count <= 0:
        return False
    entry = encoded or json.dumps(envelope.to_job(), separators=(",", ":"))
    pipe.xadd(keys.RECORDED, {"envelope": entry}, maxlen=keep.count, approximate=True)
    if keep.trim_by_age(now):
        oldest = int((now - keep.days * keys.DAY) * 1000)
        pipe.xtrim(keys.RECORDED, minid=f"{max(oldest, 0)}-0", approximate=False)
        return True
    return False


def trim_to_memory(connection: redis.Redis, keep: Keep) -> None:
    """Drop the oldest entries until the stream fits `keep.megabytes` (once a minute per process,
    with the trim by age: two more round trips then). Notifications differ in size a thousandfold,
    so a count alone bounds nothing; between two looks the stream can outgrow its budget by what
    arrives in that minute."""
    budget = keep.megabytes * 2**20
    used = connection.memory_usage(keys.RECORDED, samples=0)  # exact: it walks blocks, not entries
    if not used or used <= budget:
        return
    length = connection.xlen(keys.RECORDED)
    # To 90% of the budget: entries differ in size and blocks have overheads of their own, so a
    # trim to exactly the budget's share of entries left the stream a few hundred bytes over it.
    connection.xtrim(keys.RECORDED, maxlen=int(length * 0.9 * budget / used), approximate=False)


def latest(connection: redis.Redis, count: int | None = None) -> list[Envelope]:
    """The recorded notifications, newest first (all that are kept, or the latest `count`)."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], connection.xrevrange(keys.RECORDED, count=count))
    return [envelope for _, envelope in _envelopes(entries)]


def between(connection: redis.Redis, start: str, end: str, count: int) -> list[tuple[str, Envelope]]:
    """At most `count` recorded notifications, oldest first, each with its stream entry id, from
    `start` to `end` (entry ids or milliseconds; `(` before one leaves it out, `-` and `+` are the
    ends): a window read a page at a time."""
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        connection.xrange(keys.RECORDED, min=start, max=end, count=count),
    )
    return _envelopes(entries)


def oldest(connection: redis.Redis) -> float | None:
    """When the oldest notification still kept was received (seconds since the epoch), or None."""
    entries = cast(list[tuple[bytes, Any]], connection.xrange(keys.RECORDED, count=1))
    return int(entries[0][0].split(b"-")[0]) / 1000 if entries else None


def _envelopes(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[str, Envelope]]:
    found = []
    for entry, fields in entries:
        try:
            found.append((entry.decode(), Envelope.from_job(json.loads(fields[b"envelope"]))))
        except (KeyError, ValueError, TypeError, BadNotification):
            continue  # not ours
    return found


def export_line(envelope: Envelope) -> str:
    """A kept notification as one JSON line of `postupload notifications export`."""
    return json.dumps(envelope.to_job(), separators=(",", ":"), ensure_ascii=False)


def read_exported(lines: Iterable[bytes], where: str) -> list[Envelope]:
    """The notifications of an export (its lines, as bytes), in its order (newest first); a line
    that is not one (not UTF-8, not JSON, nested too deep, not an envelope) is a PostuploadError
    naming `where` and the line."""
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            # json's own parser, not the intake's bounded one: a notification at the intake's depth
            # limit is one level deeper in its envelope, and must read back
            found.append(Envelope.from_job(json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError:
            raise PostuploadError(f"{where}:{number}: not UTF-8 text (an export is JSON lines)") from None
        except RecursionError:
            raise PostuploadError(f"{where}:{number}: nested too deep to be a notification") from None
        except (KeyError, ValueError, TypeError, BadNotification) as error:
            raise PostuploadError(
                f"{where}:{number}: not a notification of `postupload notifications export` ({error})"
            ) from None
    return found

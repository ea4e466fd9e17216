"""Replays as values: which recorded notifications a replay takes, and each as the job a worker runs
under the current rules. Pure.

A replayed notification keeps its id: the id is what the calls of a notification without a version
are keyed by, so a notification already fully applied finds every call's done mark and makes none.
Its job has an id of its own (the replay's, the run's and the notification's), so the original job
and a replay's are different jobs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from postupload.core.envelope import REPLAY_PREFIX, Envelope

_AGO = re.compile(r"(\d+)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def moment(text: str, now: float) -> float:
    """A point in time as `--since`/`--until` take it: a time ago (`24h`, `90m`, `7d`, `1d12h`) or an
    ISO 8601 date or time (`2026-12-05`, `2026-12-05T14:00`, `…Z`, `…+01:00`; UTC when no offset is
    given). ValueError says what is expected. Nothing is recorded before 1970: an earlier time is
    taken as 1970 (`--since 0001-01-01`, `--since 99999w`: everything kept)."""
    text = text.strip()
    parts = _AGO.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        ago = sum(int(number) * _SECONDS[unit] for number, unit in parts)
        return max(0.0, now - ago) if ago < now else 0.0  # a float holds no 400-digit number
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give a time ago (24h, 90m, 7d, 1d12h) or an ISO 8601 date or"
            " time (2026-12-05, 2026-12-05T14:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp())


def utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Replay:
    """One replay as asked: a window of recorded notifications, the rules that act (all when empty),
    the notification types and product environment taken (all when empty)."""

    since: str
    until: str | None = None
    rules: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    cloud_name: str = ""

    @property
    def key(self) -> str:
        """The same arguments, the same replay: a stopped one run again goes on where it was."""
        text = json.dumps([self.since, self.until, sorted(self.rules), sorted(self.types), self.cloud_name])
        return REPLAY_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]

    def window(self, now: float, oldest: float = 0.0) -> Window:
        """The window as of `now`, from `oldest` at the earliest; ValueError when a bound is not a
        time or the window is empty."""
        since = max(moment(self.since, now), oldest)
        until = moment(self.until, now) if self.until is not None else now
        if until <= since:
            raise ValueError(f"the window is empty: {utc(since)} is not before {utc(until)}")
        return Window(since, until)

    def wants(self, envelope: Envelope) -> bool:
        if self.types and envelope.notification_type not in self.types:
            return False
        return not self.cloud_name or envelope.cloud_name == self.cloud_name


@dataclass(frozen=True)
class Window:
    """From `since` to `until`, both included (to the millisecond), seconds since the epoch."""

    since: float
    until: float


@dataclass(frozen=True)
class Bound:
    """A replay with its window fixed when it started: what its checkpoint keeps, so a resumed run
    takes the same notifications even when asked for `--since 24h` an hour later."""

    replay: Replay
    window: Window

    @property
    def key(self) -> str:
        return self.replay.key

    def describe(self) -> str:
        replay = self.replay
        types = f" of type {', '.join(replay.types)}" if replay.types else ""
        where = f" in {replay.cloud_name}" if replay.cloud_name else ""
        rules = f", rules {', '.join(replay.rules)}" if replay.rules else ""
        span = f"{utc(self.window.since)} to {utc(self.window.until)}"
        return f"replay of the notifications{types}{where} recorded from {span}{rules}"

    def arguments(self) -> dict[str, Any]:
        return {
            "since": self.replay.since,
            "until": self.replay.until,
            "rules": list(self.replay.rules),
            "types": list(self.replay.types),
            "cloud_name": self.replay.cloud_name,
            "window": [self.window.since, self.window.until],
        }


def job(replay: Replay, envelope: Envelope, run: str, now: float) -> tuple[str, Envelope]:
    """The job id and envelope that replay one recorded notification: the same notification and id,
    received now, counted for the replay, acted on by the replay's rules only."""
    job_id = hashlib.sha1(f"{replay.key}:{run}:{envelope.id}".encode()).hexdigest()
    replayed = replace(envelope, received_at=now, backfill=replay.key, only_rules=replay.rules or None)
    return job_id, replayed


# What became of an asset after a notification about it, from a later recorded notification.
OVERWRITTEN, DELETED, RENAMED = "overwritten", "deleted", "renamed"
AssetIdentity = tuple[str, str, str, str]  # cloud_name, resource_type, type, public_id


def _identity(cloud_name: str, fields: dict[str, Any], public_id: str) -> AssetIdentity:
    return (
        cloud_name,
        str(fields.get("resource_type") or "image"),
        str(fields.get("type") or "upload"),
        public_id,
    )


def _version(notification: dict[str, Any]) -> tuple[Any, Any]:
    """Which version of an asset: versions are seconds, so two uploads in one second share one;
    version_id tells them apart."""
    return notification.get("version"), notification.get("version_id")


def _fates(envelope: Envelope) -> Iterable[tuple[AssetIdentity, str, Any]]:
    """What this notification says happened to assets: (asset, fate, version)."""
    notification = envelope.notification
    kind = envelope.notification_type
    if kind == "upload" and isinstance(notification.get("public_id"), str):
        identity = _identity(envelope.cloud_name, notification, notification["public_id"])
        yield identity, OVERWRITTEN, _version(notification)
    elif kind == "delete" and isinstance(notification.get("resources"), list):
        for resource in notification["resources"]:
            if isinstance(resource, dict) and isinstance(resource.get("public_id"), str):
                yield _identity(envelope.cloud_name, resource, resource["public_id"]), DELETED, None
    elif kind == "rename" and isinstance(notification.get("from_public_id"), str):
        identity = _identity(envelope.cloud_name, notification, notification["from_public_id"])
        yield identity, RENAMED, None


def entry_order(entry: str) -> tuple[int, int]:
    """A stream entry id (`1733400000000-3`) as what orders it."""
    milliseconds, _, sequence = entry.partition("-")
    return int(milliseconds), int(sequence or 0)


class Supersession:
    """Which recorded notifications are about an asset that is no longer as they describe it.

    Replaying an upload of a version since overwritten would act on the new version with the old
    one's values (and make calls the new version's own notification made already, under another
    key); replaying one of an asset since deleted or renamed would fail for want of the asset. Told
    every recorded notification from the window's start on (those after the window too), it names
    the fate of each: only the last word on each asset is kept, not the notifications."""

    def __init__(self) -> None:
        self._last: dict[AssetIdentity, tuple[tuple[int, int], str, Any]] = {}

    def add(self, entry: str, envelope: Envelope) -> None:
        order = entry_order(entry)
        for identity, fate, version in _fates(envelope):
            if identity not in self._last or self._last[identity][0] < order:
                self._last[identity] = (order, fate, version)

    def fate(self, entry: str, envelope: Envelope) -> str | None:
        """OVERWRITTEN, DELETED or RENAMED when a later notification says so; None otherwise."""
        public_id = envelope.notification.get("public_id")
        if not isinstance(public_id, str):
            return None
        last = self._last.get(_identity(envelope.cloud_name, envelope.notification, public_id))
        if last is None or last[0] <= entry_order(entry):
            return None
        _, fate, version = last
        if fate == OVERWRITTEN and version == _version(envelope.notification):
            return None  # the same version notified again
        return fate

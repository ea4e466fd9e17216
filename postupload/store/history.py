"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from postupload.core.notification import Target
from postupload.store import keys

# One call for any number of assets' entries. For each asset: append (oldest first, so the newest ends
# up first), bound (only once past the bound), and keep 30 days with the public_id -> asset mapping.
# Those two are (re)set only when they could have changed or their days run short (each costs Redis
# a command): for a new history, a rename, and, when asked (a job's write, not a tag batch's that
# follows it within seconds), once a day.
# KEYS: (history, mapping) per asset; ARGV: length, ttl, a day, then per asset: public_id (or ''),
# asset, refresh (0 no, 1 if a day went by, 2 now), how many entries, the entries.
_RECORD = """
local bound, ttl, day = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at = 4
for i = 1, #KEYS, 2 do
  local index, asset, refresh, count = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local length = redis.call('lpush', KEYS[i], unpack(ARGV, at + 4, at + 3 + count))
  if length > bound then redis.call('ltrim', KEYS[i], 0, bound - 1) end
  if length == count or refresh == '2' or (refresh == '1' and redis.call('ttl', KEYS[i]) < ttl - day) then
    redis.call('expire', KEYS[i], ttl)
    if index ~= '' then redis.call('set', KEYS[i + 1], asset, 'EX', ttl) end
  end
  at = at + 4 + count
end
return 1
"""


@dataclass
class Story:
    """Entries for one asset's history, and how they renew it (see _RECORD)."""

    asset_key: str
    index_name: str | None  # Target.index_name: the asset is found by it from now on
    entries: list[tuple[dict[str, Any], float]]  # (entry, time), oldest first
    refresh: bool = True
    renamed: bool = False  # its public_id is new: map it now


def record(
    connection: redis.Redis | Any, asset_key: str, index_name: str | None, entry: dict[str, Any], now: float
) -> None:
    """Append one entry to an asset's history (newest first). `connection` may be a pipeline."""
    record_all(connection, [Story(asset_key, index_name, [(entry, now)])])


def record_all(connection: redis.Redis | Any, stories: Sequence[Story]) -> None:
    """Append each story's entries to its asset's history, all in one call. `connection` may be a
    pipeline."""
    names: list[str] = []
    args: list[str | int] = [keys.HISTORY_LENGTH, keys.HISTORY_TTL, keys.DAY]
    for story in stories:
        if not story.entries:
            continue
        names += [keys.history(story.asset_key), keys.asset(story.index_name or "")]
        refresh = 2 if story.renamed else int(story.refresh)
        args += [story.index_name or "", story.asset_key, refresh, len(story.entries)]
        args += [_text(entry, now) for entry, now in story.entries]
    if names:
        # EVAL, not a registered script: in a pipeline redis-py sends SCRIPT EXISTS before each EVALSHA
        connection.eval(_RECORD, len(names), *names, *args)


def _text(entry: dict[str, Any], now: float) -> str:
    return bounded({"time": round(now, 3), **entry})


# An entry's values cut to fit HISTORY_ENTRY_BYTES keep this much of their JSON text.
CUT_TO = 512
# What an entry cut that far still does not fit keeps: what happened, to what, by which rule.
ESSENTIAL = (
    "time",
    "event",
    "notification",
    "job",
    "notification_type",
    "public_id",
    "rule",
    "action",
    "status",
    "reason",
)


def bounded(entry: dict[str, Any], limit: int = keys.HISTORY_ENTRY_BYTES) -> str:
    """The entry as JSON of at most `limit` bytes. Values come from notifications and Cloudinary's
    answers (a call with 1,000 tags, an error quoting a body), so an entry could be a megabyte and an
    asset's 500 of them half a gigabyte. Over the limit, its longest values are cut, longest first,
    each to its first CUT_TO characters and a note of its length; if that is not enough, only the
    essential fields are kept, each cut shorter."""
    text = _json(entry)
    if len(text.encode()) <= limit:
        return text
    cut = dict(entry)
    for name in sorted(cut, key=lambda name: _size(cut[name]), reverse=True):
        cut[name] = _cut(cut[name], CUT_TO)
        text = _json(cut)
        if len(text.encode()) <= limit:
            return text
    share = limit // (2 * len(ESSENTIAL))
    essential = {name: _cut(entry[name], share) for name in ESSENTIAL if name in entry}
    return _json({**essential, "cut": f"{_size(entry):,} bytes, over the {limit:,} an entry keeps"})


def _cut(value: Any, length: int) -> Any:
    """The value, or its start and a note of its length, as a string whose JSON is at most `length`
    bytes (when the note alone fits)."""
    text = value if isinstance(value, str) else _json(value)
    if _size(text) <= length:
        return value
    note = f"… ({len(text):,} characters in all)"
    # The longest start that fits (a character is 1 to 12 bytes in JSON: at most `length` of them).
    low, high = 0, min(len(text), length)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _size(text[:middle] + note) <= length else (low, middle - 1)
    return text[:low] + note


def _size(value: Any) -> int:
    return len(_json(value).encode())


def _json(value: Any) -> str:
    # ASCII (other characters escaped): a lone surrogate a notification can carry stays storable.
    return json.dumps(value, separators=(",", ":"), default=str)


def asset_key(connection: redis.Redis, target: Target) -> str:
    """The key an asset's history is kept under, within its product environment: its asset_id.
    Moderation, info and some eager notifications do not carry it, so for those the key an earlier
    notification recorded for the public_id is used, and one asset's story is not split in two."""
    if target.asset_id:
        return target.key
    known = connection.get(keys.asset(target.index_name))
    return known.decode() if isinstance(known, bytes) else target.key


def find(connection: redis.Redis, asset: str, cloud_names: Sequence[str]) -> list[tuple[str, str]]:
    """(cloud name, history key) for each of these product environments that has a story for
    `asset`, a public_id or an asset_id. Only an environment named finds anything: no spelling of
    `asset` reaches another environment's assets."""
    mapped = (
        connection.mget([keys.asset(f"{cloud_name}:{asset}") for cloud_name in cloud_names])
        if cloud_names
        else []
    )
    found = []
    for cloud_name, known in zip(cloud_names, mapped, strict=True):
        key = known.decode() if isinstance(known, bytes) else f"{cloud_name}:{asset}"
        if known is not None or connection.exists(keys.history(key)):
            found.append((cloud_name, key))
    return found


def read(connection: redis.Redis, asset: str, cloud_names: Sequence[str]) -> list[dict[str, Any]]:
    """An asset's history, oldest first, by public_id or asset_id, in the first of `cloud_names` that
    knows it."""
    found = find(connection, asset, cloud_names)
    return entries(connection, found[0][1]) if found else []


def entries(connection: redis.Redis, key: str) -> list[dict[str, Any]]:
    """The history kept under `key` (see `find`), oldest first."""
    return [json.loads(entry) for entry in reversed(connection.lrange(keys.history(key), 0, -1))]

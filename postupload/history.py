"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from postupload import keys
from postupload.notification import Target

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
    return json.dumps({"time": round(now, 3), **entry}, separators=(",", ":"), default=str)


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

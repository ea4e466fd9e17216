"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from postupload import keys
from postupload.notification import Target

# One call for any number of entries: append (oldest first, so the newest ends up first), bound
# (only once past the bound), and, when asked (a job's first write to the asset: its later ones
# follow within seconds), keep 30 days and remember the public_id -> asset mapping. Both are
# (re)set only when they could have changed or their days run short: for a new history, for a
# rename, and once a day (each costs Redis a command).
# KEYS: history, mapping; ARGV: length, ttl, public_id (or ''), asset, refresh (0 no, 1 if due, 2 now),
# then the entries.
_RECORD = """
local length = redis.call('lpush', KEYS[1], unpack(ARGV, 6))
if length > tonumber(ARGV[1]) then redis.call('ltrim', KEYS[1], 0, tonumber(ARGV[1]) - 1) end
local fresh = length == #ARGV - 5 or ARGV[5] == '2'
if fresh or (ARGV[5] == '1' and redis.call('ttl', KEYS[1]) < tonumber(ARGV[2]) - %d) then
  redis.call('expire', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('set', KEYS[2], ARGV[4], 'EX', ARGV[2]) end
end
return 1
""".replace("%d", str(keys.DAY))


# One entry appended to each of several histories (bounded), whose days a job renewed moments ago.
_RECORD_EACH = """
for i, key in ipairs(KEYS) do
  if redis.call('lpush', key, ARGV[i + 1]) > tonumber(ARGV[1]) then
    redis.call('ltrim', key, 0, tonumber(ARGV[1]) - 1)
  end
end
return 1
"""


def record(
    connection: redis.Redis | Any, asset_key: str, index_name: str | None, entry: dict[str, Any], now: float
) -> None:
    """Append one entry to an asset's history (newest first). `connection` may be a pipeline."""
    record_many(connection, asset_key, index_name, [(entry, now)])


def record_many(
    connection: redis.Redis | Any,
    asset_key: str,
    index_name: str | None,
    entries: list[tuple[dict[str, Any], float]],
    refresh: bool = True,
    renamed: bool = False,
) -> None:
    """Append entries, oldest first, to an asset's history in one call, and find it by `index_name`
    (Target.index_name) from now on. `refresh` keeps it 30 days more, with its public_id mapping,
    when a day went by since the last refresh: a job's later writes to the same asset skip it.
    `renamed`: the public_id is new, map it now. `connection` may be a pipeline."""
    if not entries:
        return
    texts = [_text(entry, now) for entry, now in entries]
    names = [keys.history(asset_key), keys.asset(index_name or "")]
    refreshing = 2 if renamed else int(refresh)
    args: list[str | int] = [keys.HISTORY_LENGTH, keys.HISTORY_TTL, index_name or "", asset_key, refreshing]
    args += texts
    # EVAL, not a registered script: in a pipeline redis-py sends SCRIPT EXISTS before each EVALSHA
    connection.eval(_RECORD, len(names), *names, *args)


def record_each(connection: redis.Redis | Any, entries: list[tuple[str, dict[str, Any], float]]) -> None:
    """Append one entry to each of these assets' histories (asset key, entry, time), in one call, as
    the tag batches do once a call for many assets is answered: the jobs that queued the changes
    renewed those histories' days and mappings. `connection` may be a pipeline."""
    if not entries:
        return
    names = [keys.history(asset) for asset, _, _ in entries]
    texts = [_text(entry, now) for _, entry, now in entries]
    connection.eval(_RECORD_EACH, len(names), *names, keys.HISTORY_LENGTH, *texts)


def _text(entry: dict[str, Any], now: float) -> str:
    return json.dumps({"time": round(now, 3), **entry}, separators=(",", ":"), default=str)


def asset_key(connection: redis.Redis, target: Target) -> str:
    """The key an asset's history is kept under: its asset_id. Moderation, info and some eager
    notifications do not carry it, so for those the key an earlier notification recorded for the
    public_id (in the same product environment) is used, and one asset's story is not split in two."""
    if target.asset_id:
        return target.asset_id
    known = connection.get(keys.asset(target.index_name))
    return known.decode() if isinstance(known, bytes) else target.key


def read(connection: redis.Redis, asset: str, cloud_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """An asset's history, oldest first, by asset_id, by CLOUD/public_id, or by public_id in any of
    `cloud_names` (the first that knows it)."""
    names = [f"{cloud_name}/{asset}" for cloud_name in cloud_names] + [asset]
    found = [key for key in connection.mget([keys.asset(name) for name in names]) if key is not None]
    key = found[0].decode() if found and isinstance(found[0], bytes) else asset
    entries = connection.lrange(keys.history(key), 0, -1)
    return [json.loads(entry) for entry in reversed(entries)]

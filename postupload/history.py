"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
from typing import Any

import redis

from postupload import keys
from postupload.notification import Target

# One call per entry: append, bound, keep 30 days, and remember the public_id -> asset mapping.
_RECORD = """
redis.call('lpush', KEYS[1], ARGV[1])
redis.call('ltrim', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('expire', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('set', KEYS[2], ARGV[5], 'EX', ARGV[3]) end
return 1
"""
_script = redis.client.Redis().register_script(_RECORD)  # no connection is made: sha and text only


def record(
    connection: redis.Redis | Any, asset_key: str, public_id: str | None, entry: dict[str, Any], now: float
) -> None:
    """Append one entry to an asset's history (newest first). `connection` may be a pipeline."""
    text = json.dumps({"time": round(now, 3), **entry}, separators=(",", ":"), default=str)
    names = [keys.history(asset_key), keys.asset(public_id or "")]
    args: list[str | int] = [text, keys.HISTORY_LENGTH, keys.HISTORY_TTL, public_id or "", asset_key]
    _script(keys=names, args=args, client=connection)


def asset_key(connection: redis.Redis, target: Target) -> str:
    """The key an asset's history is kept under: its asset_id. Moderation, info and some eager
    notifications do not carry it, so for those the key an earlier notification recorded for the
    public_id is used, and one asset's story is not split in two."""
    if target.asset_id:
        return target.asset_id
    known = connection.get(keys.asset(target.public_id))
    return known.decode() if isinstance(known, bytes) else target.key


def read(connection: redis.Redis, asset: str) -> list[dict[str, Any]]:
    """An asset's history, oldest first, by asset_id, public_id or resource_type/type/public_id."""
    asset_key = connection.get(keys.asset(asset))
    key = asset_key.decode() if isinstance(asset_key, bytes) else asset
    entries = connection.lrange(keys.history(key), 0, -1)
    return [json.loads(entry) for entry in reversed(entries)]

"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

HISTORY_LENGTH = 500  # entries kept per asset
HISTORY_TTL = 30 * 24 * 3600

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
    connection: redis.Redis | Any, asset_key: str, public_id: str | None, entry: dict[str, Any]
) -> None:
    """Append one entry to an asset's history (newest first). `connection` may be a pipeline."""
    text = json.dumps({"time": round(time.time(), 3), **entry}, separators=(",", ":"), default=str)
    keys = [f"postupload:history:{asset_key}", f"postupload:asset:{public_id or ''}"]
    _script(
        keys=keys, args=[text, HISTORY_LENGTH, HISTORY_TTL, public_id or "", asset_key], client=connection
    )


def read(connection: redis.Redis, asset: str) -> list[dict[str, Any]]:
    """An asset's history, oldest first, by asset_id, public_id or resource_type/type/public_id."""
    asset_key = connection.get(f"postupload:asset:{asset}")
    key = asset_key.decode() if isinstance(asset_key, bytes) else asset
    entries = connection.lrange(f"postupload:history:{key}", 0, -1)
    return [json.loads(entry) for entry in reversed(entries)]

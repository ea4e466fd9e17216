"""What happened to each asset: notifications, matched rules, actions and their outcomes (bounded)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

HISTORY_LENGTH = 500  # entries kept per asset
HISTORY_TTL = 30 * 24 * 3600


def _key(asset_key: str) -> str:
    return f"postupload:history:{asset_key}"


def record(
    connection: redis.Redis | Any, asset_key: str, public_id: str | None, entry: dict[str, Any]
) -> None:
    """Append one entry to an asset's history (newest first). `connection` may be a pipeline."""
    text = json.dumps({"time": round(time.time(), 3), **entry}, separators=(",", ":"), default=str)
    connection.lpush(_key(asset_key), text)
    connection.ltrim(_key(asset_key), 0, HISTORY_LENGTH - 1)
    connection.expire(_key(asset_key), HISTORY_TTL)
    if public_id:
        connection.set(f"postupload:asset:{public_id}", asset_key, ex=HISTORY_TTL)


def read(connection: redis.Redis, asset: str) -> list[dict[str, Any]]:
    """An asset's history, oldest first, by asset_id, public_id or resource_type/type/public_id."""
    asset_key = connection.get(f"postupload:asset:{asset}")
    key = asset_key.decode() if isinstance(asset_key, bytes) else asset
    entries = connection.lrange(_key(key), 0, -1)
    return [json.loads(entry) for entry in reversed(entries)]

"""`context`: set (merge) and remove contextual metadata keys, in one Upload API `context` call."""

from __future__ import annotations

from typing import Any

from postupload.cloudinary_api import CloudinaryClient
from postupload.errors import ActionError
from postupload.notification import Target


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """The pairs to send: set values as text, removed keys with an empty value (which deletes them)."""
    pairs = {str(key): _text(value) for key, value in (params.get("set") or {}).items()}
    for key, value in pairs.items():
        if value == "":
            raise ActionError(
                f"context {key}: the value is empty; use remove: [{key}] to delete a key", permanent=True
            )
    for key in params.get("remove") or []:
        pairs[str(key)] = ""
    return {"context": pairs}


def run(client: CloudinaryClient, target: Target, call: dict[str, Any]) -> dict[str, Any]:
    changed = client.context(
        call["context"], [target.public_id], resource_type=target.resource_type, type=target.type
    )
    return {"changed": target.public_id in changed}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

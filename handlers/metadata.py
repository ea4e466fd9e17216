"""`metadata`: set structured metadata fields (by external id) with one Upload API `metadata` call."""

from __future__ import annotations

from typing import Any

from postupload.cloudinary_api import CloudinaryClient
from postupload.notification import Target


def plan(params: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": dict(params["set"])}


def run(client: CloudinaryClient, target: Target, call: dict[str, Any]) -> dict[str, Any]:
    changed = client.metadata(
        call["metadata"], [target.public_id], resource_type=target.resource_type, type=target.type
    )
    return {"changed": target.public_id in changed}

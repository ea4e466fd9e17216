"""`moderation`: approve or reject an asset through the Admin API `update` (rate-limited, budgeted)."""

from __future__ import annotations

from typing import Any

from postupload.cloudinary_api import CloudinaryClient, RateLimit
from postupload.notification import Target


def plan(params: dict[str, Any]) -> dict[str, Any]:
    return {"moderation_status": params["status"]}


def run(
    client: CloudinaryClient, target: Target, call: dict[str, Any]
) -> tuple[dict[str, Any], RateLimit | None]:
    answer, rate_limit = client.update(
        target.public_id, resource_type=target.resource_type, type=target.type, **call
    )
    return {"moderation_status": answer.get("moderation_status")}, rate_limit

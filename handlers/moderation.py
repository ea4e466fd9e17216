"""`moderation`: approve or reject an asset through the Admin API `update` (rate-limited, budgeted)."""

from __future__ import annotations

from typing import Any

from handlers.protocol import Endpoint, Handler, sdk_arguments
from postupload.core.calls import Call, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification

SCHEMA: dict[str, Any] = {
    "description": "Admin API update of the moderation status (rate-limited: budgeted across workers).",
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"enum": ["approved", "rejected"]}},
}


def plan(params: Params, notification: Notification) -> Params:
    return {"moderation_status": params["status"]}


def requests(params: Params) -> list[Request]:
    return [Request("admin", "update", params, "budget")]


def send(client: Client, call: Call) -> Answer:
    (public_id,) = call.public_ids
    answer, rate_limit = client.update(
        public_id, resource_type=call.resource_type, type=call.type, **call.params
    )
    return Answer({"moderation_status": answer.get("moderation_status")}, rate_limit=rate_limit)


def describe(call: Call) -> str:
    return f"cloudinary.api.update({sdk_arguments(call, repr(call.public_ids[0]))})"


ENDPOINT = Endpoint("update", "admin", send, describe)
HANDLER = Handler("moderation", SCHEMA, plan, requests, (ENDPOINT,))

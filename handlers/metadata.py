"""`metadata`: set structured metadata fields (by external id) with one Upload API `metadata` call."""

from __future__ import annotations

from typing import Any

from handlers.protocol import Endpoint, Handler
from postupload.core.calls import Call, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification
from postupload.core.placeholders import FIELD_VALUE

SCHEMA: dict[str, Any] = {
    "description": "Upload API metadata: structured metadata values by field external id.",
    "type": "object",
    "required": ["set"],
    "additionalProperties": False,
    "properties": {
        "set": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "oneOf": [{"$ref": "#/$defs/scalar"}, {"type": "array", "items": {"type": "string"}}]
            },
        }
    },
}


def plan(params: Params, notification: Notification) -> Params:
    return {"metadata": dict(params["set"])}


def requests(params: Params) -> list[Request]:
    return [Request("upload", "metadata", params)]


def send(client: Client, call: Call) -> Answer:
    changed = client.metadata(
        call.params["metadata"], list(call.public_ids), resource_type=call.resource_type, type=call.type
    )
    return Answer({"changed": call.public_ids[0] in changed}, frozenset(changed))


def describe(call: Call) -> str:
    where = f"resource_type={call.resource_type!r}, type={call.type!r}"
    values = call.params["metadata"]
    return f"cloudinary.uploader.update_metadata({values!r}, {list(call.public_ids)!r}, {where})"


ENDPOINT = Endpoint("metadata", "upload", send, describe)
HANDLER = Handler("metadata", SCHEMA, plan, requests, (ENDPOINT,), {"set": FIELD_VALUE})

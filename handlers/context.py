"""`context`: set (merge) and remove contextual metadata keys, in one Upload API `context` call."""

from __future__ import annotations

from typing import Any

from handlers.protocol import Endpoint, Handler
from postupload.core.calls import Call, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification
from postupload.core.placeholders import CONTEXT_KEY, FIELD_VALUE
from postupload.errors import ActionError

SCHEMA: dict[str, Any] = {
    "description": "Upload API context: set merges keys, remove deletes them.",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "set": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"$ref": "#/$defs/scalar"},
            "propertyNames": {"pattern": "^[^=|]+$"},
        },
        "remove": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": "^[^=|]+$", "description": "a key has no '=' or '|'"},
        },
    },
}


def plan(params: Params, notification: Notification) -> Params:
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


def requests(params: Params) -> list[Request]:
    return [Request("upload", "context", params)]


def send(client: Client, call: Call) -> Answer:
    changed = client.context(
        call.params["context"], list(call.public_ids), resource_type=call.resource_type, type=call.type
    )
    return Answer({"changed": call.public_ids[0] in changed}, frozenset(changed))


def describe(call: Call) -> str:
    where = f"resource_type={call.resource_type!r}, type={call.type!r}"
    return f"cloudinary.uploader.add_context({call.params['context']!r}, {list(call.public_ids)!r}, {where})"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


ENDPOINT = Endpoint("context", "upload", send, describe)
HANDLER = Handler("context", SCHEMA, plan, requests, (ENDPOINT,), {"set": FIELD_VALUE, "remove": CONTEXT_KEY})

"""`explicit`: eager transformations and other explicit parameters (Upload API, not rate-limited)."""

from __future__ import annotations

from typing import Any

from handlers.protocol import Endpoint, Handler, sdk_arguments
from postupload.core.calls import Call, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification
from postupload.core.placeholders import TRANSFORMATION, URL_PART
from postupload.errors import ActionError

SCHEMA: dict[str, Any] = {
    "description": "Upload API explicit: eager transformations and other explicit parameters.",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "eager": {
            "oneOf": [
                {"$ref": "#/$defs/transformation"},
                {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/transformation"}},
            ]
        },
        "eager_async": {"type": "boolean"},
        "eager_notification_url": {"$ref": "#/$defs/url"},
        "notification_url": {"$ref": "#/$defs/url"},
        "invalidate": {"type": "boolean"},
        "overwrite": {"type": "boolean"},
        "quality_analysis": {"type": "boolean"},
        "accessibility_analysis": {"type": "boolean"},
    },
}
# Parameters that shape the whole request: where its notifications go and how its eager
# transformations are made. Two calls share one request only when these are the same on both
# (absent on both counts as the same), or one rule's settings would apply to another rule's work.
REQUEST_WIDE = ("notification_url", "eager_notification_url", "eager_async", "invalidate", "overwrite")


def plan(params: Params, notification: Notification) -> Params:
    """The exact explicit parameters; `eager` is already the SDK's `a|b` text (made at rule load)."""
    call = dict(params)
    if "eager" in call and not isinstance(call["eager"], str):
        raise ActionError(
            f"eager: a placeholder gave {type(call['eager']).__name__}, not transformation text",
            permanent=True,
        )
    return call


def requests(params: Params) -> list[Request]:
    return [Request("upload", "explicit", params)]


def merge(first: Params, second: Params) -> Params | None:
    """One explicit request for both, or None: eager lists join, request-wide settings must be the
    same, and every other parameter (an add-on, an analysis) may be on one side or equal on both."""
    if any(first.get(key) != second.get(key) for key in REQUEST_WIDE):
        return None
    if any(key in first and first[key] != value for key, value in second.items() if key != "eager"):
        return None
    joined = {**first, **{key: value for key, value in second.items() if key != "eager"}}
    eager = [item for item in str(first.get("eager", "")).split("|") if item]
    eager += [item for item in str(second.get("eager", "")).split("|") if item and item not in eager]
    if eager:
        joined["eager"] = "|".join(eager)
    return joined


def send(client: Client, call: Call) -> Answer:
    """Make the explicit call and keep what the asset's history needs of the answer."""
    (public_id,) = call.public_ids
    answer = client.explicit(public_id, resource_type=call.resource_type, type=call.type, **call.params)
    detail: dict[str, Any] = {"eager": [item.get("transformation") for item in answer.get("eager") or []]}
    if answer.get("batch_id"):
        detail["batch_id"] = answer["batch_id"]
    return Answer(detail)


def describe(call: Call) -> str:
    return f"cloudinary.uploader.explicit({sdk_arguments(call, repr(call.public_ids[0]))})"


ENDPOINT = Endpoint("explicit", "upload", send, describe, merge)
HANDLER = Handler(
    "explicit",
    SCHEMA,
    plan,
    requests,
    (ENDPOINT,),
    {"eager": TRANSFORMATION, "eager_notification_url": URL_PART, "notification_url": URL_PART},
)

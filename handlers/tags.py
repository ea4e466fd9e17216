"""`tags`: add, remove or replace tags. Adds and removes are coalesced across notifications into
Upload API `tags` calls of up to 1000 assets; a replace is sent at once."""

from __future__ import annotations

from typing import Any

from handlers.protocol import Endpoint, Handler
from postupload.core.calls import Call, Delivery, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification
from postupload.core.placeholders import TAG
from postupload.errors import ActionError

MAX_PUBLIC_IDS = 1000  # a tags call acts on at most 1000 public ids (more are silently ignored)
MAX_TAG_UPDATES = 10_000  # tags times public ids in one call
COMMANDS = ("replace", "remove", "add")  # the order a notification's changes are applied in
SDK_FUNCTIONS = {"add": "add_tag", "remove": "remove_tag", "replace": "replace_tag"}

SCHEMA: dict[str, Any] = {
    "description": "Upload API tags, coalesced across notifications (up to 1000 assets a call).",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "add": {"$ref": "#/$defs/tag_list"},
        "remove": {"$ref": "#/$defs/tag_list"},
        "replace": {"$ref": "#/$defs/tag_list"},
    },
    "not": {"anyOf": [{"required": ["replace", "add"]}, {"required": ["replace", "remove"]}]},
}


def plan(params: Params, notification: Notification) -> Params:
    """Each command with its tags, deduplicated; a filled placeholder must still be a valid tag."""
    call: Params = {}
    for command in COMMANDS:
        if command in params:
            tags = [str(tag) for tag in params[command]]
            for tag in tags:
                if "," in tag or not tag or len(tag) > 255:
                    raise ActionError(
                        f"tag {tag!r} is not valid: no commas, 1 to 255 characters", permanent=True
                    )
            call[command] = list(dict.fromkeys(tags))
    return call


def requests(params: Params) -> list[Request]:
    """A replace goes at once, alone: batched, it could land after this notification's adds."""
    deliveries: dict[str, Delivery] = {"replace": "now", "remove": "batch", "add": "batch"}
    return [
        Request("upload", "tags", {"command": command, "tags": params[command]}, deliveries[command])
        for command in COMMANDS
        if command in params
    ]


def batch_size(tags: list[str]) -> int:
    """How many public ids one call may name for these tags."""
    return max(1, min(MAX_PUBLIC_IDS, MAX_TAG_UPDATES // max(1, len(tags))))


def send(client: Client, call: Call) -> Answer:
    """One Upload API tags call on up to 1000 assets."""
    changed = client.tags(
        call.params["command"],
        list(call.params["tags"]),
        list(call.public_ids),
        resource_type=call.resource_type,
        type=call.type,
    )
    detail = {"changed": call.public_ids[0] in changed} if len(call.public_ids) == 1 else {}
    return Answer(detail, frozenset(changed))


def describe(call: Call) -> str:
    function = SDK_FUNCTIONS[call.params["command"]]
    ids = [repr(public_id) for public_id in call.public_ids]
    if call.delivery == "batch":
        ids.append("...")  # the batch's other assets
    where = f"resource_type={call.resource_type!r}, type={call.type!r}"
    return f"cloudinary.uploader.{function}({call.params['tags']!r}, [{', '.join(ids)}], {where})"


ENDPOINT = Endpoint("tags", "upload", send, describe)
HANDLER = Handler("tags", SCHEMA, plan, requests, (ENDPOINT,), dict.fromkeys(COMMANDS, TAG))

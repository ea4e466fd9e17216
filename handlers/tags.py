"""`tags`: add, remove or replace tags. Coalesced across notifications into Upload API `tags` calls."""

from __future__ import annotations

from typing import Any

from postupload.cloudinary_api import CloudinaryClient
from postupload.errors import ActionError
from postupload.notification import Target

MAX_PUBLIC_IDS = 1000  # a tags call acts on at most 1000 public ids (more are silently ignored)
MAX_TAG_UPDATES = 10_000  # tags times public ids in one call
COMMANDS = ("replace", "remove", "add")  # the order a notification's changes are applied in


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """Each command with its tags, deduplicated; a filled placeholder must still be a valid tag."""
    call: dict[str, Any] = {}
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


def batch_size(tags: list[str]) -> int:
    """How many public ids one call may name for these tags."""
    return max(1, min(MAX_PUBLIC_IDS, MAX_TAG_UPDATES // max(1, len(tags))))


def replace_now(client: CloudinaryClient, target: Target, call: dict[str, Any]) -> dict[str, Any]:
    """`replace` is sent at once, alone: batched, it could land after this notification's adds."""
    changed = run(client, "replace", call["replace"], [target.public_id], target.resource_type, target.type)
    return {"changed": target.public_id in changed}


def run(
    client: CloudinaryClient,
    command: str,
    tags: list[str],
    public_ids: list[str],
    resource_type: str,
    type: str,
) -> list[str]:
    """One Upload API tags call; answers the public ids Cloudinary changed."""
    return client.tags(command, tags, public_ids, resource_type=resource_type, type=type)

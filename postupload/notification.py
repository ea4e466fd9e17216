"""Parsing a notification body: bytes in, a checked dict out. No I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from postupload.errors import BadNotification

Notification = dict[str, Any]


@cache
def schema_validator() -> jsonschema.protocols.Validator:
    """The validator for the notification envelope schema shipped in the package."""
    text = resources.files("postupload").joinpath("schemas/notification.schema.json").read_text()
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def parse_notification(body: bytes) -> Notification:
    """The body as a notification dict, or BadNotification saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadNotification("invalid_utf8", f"body is not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadNotification("invalid_json", f"body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadNotification("not_an_object", f"body must be a JSON object, got {type(value).__name__}")
    problem = jsonschema.exceptions.best_match(schema_validator().iter_errors(value))
    if problem is not None:
        raise BadNotification("not_a_notification", f"{problem.json_path}: {problem.message}")
    return value


def notification_id(body: bytes) -> str:
    """A stable id for a body: identical deliveries are one notification."""
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True)
class Target:
    """An asset a notification is about, as every Cloudinary call on it names it."""

    resource_type: str
    type: str
    public_id: str
    asset_id: str | None = None

    @property
    def key(self) -> str:
        """A stable identity: the asset_id (which survives renames) when the notification gives it."""
        return self.asset_id or f"{self.resource_type}/{self.type}/{self.public_id}"


def targets(notification: Notification) -> list[Target]:
    """The assets a notification is about: its own public_id, else each of its `resources`.

    `resources` is a list in some notification types and a map keyed by public_id in others.
    """
    if notification.get("public_id"):
        resource_type, delivery_type, public_id = asset_ref(notification)
        return [Target(resource_type, delivery_type, public_id, notification.get("asset_id"))]
    resources = notification.get("resources")
    items: list[tuple[Any, Any]] = []
    if isinstance(resources, list):
        items = [(item.get("public_id"), item) for item in resources if isinstance(item, dict)]
    elif isinstance(resources, dict):
        items = [(public_id, item) for public_id, item in resources.items() if isinstance(item, dict)]
    return [
        Target(
            item.get("resource_type") or "image",
            item.get("type") or "upload",
            public_id,
            item.get("asset_id"),
        )
        for public_id, item in items
        if isinstance(public_id, str) and public_id
    ]


def asset_ref(notification: Notification) -> tuple[str, str, str]:
    """(resource_type, type, public_id): what every Cloudinary call on this asset names.

    Cloudinary's own defaults fill what a body leaves out (image, upload).
    """
    return (
        notification.get("resource_type") or "image",
        notification.get("type") or "upload",
        notification["public_id"],
    )

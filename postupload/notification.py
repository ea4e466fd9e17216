"""Parsing a notification body: bytes in, a checked dict out. No I/O."""

from __future__ import annotations

import hashlib
import json
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


def asset_ref(notification: Notification) -> tuple[str, str, str]:
    """(resource_type, type, public_id): what every Cloudinary call on this asset names.

    Cloudinary's own defaults fill what a body leaves out (image, upload).
    """
    return (
        notification.get("resource_type") or "image",
        notification.get("type") or "upload",
        notification["public_id"],
    )

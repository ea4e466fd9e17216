"""The rule-file JSON Schema, assembled from each action kind's parameter schema. Pure.

The copy shipped at `postupload/schemas/rules.schema.json` is for editors; a test keeps it equal to
this assembly (`postupload rules schema > postupload/schemas/rules.schema.json` rewrites it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from handlers.protocol import Handler

COMMON_DEFS: dict[str, Any] = {
    "url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
    "transformation": {
        "description": (
            "A transformation string (c_scale,w_200) or map ({crop: scale, width: 200}), "
            "as the SDK takes them."
        ),
        "oneOf": [{"type": "string", "minLength": 1}, {"type": "object", "minProperties": 1}],
    },
    "tag": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[^,]+$",
        "description": "a tag has no comma and 1 to 255 characters",
    },
    "tag_list": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/$defs/tag"}},
    "scalar": {"type": ["string", "number", "boolean"]},
}

RULE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "match", "actions"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_.-]*$",
            "description": "Unique across all rule files.",
        },
        "description": {"type": "string"},
        "enabled": {"type": "boolean", "default": True},
        "match": {
            "type": "object",
            "description": "An Amazon EventBridge event pattern over the notification body.",
        },
        "actions": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/action"}},
        "stop": {
            "type": "boolean",
            "default": False,
            "description": "true: no later rule runs for this notification.",
        },
    },
}


def assemble(handlers: Iterable[Handler]) -> dict[str, Any]:
    """The whole rule-file schema (draft 2020-12): rules, and one action kind per handler."""
    kinds = {handler.name: handler.schema for handler in handlers}
    action = {
        "description": "A one-key map: the key names the handler, the value its parameters.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
        "properties": {name: {"$ref": f"#/$defs/actions/{name}"} for name in kinds},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://postupload.dev/schemas/rules.schema.json",
        "title": "postupload rule file",
        "description": (
            "Rules that match Cloudinary notifications (EventBridge event patterns) "
            "and name the actions to run."
        ),
        "type": "object",
        "required": ["rules"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string"},
            "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        },
        "$defs": {"rule": RULE, "action": action, **COMMON_DEFS, "actions": kinds},
    }

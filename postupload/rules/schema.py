"""The rule-file JSON Schema, assembled from each action kind's parameter schema, its validators, and
its errors in words that say what to write instead. Pure.

The copy shipped at `postupload/schemas/rules.schema.json` is for editors; a test keeps it equal to
this assembly (`postupload rules schema > postupload/schemas/rules.schema.json` rewrites it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from typing import Any

import jsonschema
import jsonschema_rs

from handlers import REGISTRY
from handlers.protocol import Handler
from postupload.rules import field_checks

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


@cache
def rules_schema() -> dict[str, Any]:
    """The rule-file JSON Schema, assembled from the registered action kinds."""
    return assemble(REGISTRY.values())


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = rules_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # With its local $refs put in place: resolving them cost a third of loading 10,000 rules.
    return validator_class(_inlined(schema, schema.get("$defs", {})))


@cache
def _fast_validator() -> Any:
    """The same schema in jsonschema-rs (Rust, ~10x faster): it says whether a document is valid;
    only an invalid one goes through jsonschema, whose errors our messages are made from."""
    schema = rules_schema()
    return jsonschema_rs.validator_for(_inlined(schema, schema.get("$defs", {})))


def schema_errors(document: Any) -> list[jsonschema.ValidationError]:
    """The document's schema errors, by path; none, at Rust speed, for a valid document."""
    try:
        if _fast_validator().is_valid(document):
            return []
    except (ValueError, TypeError):  # not JSON-shaped (a YAML key that is not a string): say why below
        pass
    found = [item for error in _validator().iter_errors(document) for item in _at_items(error)]
    return sorted(found, key=lambda e: list(map(str, e.absolute_path)))


def _at_items(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """A list that fits none of a field's alternatives ("a value or a list of them") is wrong in
    its items when the list alternative fails only there: say which items, by index, and why."""
    if error.validator not in ("oneOf", "anyOf") or not isinstance(error.instance, list):
        return [error]
    by_item: dict[int, list[jsonschema.ValidationError]] = {}
    for inner in error.context or []:
        if inner.relative_path and isinstance(inner.relative_path[0], int):
            by_item.setdefault(inner.relative_path[0], []).append(inner)
    if not by_item:
        return [error]
    return [jsonschema.exceptions.best_match(by_item[index]) for index in sorted(by_item)]


def _inlined(value: Any, definitions: dict[str, Any]) -> Any:
    """The schema with every "#/$defs/a/b" reference replaced by what it names (none is recursive)."""
    if isinstance(value, dict):
        reference = value.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/") and len(value) == 1:
            target: Any = definitions
            for part in reference.removeprefix("#/$defs/").split("/"):
                target = target[part]
            return _inlined(target, definitions)
        return {key: _inlined(item, definitions) for key, item in value.items() if key != "$defs"}
    if isinstance(value, list):
        return [_inlined(item, definitions) for item in value]
    return value


def unknown_keys(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """(key, message) for each key an object may not have, with the nearest allowed one."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = list(schema.get("properties", {}))
    if schema.get("maxProperties") == 1 and "explicit" in allowed:
        what = "action"
    elif "match" in allowed and "actions" in allowed:
        what = "rule key"
    else:
        what = "parameter"
    found = []
    for key in (key for key in error.instance if key not in allowed):
        if what == "rule key" and key in field_checks.field_names():
            message = f"'{key}' is a notification field: conditions go under match, as match: {{{key}: ...}}"
        else:
            guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            message = f"unknown {what} '{key}'{hint}; expected one of: {', '.join(allowed)}"
        found.append((str(key), message))
    return found


def schema_message(error: jsonschema.ValidationError) -> str:
    """The schema's complaint in the words of rule files: name what is wrong and what is allowed."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return "; ".join(message for _, message in unknown_keys(error))
    if error.validator == "pattern" and list(error.absolute_path)[-1:] == ["name"]:
        return (
            f"{error.instance!r} is not a valid rule name: use lowercase letters, digits, '.', '_' and '-',"
            " starting with a letter or digit (e.g. product-thumbnails)"
        )
    if error.validator in ("pattern", "oneOf", "anyOf") and schema.get("description"):
        return f"{error.instance!r} is not valid: {schema['description']}"
    return error.message

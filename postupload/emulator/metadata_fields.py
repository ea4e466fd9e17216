"""Structured metadata fields (Admin API `metadata_fields`): defined, listed, changed and deleted, and
the values an asset may take checked against them."""

from __future__ import annotations

import secrets
from typing import Any

from postupload.emulator.wire import ApiError

TYPES = ("string", "integer", "date", "enum", "set")


class MetadataFields:
    def __init__(self) -> None:
        self.fields: dict[str, dict[str, Any]] = {}

    def add(self, field: dict[str, Any]) -> dict[str, Any]:
        kind = field.get("type")
        if kind not in TYPES:
            raise ApiError(400, f"Invalid metadata field type {kind!r}; expected one of {', '.join(TYPES)}")
        if not field.get("label"):
            raise ApiError(400, "Missing required parameter - label")
        external_id = str(field.get("external_id") or secrets.token_hex(8))
        if external_id in self.fields:
            raise ApiError(409, f"A metadata field with external_id {external_id} already exists")
        stored = {
            "external_id": external_id,
            "label": field["label"],
            "type": kind,
            "mandatory": bool(field.get("mandatory", False)),
            "default_disabled": False,
            "restrictions": field.get("restrictions") or {},
        }
        if field.get("default_value") is not None:
            stored["default_value"] = field["default_value"]
        if kind in ("enum", "set"):
            stored["datasource"] = {"values": _values(field.get("datasource"))}
        self.fields[external_id] = stored
        return stored

    def get(self, external_id: str) -> dict[str, Any]:
        found = self.fields.get(external_id)
        if found is None:
            raise ApiError(404, f"Custom metadata field {external_id} not found")
        return found

    def update(self, external_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        field = self.get(external_id)
        for name in ("label", "mandatory", "default_value", "restrictions"):
            if name in changes:
                field[name] = changes[name]
        if "datasource" in changes and field["type"] in ("enum", "set"):
            field["datasource"] = {"values": _values(changes["datasource"])}
        return field

    def delete(self, external_id: str) -> dict[str, Any]:
        self.get(external_id)
        del self.fields[external_id]
        return {"message": "ok"}

    def check(self, values: dict[str, Any]) -> None:
        """Values for defined fields must fit them; a field nobody defined is taken as given (the
        emulator's product tests set fields they never define: lenient where Cloudinary is strict)."""
        for external_id, value in values.items():
            field = self.fields.get(external_id)
            if field is None or value in ("", None):
                continue
            if field["type"] in ("enum", "set"):
                allowed = {entry["external_id"] for entry in field["datasource"]["values"]}
                chosen = value if isinstance(value, list) else [value]
                unknown = [item for item in chosen if item not in allowed]
                if unknown or (field["type"] == "enum" and len(chosen) != 1):
                    raise ApiError(400, f"Value {value!r} is not valid for field {external_id}")
            elif field["type"] == "integer" and not str(value).lstrip("-").isdigit():
                raise ApiError(400, f"Value {value!r} is not valid for field {external_id}")


def _values(datasource: Any) -> list[dict[str, Any]]:
    values = datasource.get("values") if isinstance(datasource, dict) else None
    if not isinstance(values, list):
        raise ApiError(400, "A set or enum field needs datasource.values")
    return [
        {"external_id": str(item.get("external_id") or secrets.token_hex(4)), "value": item.get("value")}
        for item in values
        if isinstance(item, dict)
    ]

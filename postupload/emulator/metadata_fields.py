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
            "default_value": field.get("default_value"),
            "validation": field.get("validation"),
        }
        if "allow_dynamic_list_values" in field:
            stored["allow_dynamic_list_values"] = bool(field["allow_dynamic_list_values"])
        if kind in ("enum", "set"):
            stored["datasource"] = {"values": _values(field.get("datasource"))}
        _check_default(stored)
        self.fields[external_id] = stored
        return self.shown(stored)

    @staticmethod
    def shown(field: dict[str, Any]) -> dict[str, Any]:
        """A field as the API shows it: its datasource without the entries deleted (inactive)."""
        if "datasource" not in field:
            return field
        return {**field, "datasource": active(field["datasource"])}

    def get(self, external_id: str) -> dict[str, Any]:
        return self.shown(self._field(external_id))

    def _field(self, external_id: str) -> dict[str, Any]:
        found = self.fields.get(external_id)
        if found is None:
            raise ApiError(404, f"Custom metadata field {external_id} not found")
        return found

    def update(self, external_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a field; its external_id and type cannot change (given, they are ignored)."""
        field = self._field(external_id)
        changed = dict(field)
        for name in ("label", "mandatory", "default_value", "restrictions", "validation"):
            if name in changes:
                changed[name] = changes[name]
        if "datasource" in changes and field["type"] in ("enum", "set"):
            changed["datasource"] = {"values": _values(changes["datasource"])}
        _check_default(changed)
        field.update(changed)
        return self.shown(field)

    def delete(self, external_id: str) -> dict[str, Any]:
        self._field(external_id)
        del self.fields[external_id]
        return {"message": "ok"}

    def update_datasource(self, external_id: str, values: Any) -> dict[str, Any]:
        """Entries given by external_id take their new value; new ones are added."""
        entries = self._datasource(external_id)["values"]
        by_id = {entry["external_id"]: entry for entry in entries}
        for given in _values({"values": values}):
            if given["external_id"] in by_id:
                by_id[given["external_id"]]["value"] = given["value"]
            else:
                entries.append(given)
        return active(self._datasource(external_id))

    def set_entries_state(self, external_id: str, entry_ids: Any, state: str) -> dict[str, Any]:
        """Delete (inactive) or restore (active) entries: a deleted entry is kept, and hidden."""
        wanted = set(entry_ids if isinstance(entry_ids, list) else [entry_ids])
        for entry in self._datasource(external_id)["values"]:
            if entry["external_id"] in wanted:
                entry["state"] = state
        return active(self._datasource(external_id))

    def reorder_datasource(self, external_id: str, order_by: Any, direction: Any) -> dict[str, Any]:
        if order_by != "value" or direction not in (None, "asc", "desc"):
            raise ApiError(400, "order_by is value; direction asc (default) or desc")
        entries = self._datasource(external_id)["values"]
        entries.sort(key=lambda entry: str(entry["value"]), reverse=direction == "desc")
        return active(self._datasource(external_id))

    def _datasource(self, external_id: str) -> dict[str, Any]:
        field = self._field(external_id)
        if "datasource" not in field:
            raise ApiError(400, f"Metadata field {external_id} has no datasource (not enum or set)")
        datasource: dict[str, Any] = field["datasource"]
        return datasource

    def check(self, values: dict[str, Any]) -> None:
        """Values for defined fields must fit them; a field nobody defined is taken as given (the
        emulator's product tests set fields they never define: lenient where Cloudinary is strict)."""
        for external_id, value in values.items():
            field = self.fields.get(external_id)
            if field is None or value in ("", None):
                continue
            if field["type"] in ("enum", "set"):
                allowed = {entry["external_id"] for entry in active(field["datasource"])["values"]}
                chosen = value if isinstance(value, list) else [value]
                unknown = [item for item in chosen if item not in allowed]
                if unknown or (field["type"] == "enum" and len(chosen) != 1):
                    raise ApiError(400, f"Value {value!r} is not valid for field {external_id}")
            elif field["type"] == "integer" and not str(value).lstrip("-").isdigit():
                raise ApiError(400, f"Value {value!r} is not valid for field {external_id}")


def active(datasource: dict[str, Any]) -> dict[str, Any]:
    """The entries in use, as {value, external_id}."""
    entries = [entry for entry in datasource["values"] if entry.get("state", "active") == "active"]
    return {"values": [{"value": entry["value"], "external_id": entry["external_id"]} for entry in entries]}


def _check_default(field: dict[str, Any]) -> None:
    """A default value must pass the field's validation (less_than / greater_than, `equals` to
    include the bound, and `and` of several): Cloudinary answers 400 otherwise."""
    default, validation = field.get("default_value"), field.get("validation")
    if default is None or not isinstance(validation, dict):
        return
    if not _valid(default, validation):
        raise ApiError(400, f"default_value {default!r} does not pass the field's validation")


def _valid(value: Any, rule: dict[str, Any]) -> bool:
    kind = rule.get("type")
    if kind in ("and", "or"):
        results = [_valid(value, inner) for inner in rule.get("rules") or [] if isinstance(inner, dict)]
        return all(results) if kind == "and" else any(results)
    if kind in ("less_than", "greater_than"):
        bound = rule.get("value")
        left: Any = value
        right: Any = bound
        if not isinstance(bound, int | float):  # dates: ISO text compares in time order
            left, right = str(value), str(bound)
        try:
            if rule.get("equals") and left == right:
                return True
            return bool(left < right) if kind == "less_than" else bool(left > right)
        except TypeError:
            return False
    return True  # strregex, enum and others: not checked by the emulator


def _values(datasource: Any) -> list[dict[str, Any]]:
    values = datasource.get("values") if isinstance(datasource, dict) else None
    if not isinstance(values, list):
        raise ApiError(400, "A set or enum field needs datasource.values")
    return [
        {"value": item.get("value"), "external_id": str(item.get("external_id") or secrets.token_hex(4))}
        for item in values
        if isinstance(item, dict)
    ]

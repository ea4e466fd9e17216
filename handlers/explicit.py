"""`explicit`: eager transformations and other explicit parameters (Upload API, not rate-limited)."""

from __future__ import annotations

from typing import Any

from cloudinary.utils import build_eager

from postupload.cloudinary_api import CloudinaryClient
from postupload.notification import Target


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """The exact explicit parameters: eager maps become the SDK's transformation strings."""
    call = dict(params)
    if "eager" in call:
        # build_eager is the SDK's own serialisation, so what we plan is what goes on the wire.
        call["eager"] = build_eager(call["eager"])
    return call


def share(calls: list[dict[str, Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    """Group calls that one explicit request can make: (indices, the combined call), in order.

    Eager lists join; every other parameter must agree (or be absent) for two calls to share.
    """
    groups: list[tuple[list[int], dict[str, Any]]] = []
    for index, call in enumerate(calls):
        for members, combined in groups:
            if all(combined.get(key, value) == value for key, value in call.items() if key != "eager"):
                members.append(index)
                _add(combined, call)
                break
        else:
            groups.append(([index], _add({}, call)))
    return groups


def _add(combined: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    for key, value in call.items():
        if key == "eager":
            eager = [item for item in str(combined.get("eager", "")).split("|") if item]
            eager += [item for item in value.split("|") if item and item not in eager]
            combined["eager"] = "|".join(eager)
        else:
            combined[key] = value
    return combined


def run(client: CloudinaryClient, target: Target, call: dict[str, Any]) -> dict[str, Any]:
    """Make the explicit call and keep what the asset's history needs of the answer."""
    answer = client.explicit(target.public_id, resource_type=target.resource_type, type=target.type, **call)
    eager = answer.get("eager") or []
    detail = {"eager": [item.get("transformation") for item in eager]}
    if answer.get("batch_id"):
        detail["batch_id"] = answer["batch_id"]
    return detail

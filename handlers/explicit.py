"""`explicit`: eager transformations and other explicit parameters (Upload API, not rate-limited)."""

from __future__ import annotations

from typing import Any

from cloudinary.utils import build_eager

from postupload.cloudinary_api import CloudinaryClient
from postupload.notification import Notification, asset_ref


def plan(params: dict[str, Any], notification: Notification) -> dict[str, Any]:
    """The exact explicit parameters: eager maps become the SDK's transformation strings."""
    call = dict(params)
    if "eager" in call:
        # build_eager is the SDK's own serialisation, so what we plan is what goes on the wire.
        call["eager"] = build_eager(call["eager"])
    return call


def run(call: dict[str, Any], notification: Notification, client: CloudinaryClient) -> dict[str, Any]:
    """Make the explicit call and keep what the asset's history needs of the answer."""
    resource_type, delivery_type, public_id = asset_ref(notification)
    answer = client.explicit(public_id, resource_type=resource_type, type=delivery_type, **call)
    eager = answer.get("eager") or []
    return {
        "public_id": answer.get("public_id", public_id),
        "eager": [item.get("transformation") for item in eager],
        "batch_id": answer.get("batch_id"),
    }

"""`addon`: background removal, auto-tagging, OCR, detection, moderation, raw conversion.

Add-ons are explicit parameters, so they travel in the notification's one explicit call.
"""

from __future__ import annotations

from typing import Any


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """The explicit parameters, as the SDK takes them."""
    return dict(params)

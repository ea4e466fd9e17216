"""Action handlers, one module per kind, registered by the name rules use.

Each handler's `plan` turns a rule's (placeholder-filled) parameters into the exact call parameters,
purely; `way` says how the executor makes the call: shared explicit request, coalesced tags batch,
a direct Upload API call, or the budgeted Admin API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from handlers import addon, context, explicit, metadata, moderation, tags

Params = dict[str, Any]
Way = Literal["explicit", "tags", "upload", "admin"]


@dataclass(frozen=True)
class Handler:
    name: str
    plan: Callable[[Params], Params]
    way: Way
    sdk_call: str  # the SDK function, as `rules explain` shows it
    run: Callable[..., Any] | None = None


REGISTRY: dict[str, Handler] = {
    handler.name: handler
    for handler in [
        Handler("explicit", explicit.plan, "explicit", "cloudinary.uploader.explicit", explicit.run),
        Handler("addon", addon.plan, "explicit", "cloudinary.uploader.explicit", explicit.run),
        Handler("tags", tags.plan, "tags", "cloudinary.uploader.add_tag/remove_tag/replace_tag"),
        Handler("context", context.plan, "upload", "cloudinary.uploader.add_context", context.run),
        Handler("metadata", metadata.plan, "upload", "cloudinary.uploader.update_metadata", metadata.run),
        Handler("moderation", moderation.plan, "admin", "cloudinary.api.update", moderation.run),
    ]
}

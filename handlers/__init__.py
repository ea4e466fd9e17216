"""Action handlers, one module per kind, registered by the name rules use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers import explicit
from postupload.cloudinary_api import CloudinaryClient
from postupload.notification import Notification

Params = dict[str, Any]


@dataclass(frozen=True)
class Handler:
    """`plan` turns rule parameters into the exact call (pure); `run` makes it."""

    name: str
    plan: Callable[[Params, Notification], Params]
    run: Callable[[Params, Notification, CloudinaryClient], dict[str, Any]]


REGISTRY: dict[str, Handler] = {
    handler.name: handler for handler in [Handler("explicit", explicit.plan, explicit.run)]
}

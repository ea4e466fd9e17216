"""The one protocol every action kind follows. Pure: no Redis, RQ, Flask, SDK or network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postupload.core.calls import Api, Call, Params, Request
from postupload.core.client import Answer, Client
from postupload.core.notification import Notification
from postupload.core.placeholders import Slot

Sender = Callable[[Client, Call], Answer]


@dataclass(frozen=True)
class Endpoint:
    """A Cloudinary endpoint our calls go to, and how a call to it is made and shown."""

    name: str
    api: Api
    send: Sender  # makes the call through our client; raises ActionError / RateLimitError
    describe: Callable[[Call], str]  # the call as SDK code, for `rules explain`
    # Two calls to this endpoint on one asset that one request can make: their joint parameters,
    # or None when they must stay apart. None here: every call goes alone.
    merge: Callable[[Params, Params], Params | None] | None = None


@dataclass(frozen=True)
class Handler:
    """An action kind: `name` is the key rules write (`- tags: {...}`)."""

    name: str
    schema: dict[str, Any]  # JSON Schema of the parameters: the kind's fragment of the rule-file schema
    # The exact call parameters from the rule's (placeholder-filled) parameters and the notification;
    # ActionError(permanent=True) when this notification cannot make the call.
    plan: Callable[[Params, Notification], Params]
    requests: Callable[[Params], list[Request]]  # what those parameters ask of one asset
    endpoints: tuple[Endpoint, ...] = ()  # the endpoints whose calls this kind knows how to send
    # Where each top-level parameter's placeholders stand, so a filled value cannot reshape the call
    # (placeholders.Slot); a parameter not named here takes any text but control characters.
    slots: dict[str, Slot] = field(default_factory=dict)


def sdk_arguments(call: Call, *first: str, params: Params | None = None) -> str:
    """`first, resource_type=..., type=..., key=value...`: a call's arguments as Python source."""
    rest = params if params is not None else call.params
    where = [f"resource_type={call.resource_type!r}", f"type={call.type!r}"]
    return ", ".join([*first, *where, *(f"{key}={value!r}" for key, value in rest.items())])

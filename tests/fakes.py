"""Test doubles of our own interfaces (never of the SDK or Redis): a recording Cloudinary client and a
clock that moves only when told."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postupload.core.client import RateLimit


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingClient:
    """Implements `postupload.core.client.Client`: records every call and answers as Cloudinary would.

    `fail` may raise for a call (it gets the endpoint and the call's arguments) to play an error.
    """

    timeout: float = 5.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: Callable[[str, dict[str, Any]], None] | None = None
    rate_limit: RateLimit | None = None

    def _record(self, endpoint: str, **arguments: Any) -> None:
        call = {"endpoint": endpoint, **arguments}
        self.calls.append(call)
        if self.fail is not None:
            self.fail(endpoint, call)

    def explicit(self, public_id: str, *, resource_type: str, type: str, **params: Any) -> dict[str, Any]:
        self._record("explicit", public_id=public_id, resource_type=resource_type, type=type, params=params)
        eager = [{"transformation": item} for item in str(params.get("eager", "")).split("|") if item]
        return {"public_id": public_id, "eager": eager}

    def tags(
        self, command: str, tags: list[str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        self._record(
            "tags", command=command, tags=tags, public_ids=public_ids, resource_type=resource_type, type=type
        )
        return list(public_ids)

    def context(
        self, pairs: dict[str, str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        self._record("context", pairs=pairs, public_ids=public_ids, resource_type=resource_type, type=type)
        return list(public_ids)

    def metadata(
        self, values: dict[str, Any], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        self._record("metadata", values=values, public_ids=public_ids, resource_type=resource_type, type=type)
        return list(public_ids)

    def update(
        self, public_id: str, *, resource_type: str, type: str, **params: Any
    ) -> tuple[dict[str, Any], RateLimit | None]:
        self._record("update", public_id=public_id, resource_type=resource_type, type=type, params=params)
        return {"public_id": public_id, **params}, self.rate_limit

    def endpoints(self) -> list[str]:
        return [call["endpoint"] for call in self.calls]

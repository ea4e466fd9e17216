"""What our code asks of Cloudinary, as a protocol: the SDK shell implements it, tests fake it. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RateLimit:
    """What an Admin API answer says of the budget: calls left and when the window resets."""

    limit: int
    remaining: int
    reset: float  # unix seconds


class Client(Protocol):
    """The Cloudinary calls postupload makes, each on one account with a timeout."""

    timeout: float

    def explicit(self, public_id: str, *, resource_type: str, type: str, **params: Any) -> dict[str, Any]:
        """Upload API explicit: eager transformations and add-ons; answers the asset."""
        ...

    def tags(
        self, command: str, tags: list[str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API tags on up to 1000 assets; answers the public ids Cloudinary changed."""
        ...

    def context(
        self, pairs: dict[str, str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API context add: merges the pairs (an empty value removes that key)."""
        ...

    def metadata(
        self, values: dict[str, Any], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API metadata: sets structured metadata fields by external id."""
        ...

    def update(
        self, public_id: str, *, resource_type: str, type: str, **params: Any
    ) -> tuple[dict[str, Any], RateLimit | None]:
        """Admin API update (rate-limited); the resource and what the headers say of the budget."""
        ...


@dataclass(frozen=True)
class Answer:
    """What a call's answer tells us: a detail for the asset's history, and what it changed."""

    detail: dict[str, Any] = field(default_factory=dict)
    changed: frozenset[str] = frozenset()  # public ids changed (tags, context, metadata)
    rate_limit: RateLimit | None = None  # Admin API answers only

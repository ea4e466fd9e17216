"""The calls a notification causes, as values: what the worker performs, what explain, rule tests
and previews show. Pure data; `planning.py` computes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from postupload.core.notification import Target

Params = dict[str, Any]
Api = Literal["upload", "admin"]
# now: sent as the notification is worked; batch: joins a tags batch with other assets' changes
# (sent within about 2 s, up to 1000 assets a call); budget: an Admin API call, within the shared
# rate-limit budget (or scheduled for its reset).
Delivery = Literal["now", "batch", "budget"]


class Status(StrEnum):
    """What became of one planned action on one asset (history, job results, metrics)."""

    OK = "ok"  # Cloudinary answered, the change is made
    SKIPPED = "skipped"  # done already (a done mark), or by another job in hand
    BATCHED = "batched"  # a tag change that joined its batch; sent with it
    DEFERRED = "deferred"  # the Admin API budget is spent: the job comes back when it resets
    CAPPED = "capped"  # over the actions an asset may have (POSTUPLOAD_ASSET_ACTION_CAP)
    FAILED = "failed"  # refused or failing: the job fails with the reason


@dataclass(frozen=True)
class PlannedAction:
    """One action of a matched rule, its placeholders filled and its parameters exact."""

    rule: str
    index: int  # position of the action in its rule, part of its identity
    action: str
    params: Params
    error: str | None = None  # why it cannot be made (a placeholder the notification cannot fill)

    def as_dict(self) -> dict[str, Any]:
        """The shape rule tests write: {rule: NAME, ACTION: PARAMS} (or {rule, ACTION, error})."""
        if self.error:
            return {"rule": self.rule, self.action: None, "error": self.error}
        return {"rule": self.rule, self.action: self.params}


@dataclass(frozen=True)
class Request:
    """What a handler asks for one action on one asset: an endpoint, its parameters, how it goes."""

    api: Api
    endpoint: str
    params: Params
    delivery: Delivery = "now"


@dataclass(frozen=True)
class ActionRef:
    """A rule action a call carries."""

    rule: str
    index: int
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "index": self.index, "action": self.action}


@dataclass(frozen=True)
class Call:
    """One Cloudinary API call, exactly as it will be made.

    `key` is its idempotency key: the product environment, the asset, which occurrence of the asset
    (its version), and a digest of what the call does (endpoint, target, parameters). The same call
    for the same asset version is made once, whichever job or rule asks; an edited call is new."""

    api: Api
    endpoint: str
    resource_type: str
    type: str
    public_ids: tuple[str, ...]
    params: Params
    delivery: Delivery
    actions: tuple[ActionRef, ...]
    key: str = ""

    @property
    def rules(self) -> list[str]:
        return list(dict.fromkeys(action.rule for action in self.actions))

    def as_dict(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "endpoint": self.endpoint,
            "resource_type": self.resource_type,
            "type": self.type,
            "public_ids": list(self.public_ids),
            "params": self.params,
            "delivery": self.delivery,
            "actions": [action.as_dict() for action in self.actions],
            "key": self.key,
        }


@dataclass(frozen=True)
class Refusal:
    """A planned action that cannot be made on an asset, and why (no call is made for it)."""

    action: ActionRef
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.action.as_dict(), "error": self.error}


@dataclass(frozen=True)
class AssetPlan:
    """Everything one asset of the notification gets."""

    target: Target
    calls: tuple[Call, ...]
    refused: tuple[Refusal, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "asset": {
                "public_id": self.target.public_id,
                "resource_type": self.target.resource_type,
                "type": self.target.type,
                "asset_id": self.target.asset_id,
            },
            "calls": [call.as_dict() for call in self.calls],
            "refused": [refusal.as_dict() for refusal in self.refused],
        }


@dataclass(frozen=True)
class Plan:
    """What one notification causes: the rules it matched, and each asset's calls."""

    rules: tuple[str, ...]
    actions: tuple[PlannedAction, ...]
    assets: tuple[AssetPlan, ...]
    problems: tuple[str, ...] = field(default=())  # assets that could not be told apart (nothing guessed)

    @property
    def calls(self) -> list[Call]:
        return [call for asset in self.assets for call in asset.calls]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "assets": [asset.as_dict() for asset in self.assets],
            "problems": list(self.problems),
        }

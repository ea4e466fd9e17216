"""The Upload and Admin API operations on the emulator's assets, and the record of every call."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from postupload.config import Account
from postupload.emulator import listing
from postupload.emulator.assets import Asset, apply_tags, context_change, merge_pairs
from postupload.emulator.faults import Faults, RateLimit
from postupload.emulator.notifications import DEFAULT_RETRY_DELAYS, Notifier
from postupload.emulator.wire import (
    CONTEXT_COMMANDS,
    MAX_PUBLIC_IDS,
    MAX_TAG_UPDATES,
    MAX_TAGS_PER_ASSET,
    TAG_COMMANDS,
    ApiError,
    metadata_value,
    parse_pairs,
    required,
    tag_list,
    truthy,
)

ADDONS = ("background_removal", "categorization", "auto_tagging", "ocr", "detection", "raw_convert")
AUTOMATIC_MODERATION = (
    "webpurify",
    "aws_rek",
    "aws_rek_video",
    "google_video_moderation",
    "perception_point",
)


class Emulator:
    """One product environment's assets, faults, Admin budget and notifications; `app.py` serves it."""

    def __init__(
        self,
        account: Account,
        notify_url: str | None = None,
        *,
        faults: Faults | None = None,
        admin_budget: int = 500,
        admin_window: int = 3600,
        retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
        signature_algorithm: str = "sha1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.clock = clock  # the Admin API windows follow it
        self.faults = faults or Faults()
        self.rate_limit = RateLimit(admin_budget, admin_window)
        self.assets: dict[tuple[str, str, str], Asset] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.notifier = Notifier(
            account, notify_url, self.faults, self.lock, retry_delays, signature_algorithm
        )

    # --- assets -------------------------------------------------------------------------------

    def add_asset(self, values: dict[str, Any]) -> Asset:
        """Create (or replace) an asset from upload fields (unknown fields are ignored)."""
        known = {f.name for f in fields(Asset)} - {"derived", "derived_generated", "addons"}
        kept = {key: value for key, value in values.items() if key in known and value is not None}
        context = kept.get("context")
        if isinstance(context, dict) and isinstance(context.get("custom"), dict):
            kept["context"] = context["custom"]
        if kept.get("tags") is not None:
            kept["tags"] = list(kept["tags"])
        moderation = values.get("moderation")
        if isinstance(moderation, str):
            kept["moderation_kind"] = moderation
            kept["moderation_status"] = "pending" if moderation == "manual" else "approved"
        kept.setdefault("public_id", secrets.token_hex(10))
        asset = Asset(**kept)
        with self.lock:
            self.assets[(asset.resource_type, asset.type, asset.public_id)] = asset
        return asset

    def upload(self, values: dict[str, Any]) -> dict[str, Any]:
        """Create an asset and send the upload notification Cloudinary would send."""
        asset = self.add_asset(values)
        if values.get("notify", True):
            self.notifier.send(self.notifier.upload(asset), values.get("notification_url"))
            if asset.moderation_kind in AUTOMATIC_MODERATION:
                self.notifier.send(self.notifier.moderation(asset), values.get("notification_url"))
        return asset.resource(self.account.cloud_name)

    def _asset(self, resource_type: str, delivery_type: str, public_id: str) -> Asset:
        asset = self.assets.get((resource_type, delivery_type, public_id))
        if asset is None:
            raise ApiError(404, f"Resource not found - {public_id}")
        return asset

    # --- Upload API ---------------------------------------------------------------------------

    def explicit(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API explicit: (re)generate eager transformations, run add-ons, answer the asset."""
        public_id = required(params, "public_id")
        asset = self._asset(resource_type, params.get("type") or "upload", public_id)
        eager = [item for item in str(params.get("eager") or "").split("|") if item]
        is_async = truthy(params.get("eager_async"))
        with self.lock:
            for transformation in eager:
                # Existing eager images are always regenerated, and billed, by explicit.
                asset.derived_generated += 1
                if transformation not in asset.derived:
                    asset.derived.append(transformation)
            for name in ADDONS:
                if params.get(name):
                    asset.addons.setdefault(name, []).append(str(params[name]))
            moderation = params.get("moderation")
            if moderation:
                asset.addons.setdefault("moderation", []).append(str(moderation))
                kinds = str(moderation).split("|")
                asset.moderation_kind = kinds[0]
                asset.moderation_status = "pending" if kinds[0] == "manual" else "approved"
        answer = asset.resource(self.account.cloud_name)
        url = params.get("notification_url")
        if is_async and eager:
            batch_id = secrets.token_hex(32)
            answer["batch_id"] = batch_id
            answer["eager"] = [{"transformation": item, "status": "processing"} for item in eager]
            self.notifier.send(
                self.notifier.eager(asset, eager, batch_id), params.get("eager_notification_url") or url
            )
        else:
            answer["eager"] = [asset.eager_item(self.account.cloud_name, item) for item in eager]
        if moderation and asset.moderation_kind in AUTOMATIC_MODERATION:
            self.notifier.send(self.notifier.moderation(asset), url)
        if params.get("background_removal"):
            self.notifier.send(self.notifier.info(asset, "background_removal"), url)
        return answer

    def _targets(self, resource_type: str, params: dict[str, Any]) -> list[Asset]:
        """The assets a tags/context/metadata call names: the first 1000 known ids, others ignored."""
        ids = params.get("public_ids")
        ids = [ids] if isinstance(ids, str) else ids
        if not ids:
            raise ApiError(400, "Missing required parameter - public_ids")
        delivery_type = params.get("type") or "upload"
        found = (
            self.assets.get((resource_type, delivery_type, public_id)) for public_id in ids[:MAX_PUBLIC_IDS]
        )
        return [asset for asset in found if asset is not None]

    def tags(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API tags: incremental changes to many assets at once."""
        command = required(params, "command")
        if command not in TAG_COMMANDS:
            raise ApiError(400, f"Invalid command {command!r}; expected one of {', '.join(TAG_COMMANDS)}")
        tags = [] if command == "remove_all" else tag_list(required(params, "tag"))
        if command == "set_exclusive" and len(tags) != 1:
            raise ApiError(400, "set_exclusive takes exactly one tag")
        ids = params.get("public_ids") or []
        if len(tags) * min(len(ids), MAX_PUBLIC_IDS) > MAX_TAG_UPDATES:
            raise ApiError(400, f"Too many tag updates: {len(tags)} tags x {len(ids)} public ids > 10000")
        with self.lock:
            targets = self._targets(resource_type, params)
            before = {id(asset): list(asset.tags) for asset in self.assets.values()}
            new_tags = {id(asset): apply_tags(asset.tags, command, tags) for asset in targets}
            for asset in targets:
                if len(new_tags[id(asset)]) > MAX_TAGS_PER_ASSET:
                    raise ApiError(400, f"Asset {asset.public_id} would have more than 1000 tags")
            for asset in targets:
                asset.tags = new_tags[id(asset)]
            if command == "set_exclusive":
                for asset in self.assets.values():
                    if id(asset) not in new_tags and tags[0] in asset.tags:
                        asset.tags.remove(tags[0])
            changed = [asset for asset in self.assets.values() if asset.tags != before[id(asset)]]
        if changed:
            resources = [
                {
                    "asset_id": asset.asset_id,
                    "public_id": asset.public_id,
                    "resource_type": asset.resource_type,
                    "type": asset.type,
                    "added": [tag for tag in asset.tags if tag not in before[id(asset)]],
                    "removed": [tag for tag in before[id(asset)] if tag not in asset.tags],
                }
                for asset in changed
            ]
            self.notifier.changed("resource_tags_changed", resources, params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    def context(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API context: `add` merges (an empty value deletes that key), `remove_all` clears."""
        command = required(params, "command")
        if command not in CONTEXT_COMMANDS:
            raise ApiError(400, f"Invalid command {command!r}; expected one of {', '.join(CONTEXT_COMMANDS)}")
        pairs = parse_pairs(required(params, "context")) if command == "add" else {}
        with self.lock:
            targets = self._targets(resource_type, params)
            changes: dict[str, dict[str, Any]] = {}
            for asset in targets:
                before = dict(asset.context)
                if command == "remove_all":
                    asset.context = {}
                else:
                    merge_pairs(asset.context, pairs)
                if asset.context != before:
                    changes[asset.public_id] = context_change(asset, before)
        if changes:
            self.notifier.changed("resource_context_changed", changes, params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    def metadata(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API metadata: set structured metadata values (an empty value clears the field)."""
        pairs = parse_pairs(required(params, "metadata"))
        values = {key: metadata_value(value) for key, value in pairs.items()}
        with self.lock:
            targets = self._targets(resource_type, params)
            changes: dict[str, dict[str, Any]] = {}
            for asset in targets:
                before = dict(asset.metadata)
                merge_pairs(asset.metadata, values)
                if asset.metadata != before:
                    changes[asset.public_id] = {
                        "asset_id": asset.asset_id,
                        "resource_type": asset.resource_type,
                        "type": asset.type,
                        "previous_metadata": before,
                        "new_metadata": dict(asset.metadata),
                    }
        if changes:
            self.notifier.changed("resource_metadata_changed", changes, params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    # --- Admin API ----------------------------------------------------------------------------

    def update(self, resource_type: str, delivery_type: str, public_id: str, params: dict[str, Any]) -> Any:
        """Admin API update: moderation status, tags (replacing the set), context, metadata, add-ons."""
        status = params.get("moderation_status")
        if status is not None and status not in ("approved", "rejected"):
            raise ApiError(400, f"Invalid moderation_status {status!r}; expected approved or rejected")
        tags = tag_list(params["tags"]) if params.get("tags") else None
        context = parse_pairs(params["context"]) if params.get("context") else None
        metadata = parse_pairs(params["metadata"]) if params.get("metadata") else None
        with self.lock:
            asset = self._asset(resource_type, delivery_type, public_id)
            if tags is not None:
                asset.tags = list(dict.fromkeys(tags))
            if context is not None:
                asset.context = {key: value for key, value in context.items() if value != ""}
            if metadata is not None:
                asset.metadata.update({key: metadata_value(value) for key, value in metadata.items()})
            for name in ADDONS:
                if params.get(name):
                    asset.addons.setdefault(name, []).append(str(params[name]))
            moderated = status is not None and status != asset.moderation_status
            if status is not None:
                asset.moderation_status = status
                asset.moderation_kind = asset.moderation_kind or "manual"
            answer = asset.resource(self.account.cloud_name)
        if moderated:
            self.notifier.send(self.notifier.moderation(asset), params.get("notification_url"))
        return answer

    # --- listing (Admin API, rate-limited) ------------------------------------------------------

    def list_resources(
        self, resource_type: str, delivery_type: str | None, params: dict[str, Any], tag: str | None = None
    ) -> dict[str, Any]:
        """GET resources/{resource_type}[/{type}] (by prefix) or resources/{resource_type}/tags/{tag}."""
        prefix = str(params.get("prefix") or "")
        with self.lock:
            found = [
                asset
                for asset in self.assets.values()
                if asset.resource_type == resource_type
                and (delivery_type is None or asset.type == delivery_type)
                and asset.public_id.startswith(prefix)
                and (tag is None or tag in asset.tags)
            ]
            chosen, cursor = listing.page(found, params.get("max_results"), params.get("next_cursor"))
            answer: dict[str, Any] = {"resources": [a.resource(self.account.cloud_name) for a in chosen]}
        if cursor:
            answer["next_cursor"] = cursor
        return answer

    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        """POST resources/search: the assets an expression selects, paged."""
        test = listing.search_test(str(params.get("expression") or ""))
        with self.lock:
            found = [asset for asset in self.assets.values() if test(asset)]
            chosen, cursor = listing.page(found, params.get("max_results"), params.get("next_cursor"))
            answer: dict[str, Any] = {
                "total_count": len(found),
                "resources": [a.resource(self.account.cloud_name) for a in chosen],
            }
        if cursor:
            answer["next_cursor"] = cursor
        return answer

    def preload(self, count: int, prefix: str = "products/") -> None:
        """`count` assets for tests and benchmarks: products/000000, ... (every third tagged sale)."""
        start = int(self.clock()) - 365 * 24 * 3600
        for number in range(count):
            self.add_asset(
                {
                    "public_id": f"{prefix}{number:06d}",
                    "format": "jpg",
                    "width": 800 + number % 1600,
                    "height": 600 + number % 900,
                    "bytes": 50_000 + number * 37 % 900_000,
                    "tags": ["product", "sale"] if number % 3 == 0 else ["product"],
                    "version": start + number * 3000,
                }
            )

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry["seq"] = len(self.calls) + 1
            self.calls.append(entry)

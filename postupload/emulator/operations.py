"""The Upload and Admin API operations on the emulator's assets, and the record of every call."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from postupload.config import Account
from postupload.emulator import addons, files, listing
from postupload.emulator.assets import Asset, apply_tags, context_change, merge_pairs
from postupload.emulator.faults import Faults, RateLimit
from postupload.emulator.metadata_fields import MetadataFields
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
    sign_answer,
    tag_list,
    truthy,
)
from postupload.rules.transformations import text_problems

ADDONS = addons.NAMES
AUTOMATIC_MODERATION = (
    "webpurify",
    "aws_rek",
    "aws_rek_video",
    "google_video_moderation",
    "perception_point",
)

# Who `POST /emulator/upload` says uploaded (triggered_by), unless told: a user in the Console.
CONSOLE_USER = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def _eager(params: dict[str, Any]) -> list[str]:
    """The eager transformations asked for; 400, as Cloudinary answers, for one it has no meaning for."""
    text = str(params.get("eager") or "")
    problems = text_problems(text) if text else []
    if problems:
        raise ApiError(400, f"Invalid transformation component - {problems[0]}")
    return [item for item in text.split("|") if item]


def _allowed_format(found: str | None, params: dict[str, Any]) -> str | None:
    """The stored format: `format` converts to it; otherwise, with `allowed_formats`, the file's own
    must be one of them."""
    if params.get("format"):
        return str(params["format"]).lower()
    allowed = params.get("allowed_formats")
    allowed = allowed.split(",") if isinstance(allowed, str) else allowed
    if allowed and found not in [item.strip().lower() for item in allowed]:
        raise ApiError(400, f"Image format {found} not allowed")
    return found


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
        self.metadata_fields = MetadataFields()
        self.chunks: dict[str, list[tuple[int, bytes]]] = {}  # upload_large's parts, by X-Unique-Upload-Id
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
            # Someone's upload, not one of postupload's calls: a Console user's unless told
            by = values.get("triggered_by")
            by = by if isinstance(by, dict) else {"source": "ui", "id": CONSOLE_USER}
            self.notifier.send(self.notifier.upload(asset, by), values.get("notification_url"))
            if asset.moderation_kind in AUTOMATIC_MODERATION:
                self.notifier.send(self.notifier.moderation(asset), values.get("notification_url"))
        return asset.resource(self.account.cloud_name)

    def upload_file(
        self, resource_type: str, params: dict[str, Any], content: bytes | str, filename: str | None
    ) -> dict[str, Any]:
        """Upload API upload: a file (bytes, a data URI or a loopback URL) becomes an asset; with
        Content-Range, one part of upload_large's (the last part completes it)."""
        addons.check(params, "upload")
        described = self._described(params)
        received = files.read(content, filename, "image" if resource_type == "auto" else resource_type)
        if resource_type == "auto":
            resource_type = "image" if received.width is not None else "raw"
        original = str(params.get("filename_override") or "") or received.stem
        file_format = _allowed_format(received.format, params)
        eager = _eager(params)  # refused before anything is stored, as every other check
        with self.lock:
            public_id = self._new_public_id(params, received.stem)
            key = (resource_type, str(params.get("type") or "upload"), public_id)
            existing = self.assets.get(key)
            if existing is not None and params.get("overwrite") in ("false", "0", False):
                answer = existing.view(self.account.cloud_name, tags=True, context=True)
                return {**answer, "existing": True}
            asset = Asset(
                public_id=public_id,
                resource_type=resource_type,
                type=key[1],
                format=file_format,
                width=received.width,
                height=received.height,
                bytes=len(received.content),
                etag=received.etag,
                original_filename=original,
                asset_folder=str(params.get("asset_folder") or params.get("folder") or ""),
            )
            self._describe(asset, described)
            self._process(asset, eager, params)
            self.assets[key] = asset
        answer = asset.view(self.account.cloud_name, tags=True, context=True, metadata=bool(asset.metadata))
        answer["tags"] = sorted(asset.tags)  # an upload's answer lists its tags, even none
        answer["signature"] = sign_answer(asset.public_id, asset.version, self.account.api_secret)
        answer["api_key"] = self.account.api_key
        if eager:
            answer["eager"] = [asset.eager_item(self.account.cloud_name, item) for item in eager]
        url = params.get("notification_url")
        self.notifier.send(self.notifier.upload(asset), url)
        if asset.moderation_kind in AUTOMATIC_MODERATION:
            self.notifier.send(self.notifier.moderation(asset), url)
        return answer

    def upload_part(
        self, resource_type: str, params: dict[str, Any], part: bytes, filename: str | None, headers: Any
    ) -> dict[str, Any]:
        """One part of upload_large (Content-Range `bytes a-b/total`, X-Unique-Upload-Id)."""
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", str(headers.get("Content-Range") or ""))
        upload_id = str(headers.get("X-Unique-Upload-Id") or "")
        if found is None or not upload_id:
            raise ApiError(400, "Invalid Content-Range or missing X-Unique-Upload-Id")
        start, end, total = (int(number) for number in found.groups())
        with self.lock:
            parts = self.chunks.setdefault(upload_id, [])
            parts.append((start, part))
            received = sum(len(chunk) for _, chunk in parts)
            if end + 1 < total or received < total:
                return {"done": False, "bytes": received}
            content = b"".join(chunk for _, chunk in sorted(parts))
            del self.chunks[upload_id]
        return self.upload_file(resource_type, params, content, filename)

    def _new_public_id(self, params: dict[str, Any], stem: str) -> str:
        if params.get("public_id"):
            return str(params["public_id"])
        if truthy(params.get("use_filename")) and stem:
            unique = params.get("unique_filename") not in ("false", "0", False)
            name = f"{stem}_{secrets.token_hex(3)}" if unique else stem
        else:
            name = secrets.token_hex(10)
        folder = str(params.get("folder") or "").strip("/")
        return f"{folder}/{name}" if folder else name

    def _described(self, params: dict[str, Any]) -> dict[str, Any]:
        """What an upload or explicit says of the asset: its tags, context and metadata, checked."""
        described: dict[str, Any] = {}
        if params.get("tags"):
            described["tags"] = list(dict.fromkeys(tag_list(params["tags"])))
        if params.get("context"):
            described["context"] = {k: v for k, v in parse_pairs(str(params["context"])).items() if v != ""}
        if params.get("metadata"):
            pairs = parse_pairs(str(params["metadata"]))
            described["metadata"] = {key: metadata_value(value) for key, value in pairs.items()}
            with self.lock:
                self.metadata_fields.check(described["metadata"])
        return described

    @staticmethod
    def _describe(asset: Asset, described: dict[str, Any]) -> None:
        """Tags and context given replace the asset's; metadata given is merged field by field."""
        if "tags" in described:
            asset.tags = list(described["tags"])
        if "context" in described:
            asset.context = dict(described["context"])
        if "metadata" in described:
            merge_pairs(asset.metadata, described["metadata"])

    @staticmethod
    def _process(asset: Asset, eager: list[str], params: dict[str, Any]) -> None:
        """What an upload or explicit asks of the asset: eager transformations (every generation
        billed; explicit regenerates existing ones), add-ons and moderation, recorded."""
        for transformation in eager:
            asset.derived_generated += 1
            if transformation not in asset.derived:
                asset.derived.append(transformation)
        for name in ADDONS:
            if params.get(name):
                asset.addons.setdefault(name, []).append(str(params[name]))
        moderation = str(params.get("moderation") or "")
        if moderation:
            asset.addons.setdefault("moderation", []).append(moderation)
            asset.moderation_kind = moderation.split("|")[0]
            asset.moderation_status = "pending" if asset.moderation_kind == "manual" else "approved"

    def rename(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API rename: a new public_id (over an existing asset only with overwrite)."""
        source, target = required(params, "from_public_id"), required(params, "to_public_id")
        delivery_type = str(params.get("type") or "upload")
        to_type = str(params.get("to_type") or delivery_type)
        with self.lock:
            asset = self._asset(resource_type, delivery_type, source)
            if (resource_type, to_type, target) in self.assets and not truthy(params.get("overwrite")):
                raise ApiError(409, f"Resource already exists - {target}")
            del self.assets[(resource_type, delivery_type, source)]
            asset.public_id, asset.type = target, to_type
            self.assets[(resource_type, to_type, target)] = asset
            answer = asset.resource(self.account.cloud_name)
        self.notifier.send(self.notifier.rename(asset, source), params.get("notification_url"))
        return answer

    def destroy(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API destroy: one asset."""
        public_id = required(params, "public_id")
        with self.lock:
            asset = self.assets.pop((resource_type, str(params.get("type") or "upload"), public_id), None)
        if asset is None:
            return {"result": "not found"}
        self.notifier.deleted([asset], params.get("notification_url"))
        return {"result": "ok"}

    def delete_resources(
        self, resource_type: str, delivery_type: str | None, params: dict[str, Any], tag: str | None = None
    ) -> dict[str, Any]:
        """Admin API delete: by public_ids (at most 100), by prefix, by tag or all (at most 1000 a call,
        with `partial` and a cursor to go on)."""
        delivery_type = delivery_type or str(params.get("type") or "upload")
        ids = params.get("public_ids")
        ids = [ids] if isinstance(ids, str) else ids
        with self.lock:
            if ids:
                if len(ids) > 100:
                    raise ApiError(400, "Too many public_ids: at most 100 a call")
                keys = [(resource_type, delivery_type, public_id) for public_id in ids]
                deleted = {key[2]: "deleted" if key in self.assets else "not_found" for key in keys}
            else:
                prefix = str(params.get("prefix") or "")
                if tag is None and not prefix and not truthy(params.get("all")):
                    raise ApiError(400, "Missing required parameter - public_ids, prefix, tag or all")
                keys = sorted(
                    key
                    for key, asset in self.assets.items()
                    if key[0] == resource_type
                    and (tag is not None or key[1] == delivery_type)
                    and asset.public_id.startswith(prefix)
                    and (tag is None or tag in asset.tags)
                )[:1000]
                deleted = {key[2]: "deleted" for key in keys}
            gone = [self.assets.pop(key) for key in keys if key in self.assets]
            partial = not ids and len(keys) == 1000
        if gone:
            self.notifier.deleted(gone, params.get("notification_url"))
        return {"deleted": deleted, "deleted_counts": {}, "partial": partial}

    def resource_types(self) -> list[str]:
        with self.lock:
            return sorted({asset.resource_type for asset in self.assets.values()} | {"image"})

    def by_asset_id(self, asset_id: str) -> dict[str, Any]:
        """Admin API resources/{asset_id}."""
        with self.lock:
            for asset in self.assets.values():
                if asset.asset_id == asset_id:
                    return asset.resource(self.account.cloud_name)
        raise ApiError(404, f"Resource not found - {asset_id}")

    def _asset(self, resource_type: str, delivery_type: str, public_id: str) -> Asset:
        asset = self.assets.get((resource_type, delivery_type, public_id))
        if asset is None:
            raise ApiError(404, f"Resource not found - {public_id}")
        return asset

    # --- Upload API ---------------------------------------------------------------------------

    def explicit(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API explicit: (re)generate eager transformations, run add-ons, answer the asset."""
        public_id = required(params, "public_id")
        addons.check(params, "upload")
        described = self._described(params)
        asset = self._asset(resource_type, params.get("type") or "upload", public_id)
        eager = _eager(params)
        is_async = truthy(params.get("eager_async"))
        with self.lock:
            self._describe(asset, described)
            self._process(asset, eager, params)
        moderation = params.get("moderation")
        answer = asset.view(self.account.cloud_name, tags=True, context=True, metadata=True)
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
            self.metadata_fields.check(values)
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
        addons.check(params, "admin")
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
                values = {key: metadata_value(value) for key, value in metadata.items()}
                self.metadata_fields.check(values)
                asset.metadata.update(values)
            for name in ADDONS:
                if params.get(name):
                    asset.addons.setdefault(name, []).append(str(params[name]))
            folder = params.get("asset_folder")
            moved_from = asset.asset_folder if folder is not None and folder != asset.asset_folder else None
            if moved_from is not None:
                asset.asset_folder = str(folder)
            access = params.get("access_control")
            access_changed = access is not None and access != asset.access_control
            if access_changed:
                asset.access_control = access
            moderated = status is not None and status != asset.moderation_status
            if status is not None:
                asset.moderation_status = status
                asset.moderation_kind = asset.moderation_kind or "manual"
                asset.moderation_updated_at = self.clock()
            answer = asset.resource(self.account.cloud_name)
        url = params.get("notification_url")
        if moderated:
            self.notifier.send(self.notifier.moderation(asset), url)
        if moved_from is not None:
            self.notifier.changed("move", {asset.public_id: self.notifier.moved(asset, moved_from)}, url)
        if access_changed:
            self.notifier.send(self.notifier.access_control(asset), url)
        return answer

    # --- listing (Admin API, rate-limited) ------------------------------------------------------

    def list_resources(
        self,
        resource_type: str,
        delivery_type: str | None,
        params: dict[str, Any],
        tag: str | None = None,
        where: Callable[[Asset], bool] = lambda asset: True,
    ) -> dict[str, Any]:
        """GET resources/{resource_type}[/{type}] (by prefix), resources/{resource_type}/tags/{tag},
        or by context or moderation (`where`)."""
        prefix = str(params.get("prefix") or "")
        with self.lock:
            found = [
                asset
                for asset in self.assets.values()
                if asset.resource_type == resource_type
                and (delivery_type is None or asset.type == delivery_type)
                and asset.public_id.startswith(prefix)
                and (tag is None or tag in asset.tags)
                and where(asset)
            ]
            chosen, cursor = listing.page(found, params.get("max_results"), params.get("next_cursor"))
            shown = {name: truthy(params.get(name)) for name in ("tags", "context", "metadata")}
            answer: dict[str, Any] = {"resources": [a.view(self.account.cloud_name, **shown) for a in chosen]}
        if cursor:
            answer["next_cursor"] = cursor
        return answer

    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        """POST resources/search: the assets an expression selects, paged."""
        test = listing.search_test(str(params.get("expression") or ""))
        order = listing.search_order(params.get("sort_by"))
        wanted = set(params.get("with_field") or [])
        shown = {
            "tags": "tags" in wanted,
            "context": "context" in wanted,
            "metadata": "metadata" in wanted,
            "image_metadata": "image_metadata" in wanted,
        }
        with self.lock:
            found = [asset for asset in self.assets.values() if test(asset)]
            chosen, cursor = listing.page(found, params.get("max_results"), params.get("next_cursor"), order)
            answer: dict[str, Any] = {
                "total_count": len(found),
                # The Search API shows context flat, unlike the Admin API's {"custom": ...}
                "resources": [a.view(self.account.cloud_name, flat_context=True, **shown) for a in chosen],
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

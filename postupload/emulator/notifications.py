"""Cloudinary's side of notifications: the bodies it sends, signed, redelivered until answered 200.

Which shapes a source confirms (tests/data/notifications/README.md has each source):
- confirmed verbatim: the minimal `eager` (the SDK's own signature test vector), the `upload` of
  2020 (minimal_shapes), `delete` (a third-party capture), `moderation` keys (a Cloudinary article);
- inferred: the rich `upload` fields after 2020 (asset_folder, display_name, api_key,
  notification_context, signature_key), the rich `eager` item fields, `rename`, `move`, the
  `resource_*_changed` bodies and `info` (field lists from third-party descriptions and consumers);
  `access_control_changed` has no source at all (its fields are the product's reading of it).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from postupload.config import Account
from postupload.core.signature import sign_notification
from postupload.emulator.assets import Asset
from postupload.emulator.faults import Faults
from postupload.emulator.wire import iso_now

log = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (180.0, 360.0, 540.0)  # Cloudinary's redeliveries (third-party report)


class Notifier:
    """Builds and delivers the notifications; `sent` records each one and its delivery answers."""

    def __init__(
        self,
        account: Account,
        url: str | None,
        faults: Faults,
        lock: threading.RLock,
        retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
        signature_algorithm: str = "sha1",
    ) -> None:
        self.account = account
        self.url = url
        self.faults = faults
        self.lock = lock
        self.retry_delays = tuple(retry_delays)
        self.signature_algorithm = signature_algorithm
        self.sent: list[dict[str, Any]] = []

    def upload(self, asset: Asset, by: dict[str, Any] | None = None) -> dict[str, Any]:
        """`by`: who uploaded it, as `triggered_by` says (an API call with the account's key unless
        told)."""
        resource = asset.view(self.account.cloud_name)
        body = self.envelope("upload")
        for key in (
            "asset_id",
            "public_id",
            "version",
            "version_id",
            "width",
            "height",
            "format",
            "resource_type",
            "created_at",
            "bytes",
            "type",
            "etag",
            "url",
            "secure_url",
            "asset_folder",
            "display_name",
        ):
            if key in resource:  # a raw file has no width or height
                body[key] = resource[key]
        body["tags"] = sorted(asset.tags)
        body["placeholder"] = False
        if asset.original_filename:
            body["original_filename"] = asset.original_filename
        if asset.context:
            body["context"] = {"custom": dict(asset.context)}
        if asset.metadata:
            body["metadata"] = dict(asset.metadata)
        if asset.moderation_kind:
            body["moderation"] = asset.moderation()
        if self.faults.minimal_shapes:
            # As tests/data/notifications/upload-image.json (verbatim, 2020): none of the newer fields.
            for newer in ("asset_folder", "display_name", "version_id"):
                body.pop(newer, None)
            return body
        body["api_key"] = by["id"] if by and by.get("source") == "api" else self.account.api_key
        return self.triggered(body, by)

    def moderation(self, asset: Asset) -> dict[str, Any]:
        """As `samples/notifications/moderation-*.json`: no asset_id, resource_type or type (with
        minimal shapes, `moderation_response: null`, as the verbatim rejected fragment has it)."""
        return {
            "moderation_response": None if self.faults.minimal_shapes else {},
            "moderation_status": asset.moderation_status,
            "moderation_kind": asset.moderation_kind or "manual",
            "moderation_updated_at": iso_now("Z"),
            **self._about(asset),
            "notification_type": "moderation",
        }

    def eager(self, asset: Asset, eager: list[str], batch_id: str) -> dict[str, Any]:
        if self.faults.minimal_shapes:  # as the SDK's own test vector (tests/data/notifications/eager.json)
            items = [asset.eager_item(self.account.cloud_name, item) for item in eager]
            keys = ("transformation", "bytes", "url", "secure_url")
            return {
                "notification_type": "eager",
                "eager": [{key: item[key] for key in keys} for item in items],
                "public_id": asset.public_id,
                "batch_id": batch_id,
            }
        return {
            "notification_type": "eager",
            "eager": [
                {**asset.eager_item(self.account.cloud_name, item), "status": "complete"} for item in eager
            ],
            "public_id": asset.public_id,
            "batch_id": batch_id,
            "asset_id": asset.asset_id,
            "resource_type": asset.resource_type,
            "type": asset.type,
        }

    def info(self, asset: Asset, addon: str) -> dict[str, Any]:
        return {
            "info_kind": asset.addons[addon][-1].split(":")[0],
            "info_status": "complete",
            **self._about(asset),
            "notification_type": "info",
        }

    def rename(self, asset: Asset, from_public_id: str) -> dict[str, Any]:
        """As samples/notifications/rename.json."""
        body = {
            **self.envelope("rename"),
            "asset_id": asset.asset_id,
            "resource_type": asset.resource_type,
            "type": asset.type,
            "from_public_id": from_public_id,
            "to_public_id": asset.public_id,
            "asset_folder": asset.asset_folder,
            "display_name": asset.public_id.rsplit("/", 1)[-1],
        }
        return self.triggered(body)

    def moved(self, asset: Asset, from_folder: str) -> dict[str, Any]:
        """One asset's entry in a `move` notification (samples/notifications/move.json)."""
        return {
            "asset_id": asset.asset_id,
            "resource_type": asset.resource_type,
            "type": asset.type,
            "from_asset_folder": from_folder,
            "to_asset_folder": asset.asset_folder,
            "display_name": asset.public_id.rsplit("/", 1)[-1],
        }

    def access_control(self, asset: Asset) -> dict[str, Any]:
        """Inferred (no sample): the asset named at the top, as product code expects, and the new rules."""
        body = {
            **self.envelope("access_control_changed"),
            "asset_id": asset.asset_id,
            "public_id": asset.public_id,
            "resource_type": asset.resource_type,
            "type": asset.type,
            "access_control": asset.access_control,
        }
        return self.triggered(body)

    def deleted(self, assets: list[Asset], url: str | None) -> None:
        """One `delete` notification listing the assets a call deleted (samples/notifications/delete.json)."""
        resources = [
            {
                "resource_type": asset.resource_type,
                "type": asset.type,
                "asset_id": asset.asset_id,
                "public_id": asset.public_id,
                "version": asset.version,
            }
            for asset in assets
        ]
        self.send(self.triggered({**self.envelope("delete"), "resources": resources}), url)

    def _about(self, asset: Asset) -> dict[str, Any]:
        """How moderation and info notifications name the asset (no asset_id, resource_type or type)."""
        resource = asset.view(self.account.cloud_name)
        keys = ("public_id", "created_at", "version", "url", "secure_url", "etag")
        about = {key: resource[key] for key in keys}
        about["uploaded_at"] = about.pop("created_at")
        return about

    def envelope(self, notification_type: str) -> dict[str, Any]:
        return {
            "notification_type": notification_type,
            "timestamp": iso_now(),
            "request_id": secrets.token_hex(16),
        }

    def triggered(self, body: dict[str, Any], by: dict[str, Any] | None = None) -> dict[str, Any]:
        """Who caused it, as Cloudinary says (https://cloudinary.com/documentation/notifications):
        `{"source": "api", "id": <API key>}` for an API call (the account's own key here: the
        emulator's APIs take that one), `{"source": "ui", "id": <user>}` for the Console."""
        body["notification_context"] = {
            "triggered_at": iso_now("Z"),
            "triggered_by": by or {"source": "api", "id": self.account.api_key},
        }
        body["signature_key"] = self.account.api_key
        return body

    def changed(self, kind: str, resources: Any, url: str | None) -> None:
        """A `resource_*_changed` notification about what one of our calls changed."""
        body = {**self.envelope(kind), "source": "api", "resources": resources}
        self.send(self.triggered(body), url)

    def send(self, body: dict[str, Any], url: str | None = None) -> None:
        """Deliver a signed notification in the background (or drop or repeat it, as faults say)."""
        target = url or self.url
        if not target:
            return
        with self.lock:
            roll_drop, roll_duplicate = self.faults.random.random(), self.faults.random.random()
            dropped = roll_drop < self.faults.drop_rate
            copies = 0 if dropped else 2 if roll_duplicate < self.faults.duplicate_rate else 1
            entry = {
                "seq": len(self.sent) + 1,
                "notification_type": body["notification_type"],
                "public_id": body.get("public_id"),
                "url": target,
                "copies": copies,
                "dropped": dropped,
                "deliveries": [],
            }
            self.sent.append(entry)
        raw = json.dumps(body, separators=(",", ":")).encode()
        for _ in range(copies):
            threading.Thread(target=self._deliver, args=(target, raw, entry), daemon=True).start()

    def _deliver(self, url: str, raw: bytes, entry: dict[str, Any]) -> None:
        """POST until a 200, pausing between tries as Cloudinary does (delays are configurable)."""
        for pause in (*self.retry_delays, None):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Cld-Timestamp": timestamp,
                "X-Cld-Signature": sign_notification(
                    raw, timestamp, self.account.api_secret, self.signature_algorithm
                ),
            }
            try:
                with urllib.request.urlopen(urllib.request.Request(url, raw, headers), timeout=10) as answer:
                    status: int | str = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError as error:
                status = f"error: {error}"
            with self.lock:
                entry["deliveries"].append(status)
            if status == 200:
                return
            log.warning("notification to %s answered %s", url, status)
            if pause is not None:
                time.sleep(pause)

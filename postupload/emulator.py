"""A Cloudinary API emulator: a real HTTP server speaking the part of the Upload and Admin APIs we call.

It checks request signatures and Basic auth as Cloudinary does, enforces the documented limits
(CLOUDINARY.md), keeps assets in memory, records every call, counts the Admin API budget, plays
Cloudinary's side of notifications (the upload, and the follow-ups our own calls cause) and injects
latency and faults, reproducibly from a seed.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.serving import BaseWSGIServer, make_server

from postupload.config import Account
from postupload.signature import DIGEST_BY_LENGTH, sign_notification

log = logging.getLogger(__name__)

SIGNATURE_VALIDITY = 3600  # Upload API signatures are valid for one hour
UNSIGNED_PARAMS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})
# The SDK sends these unsigned on tags, context and metadata calls, so the service must accept that.
UNSIGNED_NOTIFICATION_PARAMS = frozenset({"notification_url", "batch_id"})
MAX_PUBLIC_IDS = 1000  # a tags/context/metadata call acts on the first 1000 ids; the rest are ignored
MAX_TAG_UPDATES = 10_000  # tags times public ids in one call
MAX_TAGS_PER_ASSET = 1000
MAX_TAG_LENGTH = 255
TAG_COMMANDS = ("add", "remove", "replace", "remove_all", "set_exclusive")
CONTEXT_COMMANDS = ("add", "remove_all")
ADDONS = ("background_removal", "categorization", "auto_tagging", "ocr", "detection", "raw_convert")
AUTOMATIC_MODERATION = (
    "webpurify",
    "aws_rek",
    "aws_rek_video",
    "google_video_moderation",
    "perception_point",
)
DEFAULT_RETRY_DELAYS = (180.0, 360.0, 540.0)  # Cloudinary's redeliveries (third-party report)


def string_to_sign(params: dict[str, Any], version: int = 2) -> str:
    """Drop empty values, join lists with commas, (version 2) escape & as %26, sort, join with &."""
    pairs = []
    for key, value in params.items():
        if value in (None, "", [], False):  # 0 too, as the SDK drops it
            continue
        text = ",".join(value) if isinstance(value, list) else "true" if value is True else str(value)
        pair = f"{key}={text}"
        pairs.append(pair.replace("&", "%26") if version >= 2 else pair)
    return "&".join(sorted(pairs))


def parse_pairs(text: str) -> dict[str, str]:
    """`k=v|k2=v2` with `\\=` and `\\|` escaped, as the SDK encodes context and metadata."""
    pairs: dict[str, str] = {}
    for item in re.split(r"(?<!\\)\|", text):
        if not item:
            continue
        key, sep, value = (part.replace("\\=", "=").replace("\\|", "|") for part in _split_unescaped(item))
        if not sep:
            raise ApiError(400, f"Invalid context or metadata {item!r}: expected key=value")
        pairs[key] = value
    return pairs


def _split_unescaped(item: str) -> tuple[str, str, str]:
    match = re.search(r"(?<!\\)=", item)
    if match is None:
        return item, "", ""
    return item[: match.start()], "=", item[match.end() :]


class ApiError(Exception):
    """An answer in Cloudinary's error shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Asset:
    public_id: str
    resource_type: str = "image"
    type: str = "upload"
    format: str | None = "jpg"
    width: int | None = None
    height: int | None = None
    bytes: int = 0
    tags: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    moderation_status: str | None = None
    moderation_kind: str | None = None
    asset_folder: str = ""
    original_filename: str | None = None
    asset_id: str = field(default_factory=lambda: secrets.token_hex(16))
    version: int = field(default_factory=lambda: int(time.time()))
    version_id: str = field(default_factory=lambda: secrets.token_hex(16))
    etag: str = field(default_factory=lambda: secrets.token_hex(16))
    derived: list[str] = field(default_factory=list)  # eager transformations, current
    derived_generated: int = 0  # every generation is billed, regenerations included
    addons: dict[str, list[str]] = field(default_factory=dict)  # add-on → every value requested

    def url(self, cloud_name: str, transformation: str = "") -> str:
        path = f"{transformation}/" if transformation else ""
        suffix = f".{self.format}" if self.format else ""
        return (
            f"http://res.cloudinary.com/{cloud_name}/{self.resource_type}/{self.type}/"
            f"{path}v{self.version}/{self.public_id}{suffix}"
        )

    def resource(self, cloud_name: str) -> dict[str, Any]:
        """The asset as the API answers it."""
        url = self.url(cloud_name)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.version))
        return {
            "asset_id": self.asset_id,
            "public_id": self.public_id,
            "version": self.version,
            "version_id": self.version_id,
            "resource_type": self.resource_type,
            "type": self.type,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "created_at": created,
            "etag": self.etag,
            "asset_folder": self.asset_folder,
            "display_name": self.public_id.rsplit("/", 1)[-1],
            "tags": list(self.tags),
            "context": {"custom": dict(self.context)} if self.context else {},
            "metadata": dict(self.metadata),
            "moderation_status": self.moderation_status,
            "derived": list(self.derived),
            "derived_generated": self.derived_generated,
            "addons": {name: list(values) for name, values in self.addons.items()},
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }


@dataclass
class Faults:
    """What goes wrong, and how slowly; every random choice comes from one seeded generator."""

    latency: float = 0.0  # seconds added to every API call
    latency_jitter: float = 0.0  # plus a uniform random 0..jitter seconds
    error_rate: float = 0.0  # share of API calls answered 500, 502 or 503, without effect
    timeout_rate: float = 0.0  # share of API calls that take effect but hold the answer back
    hang: float = 30.0  # how long such a call holds the connection before giving up (504)
    rate_limit_burst: int = 0  # the next N Admin API calls answer 420
    drop_rate: float = 0.0  # share of notifications never sent
    duplicate_rate: float = 0.0  # share of notifications sent twice
    seed: int | None = None

    RATES = ("error_rate", "timeout_rate", "drop_rate", "duplicate_rate")

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Change some knobs; raise ValueError naming a bad one (nothing changes then)."""
        known = {f.name: f for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("seed: expected an integer or null")
            elif name == "rate_limit_burst":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("rate_limit_burst: expected a whole number ≥ 0")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}: expected a number ≥ 0")
            elif name in self.RATES and value > 1:
                raise ValueError(f"{name}: expected a share between 0 and 1")
            checked[name] = value
        for name, value in checked.items():
            setattr(self, name, value)
        if "seed" in checked:
            self.random = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RateLimit:
    """The Admin API budget: `budget` calls per fixed window, windows aligned on multiples of its length."""

    def __init__(self, budget: int = 500, window: int = 3600) -> None:
        self.budget = budget
        self.window = window
        self.window_start = 0
        self.used = 0

    def take(self, now: float, burst: bool = False) -> dict[str, str]:
        """Count one call and answer its headers; raise ApiError 420 when the budget is spent."""
        headers = self.headers(now)
        if burst or self.used >= self.budget:
            reset = headers["X-FeatureRateLimit-Reset"]
            raise ApiError(
                420, f"Rate Limit Exceeded. Try again on {reset}", {**headers, **self._remaining(0)}
            )
        self.used += 1
        return {**headers, **self._remaining(self.budget - self.used)}

    def headers(self, now: float) -> dict[str, str]:
        """The headers every Admin API answer carries, without counting a call."""
        start = int(now) - int(now) % self.window
        if start != self.window_start:
            self.window_start, self.used = start, 0
        return {
            "X-FeatureRateLimit-Limit": str(self.budget),
            "X-FeatureRateLimit-Reset": email.utils.formatdate(start + self.window, usegmt=True),
            **self._remaining(self.budget - self.used),
        }

    @staticmethod
    def _remaining(count: int) -> dict[str, str]:
        return {"X-FeatureRateLimit-Remaining": str(count)}


class Emulator:
    """The service's state and behaviour; `app()` puts HTTP in front of it."""

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
    ) -> None:
        self.account = account
        self.notify_url = notify_url
        self.faults = faults or Faults()
        self.rate_limit = RateLimit(admin_budget, admin_window)
        self.retry_delays = tuple(retry_delays)
        self.signature_algorithm = signature_algorithm
        self.assets: dict[tuple[str, str, str], Asset] = {}
        self.calls: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.RLock()

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
            self.send_notification(self.upload_notification(asset), values.get("notification_url"))
            if asset.moderation_kind in AUTOMATIC_MODERATION:
                self.send_notification(self.moderation_notification(asset), values.get("notification_url"))
        return asset.resource(self.account.cloud_name)

    def _asset(self, resource_type: str, delivery_type: str, public_id: str) -> Asset:
        asset = self.assets.get((resource_type, delivery_type, public_id))
        if asset is None:
            raise ApiError(404, f"Resource not found - {public_id}")
        return asset

    # --- notifications ------------------------------------------------------------------------

    def upload_notification(self, asset: Asset) -> dict[str, Any]:
        resource = asset.resource(self.account.cloud_name)
        body = self._envelope("upload")
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
            "tags",
            "bytes",
            "type",
            "etag",
            "url",
            "secure_url",
            "asset_folder",
            "display_name",
        ):
            body[key] = resource[key]
        body["placeholder"] = False
        if asset.original_filename:
            body["original_filename"] = asset.original_filename
        if asset.context:
            body["context"] = {"custom": dict(asset.context)}
        if asset.metadata:
            body["metadata"] = dict(asset.metadata)
        if asset.moderation_kind:
            body["moderation"] = [{"kind": asset.moderation_kind, "status": "pending"}]
        body["api_key"] = self.account.api_key
        return self._triggered(body)

    def moderation_notification(self, asset: Asset) -> dict[str, Any]:
        """As `samples/notifications/moderation-*.json`: no asset_id, resource_type or type."""
        return {
            "moderation_response": {},
            "moderation_status": asset.moderation_status,
            "moderation_kind": asset.moderation_kind or "manual",
            "moderation_updated_at": _iso_now("Z"),
            **self._about(asset),
            "notification_type": "moderation",
        }

    def _about(self, asset: Asset) -> dict[str, Any]:
        """How moderation and info notifications name the asset (no asset_id, resource_type or type)."""
        resource = asset.resource(self.account.cloud_name)
        keys = ("public_id", "created_at", "version", "url", "secure_url", "etag")
        about = {key: resource[key] for key in keys}
        about["uploaded_at"] = about.pop("created_at")
        return about

    def _envelope(self, notification_type: str) -> dict[str, Any]:
        return {
            "notification_type": notification_type,
            "timestamp": _iso_now(),
            "request_id": secrets.token_hex(16),
        }

    def _triggered(self, body: dict[str, Any]) -> dict[str, Any]:
        body["notification_context"] = {
            "triggered_at": _iso_now("Z"),
            "triggered_by": {"source": "api", "id": self.account.api_key},
        }
        body["signature_key"] = self.account.api_key
        return body

    def send_notification(self, body: dict[str, Any], url: str | None = None) -> None:
        """Deliver a signed notification in the background (or drop or repeat it, as faults say)."""
        target = url or self.notify_url
        if not target:
            return
        with self.lock:
            roll_drop, roll_duplicate = self.faults.random.random(), self.faults.random.random()
            dropped = roll_drop < self.faults.drop_rate
            copies = 0 if dropped else 2 if roll_duplicate < self.faults.duplicate_rate else 1
            entry = {
                "seq": len(self.notifications) + 1,
                "notification_type": body["notification_type"],
                "public_id": body.get("public_id"),
                "url": target,
                "copies": copies,
                "dropped": dropped,
                "deliveries": [],
            }
            self.notifications.append(entry)
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

    # --- Upload API ---------------------------------------------------------------------------

    def check_upload_auth(
        self,
        params: dict[str, Any],
        authorization: str | None,
        now: float,
        unsigned: frozenset[str] = frozenset(),
    ) -> str:
        """Raise ApiError 401 unless the request is signed (or Basic-authenticated) by our account."""
        if authorization and authorization.startswith("Basic "):
            self.check_basic_auth(authorization)
            return "basic"
        if not params.get("api_key"):
            raise ApiError(401, "Must supply api_key")
        if params["api_key"] != self.account.api_key:
            raise ApiError(401, f"Unknown API key {params['api_key']}")
        signature, timestamp = str(params.get("signature") or ""), str(params.get("timestamp") or "")
        if not signature or not timestamp:
            raise ApiError(401, "Missing required parameter - signature and timestamp")
        if not timestamp.isdigit() or now - int(timestamp) > SIGNATURE_VALIDITY:
            raise ApiError(401, f"Stale request - reported time is {timestamp} which is more than 1 hour ago")
        skipped = UNSIGNED_PARAMS | unsigned
        to_sign = string_to_sign({k: v for k, v in params.items() if k not in skipped})
        algorithm = DIGEST_BY_LENGTH.get(len(signature), "sha1")
        digest = hashlib.new(algorithm, (to_sign + self.account.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(digest.encode(), signature.encode()):
            raise ApiError(401, f"Invalid Signature {signature}. String to sign - '{to_sign}'.")
        return "signature"

    def check_basic_auth(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Basic "):
            raise ApiError(401, "Must supply api_key")
        expected = base64.b64encode(f"{self.account.api_key}:{self.account.api_secret}".encode())
        if not hmac.compare_digest(authorization[6:].strip().encode(), expected):
            raise ApiError(401, "Invalid credentials")

    def explicit(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API explicit: (re)generate eager transformations, run add-ons, answer the asset."""
        public_id = _required(params, "public_id")
        asset = self._asset(resource_type, params.get("type") or "upload", public_id)
        eager = [item for item in str(params.get("eager") or "").split("|") if item]
        is_async = _truthy(params.get("eager_async"))
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
            self.send_notification(
                self.eager_notification(asset, eager, batch_id), params.get("eager_notification_url") or url
            )
        else:
            answer["eager"] = [self._eager_item(asset, item) for item in eager]
        if moderation and asset.moderation_kind in AUTOMATIC_MODERATION:
            self.send_notification(self.moderation_notification(asset), url)
        if params.get("background_removal"):
            self.send_notification(self.info_notification(asset, "background_removal"), url)
        return answer

    def _eager_item(self, asset: Asset, transformation: str) -> dict[str, Any]:
        url = asset.url(self.account.cloud_name, transformation)
        return {
            "transformation": transformation,
            "width": asset.width,
            "height": asset.height,
            "bytes": asset.bytes,
            "format": asset.format,
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }

    def eager_notification(self, asset: Asset, eager: list[str], batch_id: str) -> dict[str, Any]:
        return {
            "notification_type": "eager",
            "eager": [{**self._eager_item(asset, item), "status": "complete"} for item in eager],
            "public_id": asset.public_id,
            "batch_id": batch_id,
            "asset_id": asset.asset_id,
            "resource_type": asset.resource_type,
            "type": asset.type,
        }

    def info_notification(self, asset: Asset, addon: str) -> dict[str, Any]:
        return {
            "info_kind": asset.addons[addon][-1].split(":")[0],
            "info_status": "complete",
            **self._about(asset),
            "notification_type": "info",
        }

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
        command = _required(params, "command")
        if command not in TAG_COMMANDS:
            raise ApiError(400, f"Invalid command {command!r}; expected one of {', '.join(TAG_COMMANDS)}")
        tags = [] if command == "remove_all" else _tag_list(_required(params, "tag"))
        if command == "set_exclusive" and len(tags) != 1:
            raise ApiError(400, "set_exclusive takes exactly one tag")
        ids = params.get("public_ids") or []
        if len(tags) * min(len(ids), MAX_PUBLIC_IDS) > MAX_TAG_UPDATES:
            raise ApiError(400, f"Too many tag updates: {len(tags)} tags x {len(ids)} public ids > 10000")
        with self.lock:
            targets = self._targets(resource_type, params)
            before = {id(asset): list(asset.tags) for asset in self.assets.values()}
            new_tags = {id(asset): _apply_tags(asset.tags, command, tags) for asset in targets}
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
            body = {**self._envelope("resource_tags_changed"), "source": "api", "resources": resources}
            self.send_notification(self._triggered(body), params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    def context(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API context: `add` merges (an empty value deletes that key), `remove_all` clears."""
        command = _required(params, "command")
        if command not in CONTEXT_COMMANDS:
            raise ApiError(400, f"Invalid command {command!r}; expected one of {', '.join(CONTEXT_COMMANDS)}")
        pairs = parse_pairs(_required(params, "context")) if command == "add" else {}
        with self.lock:
            targets = self._targets(resource_type, params)
            changes: dict[str, dict[str, Any]] = {}
            for asset in targets:
                before = dict(asset.context)
                if command == "remove_all":
                    asset.context = {}
                else:
                    for key, value in pairs.items():
                        if value == "":
                            asset.context.pop(key, None)
                        else:
                            asset.context[key] = value
                if asset.context != before:
                    changes[asset.public_id] = _context_change(asset, before)
        if changes:
            body = {**self._envelope("resource_context_changed"), "source": "api", "resources": changes}
            self.send_notification(self._triggered(body), params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    def metadata(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API metadata: set structured metadata values (an empty value clears the field)."""
        pairs = parse_pairs(_required(params, "metadata"))
        values = {key: _metadata_value(value) for key, value in pairs.items()}
        with self.lock:
            targets = self._targets(resource_type, params)
            changes: dict[str, dict[str, Any]] = {}
            for asset in targets:
                before = dict(asset.metadata)
                for key, value in values.items():
                    if value == "":
                        asset.metadata.pop(key, None)
                    else:
                        asset.metadata[key] = value
                if asset.metadata != before:
                    changes[asset.public_id] = {
                        "asset_id": asset.asset_id,
                        "resource_type": asset.resource_type,
                        "type": asset.type,
                        "previous_metadata": before,
                        "new_metadata": dict(asset.metadata),
                    }
        if changes:
            body = {**self._envelope("resource_metadata_changed"), "source": "api", "resources": changes}
            self.send_notification(self._triggered(body), params.get("notification_url"))
        return {"public_ids": [asset.public_id for asset in targets]}

    # --- Admin API ----------------------------------------------------------------------------

    def update(self, resource_type: str, delivery_type: str, public_id: str, params: dict[str, Any]) -> Any:
        """Admin API update: moderation status, tags (replacing the set), context, metadata, add-ons."""
        status = params.get("moderation_status")
        if status is not None and status not in ("approved", "rejected"):
            raise ApiError(400, f"Invalid moderation_status {status!r}; expected approved or rejected")
        tags = _tag_list(params["tags"]) if params.get("tags") else None
        context = parse_pairs(params["context"]) if params.get("context") else None
        metadata = parse_pairs(params["metadata"]) if params.get("metadata") else None
        with self.lock:
            asset = self._asset(resource_type, delivery_type, public_id)
            if tags is not None:
                asset.tags = list(dict.fromkeys(tags))
            if context is not None:
                asset.context = {key: value for key, value in context.items() if value != ""}
            if metadata is not None:
                asset.metadata.update({key: _metadata_value(value) for key, value in metadata.items()})
            for name in ADDONS:
                if params.get(name):
                    asset.addons.setdefault(name, []).append(str(params[name]))
            moderated = status is not None and status != asset.moderation_status
            if status is not None:
                asset.moderation_status = status
                asset.moderation_kind = asset.moderation_kind or "manual"
            answer = asset.resource(self.account.cloud_name)
        if moderated:
            self.send_notification(self.moderation_notification(asset), params.get("notification_url"))
        return answer

    # --- HTTP ---------------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry["seq"] = len(self.calls) + 1
            self.calls.append(entry)

    def serve_call(
        self, entry: dict[str, Any], authenticate: Callable[[], str], act: Callable[[], Any]
    ) -> Response:
        """Answer one API call: latency, faults, auth, the Admin budget, the effect, the record."""
        faults, admin = self.faults, entry["api"] == "admin"
        with self.lock:
            jitter = faults.random.uniform(0, faults.latency_jitter) if faults.latency_jitter else 0.0
            error_roll, timeout_roll = faults.random.random(), faults.random.random()
            burst = admin and faults.rate_limit_burst > 0
            if burst:
                faults.rate_limit_burst -= 1
        if faults.latency + jitter:
            time.sleep(faults.latency + jitter)
        headers: dict[str, str] = {}
        try:
            if error_roll < faults.error_rate:
                entry["fault"] = "error"
                return self._finish(entry, *_server_error(error_roll))
            entry["auth"] = authenticate()  # a rejected call costs no budget
            if admin:
                if burst:
                    entry["fault"] = "rate_limit_burst"
                with self.lock:
                    headers = self.rate_limit.take(time.time(), burst)
            answer = act()
        except ApiError as error:
            if admin and not headers:
                with self.lock:
                    headers = self.rate_limit.headers(time.time())
            body = jsonify({"error": {"message": error.message}})
            return self._finish(entry, body, error.status, {**headers, **error.headers})
        if timeout_roll < faults.timeout_rate:
            # The effect is done, but the answer never comes: the caller cannot tell which happened.
            entry["fault"] = "timeout"
            self._finish(entry, jsonify(answer), 200, headers)
            time.sleep(faults.hang)
            return jsonify({"error": {"message": "Gateway Timeout"}}), 504  # type: ignore[return-value]
        return self._finish(entry, jsonify(answer), 200, headers)

    def _finish(
        self, entry: dict[str, Any], body: Response, status: int, headers: dict[str, str] | None = None
    ) -> Response:
        entry["status"] = status
        entry["duration"] = round(time.time() - entry["time"], 4)  # latency included, a hang not
        self.record(entry)
        body.status_code = status
        body.headers.update(headers or {})
        return body

    def app(self) -> Flask:
        """The Flask app serving the API and the emulator's own routes."""
        app = Flask("postupload.emulator")
        app.config["MAX_FORM_PARTS"] = 100_000  # the service takes (and ignores) ids beyond 1000
        cloud = self.account.cloud_name
        upload_actions: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
            "explicit": self.explicit,
            "tags": self.tags,
            "context": self.context,
            "metadata": self.metadata,
        }

        @app.post(f"/v1_1/{cloud}/<resource_type>/<action>")
        def upload_api(resource_type: str, action: str) -> Response:
            params = _form_params(request.form)
            entry = _entry("upload", action, resource_type, params)

            def authenticate() -> str:
                unsigned = UNSIGNED_NOTIFICATION_PARAMS if action != "explicit" else frozenset()
                return self.check_upload_auth(
                    params, request.headers.get("Authorization"), time.time(), unsigned
                )

            def act() -> dict[str, Any]:
                if action not in upload_actions:
                    raise ApiError(404, f"Unsupported Upload API action {action!r}")
                return upload_actions[action](resource_type, params)

            return self.serve_call(entry, authenticate, act)

        @app.route(
            f"/v1_1/{cloud}/resources/<resource_type>/<delivery_type>/<path:public_id>",
            methods=["GET", "POST"],
        )
        def admin_resource(resource_type: str, delivery_type: str, public_id: str) -> Response:
            params = _admin_params()
            endpoint = "update" if request.method == "POST" else "resource"
            entry = _entry("admin", endpoint, resource_type, params, type=delivery_type, public_id=public_id)

            def authenticate() -> str:
                self.check_basic_auth(request.headers.get("Authorization"))
                return "basic"

            def act() -> Any:
                if request.method == "POST":
                    return self.update(resource_type, delivery_type, public_id, params)
                with self.lock:
                    return self._asset(resource_type, delivery_type, public_id).resource(cloud)

            return self.serve_call(entry, authenticate, act)

        @app.post("/emulator/upload")
        def emulator_upload() -> tuple[Response, int]:
            values = request.get_json(silent=True)
            if not isinstance(values, dict):
                return jsonify({"error": {"message": "send the asset's fields as a JSON object"}}), 400
            return jsonify(self.upload(values)), 200

        @app.get("/emulator/state")
        def emulator_state() -> Response:
            with self.lock:
                return jsonify(
                    {
                        "assets": [asset.resource(cloud) for asset in self.assets.values()],
                        "faults": self.faults.as_dict(),
                        "admin": {
                            "budget": self.rate_limit.budget,
                            "window": self.rate_limit.window,
                            "used": self.rate_limit.used,
                        },
                    }
                )

        @app.get("/emulator/calls")
        def emulator_calls() -> Response:
            since = request.args.get("since", 0, type=int)
            with self.lock:
                return jsonify({"calls": self.calls[since:]})

        @app.get("/emulator/notifications")
        def emulator_notifications() -> Response:
            with self.lock:
                return jsonify({"notifications": json.loads(json.dumps(self.notifications))})

        @app.route("/emulator/faults", methods=["GET", "POST"])
        def emulator_faults() -> tuple[Response, int]:
            if request.method == "POST":
                values = request.get_json(silent=True)
                if not isinstance(values, dict):
                    return jsonify({"error": {"message": "send the faults to change as a JSON object"}}), 400
                with self.lock:
                    try:
                        self.faults.update(values)
                    except ValueError as error:
                        return jsonify({"error": {"message": str(error)}}), 400
            with self.lock:
                return jsonify(self.faults.as_dict()), 200

        return app

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
        """A threaded HTTP server for this emulator; call serve_forever() on it (or in a thread)."""
        return make_server(host, port, self.app(), threaded=True)


# --- helpers -------------------------------------------------------------------------------------


def _entry(
    api: str, endpoint: str, resource_type: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "api": api,
        "endpoint": endpoint,
        "resource_type": resource_type,
        **extra,
        "params": params,
        "time": time.time(),
    }


def _server_error(roll: float) -> tuple[Response, int, dict[str, str]]:
    """500 or 503 in Cloudinary's error shape, or a gateway's 502 HTML page (the SDK cannot parse it)."""
    status = (500, 502, 503)[int(roll * 1000) % 3]
    if status == 502:
        page = Response("<html><body><h1>502 Bad Gateway</h1></body></html>", mimetype="text/html")
        return page, 502, {}
    return jsonify({"error": {"message": "General Error"}}), status, {}


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value in (None, "", []):
        raise ApiError(400, f"Missing required parameter - {name}")
    return value


def _truthy(value: Any) -> bool:
    return value in (True, "1", "true", "True")


def _tag_list(value: Any) -> list[str]:
    """Tags as sent: a comma-separated string, or a `tag[]` list whose items may hold no comma."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not isinstance(value, str) and any("," in item for item in items):
        raise ApiError(400, "Tags may not contain commas")
    tags = [item.strip() for item in items if item.strip()]
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise ApiError(400, f"Tag is too long (max {MAX_TAG_LENGTH} characters): {tag[:40]}...")
    return tags


def _apply_tags(current: list[str], command: str, tags: list[str]) -> list[str]:
    if command in ("add", "set_exclusive"):
        return current + [tag for tag in dict.fromkeys(tags) if tag not in current]
    if command == "remove":
        return [tag for tag in current if tag not in tags]
    if command == "replace":
        return list(dict.fromkeys(tags))
    return []


def _context_change(asset: Asset, before: dict[str, str]) -> dict[str, Any]:
    after = asset.context
    return {
        "asset_id": asset.asset_id,
        "resource_type": asset.resource_type,
        "type": asset.type,
        "added": [{"name": k, "value": v} for k, v in after.items() if k not in before],
        "removed": [{"name": k, "value": v} for k, v in before.items() if k not in after],
        "updated": [{"name": k, "value": v} for k, v in after.items() if k in before and before[k] != v],
    }


def _metadata_value(value: str) -> Any:
    """The SDK sends list values as JSON arrays."""
    if value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _form_params(form: MultiDict[str, str]) -> dict[str, Any]:
    """Form fields as the API reads them: `name[]` repeated fields are one list."""
    params: dict[str, Any] = {}
    for key in form:
        if key.endswith("[]"):
            params[key[:-2]] = form.getlist(key)
        else:
            params[key] = form[key]
    return params


def _admin_params() -> dict[str, Any]:
    """Admin API parameters: a JSON body, form fields (`name[0]`-style lists) or the query string."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    params: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for source in (request.args, request.form):
        for key in source:
            match = re.fullmatch(r"(.+)\[\d*\]", key)
            if match:
                lists.setdefault(match.group(1), []).extend(source.getlist(key))
            else:
                params[key] = source[key]
    return {**params, **lists}


def _iso_now(zone: str = "+00:00") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + zone

"""A Cloudinary API emulator: a real HTTP server speaking the part of the Upload and Admin APIs we call.

It checks request signatures as Cloudinary does (CLOUDINARY.md, "Upload API"), keeps assets in
memory, records every call, and plays Cloudinary's side of notifications.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.serving import BaseWSGIServer, make_server

from postupload.config import Account
from postupload.signature import DIGEST_BY_LENGTH, sign_notification

log = logging.getLogger(__name__)

SIGNATURE_VALIDITY = 3600  # Upload API signatures are valid for one hour
UNSIGNED_PARAMS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})


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


class ApiError(Exception):
    """An answer in Cloudinary's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Asset:
    public_id: str
    resource_type: str = "image"
    type: str = "upload"
    format: str | None = "jpg"
    width: int | None = None
    height: int | None = None
    tags: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    moderation_status: str | None = None
    asset_id: str = field(default_factory=lambda: secrets.token_hex(16))
    version: int = field(default_factory=lambda: int(time.time()))
    derived: list[str] = field(default_factory=list)  # eager transformations, current
    derived_generated: int = 0  # every generation is billed, regenerations included

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
        return {
            "asset_id": self.asset_id,
            "public_id": self.public_id,
            "version": self.version,
            "resource_type": self.resource_type,
            "type": self.type,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "tags": list(self.tags),
            "context": {"custom": dict(self.context)} if self.context else {},
            "metadata": dict(self.metadata),
            "moderation_status": self.moderation_status,
            "derived": list(self.derived),
            "derived_generated": self.derived_generated,
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }


class Emulator:
    """The service's state and behaviour; `app()` puts HTTP in front of it."""

    def __init__(self, account: Account, notify_url: str | None = None) -> None:
        self.account = account
        self.notify_url = notify_url
        self.assets: dict[tuple[str, str, str], Asset] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    # --- assets -------------------------------------------------------------------------------

    def add_asset(self, fields: dict[str, Any]) -> Asset:
        """Create (or replace) an asset from upload fields."""
        known = {name for name in Asset.__dataclass_fields__ if name not in {"derived", "derived_generated"}}
        values = {key: value for key, value in fields.items() if key in known and value is not None}
        values.setdefault("public_id", secrets.token_hex(10))
        asset = Asset(**values)
        with self.lock:
            self.assets[(asset.resource_type, asset.type, asset.public_id)] = asset
        return asset

    def upload(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an asset and send the upload notification Cloudinary would send."""
        asset = self.add_asset(fields)
        if fields.get("notify", True):
            self.send_notification(self.upload_notification(asset))
        return asset.resource(self.account.cloud_name)

    def upload_notification(self, asset: Asset) -> dict[str, Any]:
        resource = asset.resource(self.account.cloud_name)
        body: dict[str, Any] = {
            "notification_type": "upload",
            "timestamp": _iso_now(),
            "request_id": secrets.token_hex(16),
        }
        for key in (
            "asset_id",
            "public_id",
            "version",
            "width",
            "height",
            "format",
            "resource_type",
            "type",
            "tags",
            "url",
            "secure_url",
        ):
            body[key] = resource[key]
        if asset.context:
            body["context"] = {"custom": dict(asset.context)}
        if asset.metadata:
            body["metadata"] = dict(asset.metadata)
        body["api_key"] = self.account.api_key
        return body

    def _asset(self, resource_type: str, delivery_type: str, public_id: str) -> Asset:
        asset = self.assets.get((resource_type, delivery_type, public_id))
        if asset is None:
            raise ApiError(404, f"Resource not found - {public_id}")
        return asset

    # --- notifications ------------------------------------------------------------------------

    def send_notification(self, body: dict[str, Any]) -> None:
        """Deliver a signed notification in the background, retrying non-200 answers."""
        if not self.notify_url:
            return
        raw = json.dumps(body, separators=(",", ":")).encode()
        threading.Thread(target=self._deliver, args=(self.notify_url, raw), daemon=True).start()

    def _deliver(self, url: str, raw: bytes, attempts: int = 3, pause: float = 0.5) -> None:
        for attempt in range(attempts):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Cld-Timestamp": timestamp,
                "X-Cld-Signature": sign_notification(raw, timestamp, self.account.api_secret),
            }
            try:
                with urllib.request.urlopen(urllib.request.Request(url, raw, headers), timeout=10) as answer:
                    if answer.status == 200:
                        return
            except OSError as error:
                log.warning("notification to %s failed (attempt %d): %s", url, attempt + 1, error)
            time.sleep(pause * (attempt + 1))

    # --- Upload API ---------------------------------------------------------------------------

    def check_upload_auth(self, params: dict[str, Any], authorization: str | None, now: float) -> str:
        """Raise ApiError 401 unless the request is signed (or Basic-authenticated) by our account."""
        if authorization and authorization.startswith("Basic "):
            expected = base64.b64encode(f"{self.account.api_key}:{self.account.api_secret}".encode())
            if not hmac.compare_digest(authorization[6:].strip().encode(), expected):
                raise ApiError(401, "Invalid credentials")
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
        to_sign = string_to_sign({k: v for k, v in params.items() if k not in UNSIGNED_PARAMS})
        algorithm = DIGEST_BY_LENGTH.get(len(signature), "sha1")
        digest = hashlib.new(algorithm, (to_sign + self.account.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(digest.encode(), signature.encode()):
            raise ApiError(401, f"Invalid Signature {signature}. String to sign - '{to_sign}'.")
        return "signature"

    def explicit(self, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """Upload API explicit: (re)generate eager transformations and answer the asset."""
        public_id = params.get("public_id")
        if not public_id:
            raise ApiError(400, "Missing required parameter - public_id")
        asset = self._asset(resource_type, params.get("type") or "upload", public_id)
        eager = [item for item in str(params.get("eager") or "").split("|") if item]
        with self.lock:
            for transformation in eager:
                # Existing eager images are always regenerated, and billed, by explicit.
                asset.derived_generated += 1
                if transformation not in asset.derived:
                    asset.derived.append(transformation)
        answer = asset.resource(self.account.cloud_name)
        if params.get("eager_async") in ("1", "true", True):
            answer["batch_id"] = secrets.token_hex(16)
            answer["eager"] = [{"transformation": item, "status": "processing"} for item in eager]
        else:
            answer["eager"] = [
                {"transformation": item, "url": asset.url(self.account.cloud_name, item)} for item in eager
            ]
        return answer

    # --- HTTP ---------------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry["seq"] = len(self.calls) + 1
            self.calls.append(entry)

    def app(self) -> Flask:
        """The Flask app serving the API and the emulator's own routes."""
        app = Flask("postupload.emulator")
        cloud = self.account.cloud_name

        @app.post(f"/v1_1/{cloud}/<resource_type>/<action>")
        def upload_api(resource_type: str, action: str) -> tuple[Response, int]:
            params = _form_params(request.form)
            entry: dict[str, Any] = {
                "api": "upload",
                "endpoint": action,
                "resource_type": resource_type,
                "params": params,
                "time": time.time(),
            }
            try:
                entry["auth"] = self.check_upload_auth(
                    params, request.headers.get("Authorization"), time.time()
                )
                if action != "explicit":
                    raise ApiError(404, f"Unsupported action {action}")
                answer, status = self.explicit(resource_type, params), 200
            except ApiError as error:
                answer, status = {"error": {"message": error.message}}, error.status
            entry["status"] = status
            self.record(entry)
            return jsonify(answer), status

        @app.post("/emulator/upload")
        def emulator_upload() -> tuple[Response, int]:
            fields = request.get_json(silent=True)
            if not isinstance(fields, dict):
                return jsonify({"error": {"message": "send the asset's fields as a JSON object"}}), 400
            return jsonify(self.upload(fields)), 200

        @app.get("/emulator/state")
        def emulator_state() -> Response:
            with self.lock:
                return jsonify({"assets": [a.resource(cloud) for a in self.assets.values()]})

        @app.get("/emulator/calls")
        def emulator_calls() -> Response:
            with self.lock:
                return jsonify({"calls": list(self.calls)})

        return app

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
        """A threaded HTTP server for this emulator; call serve_forever() on it (or in a thread)."""
        return make_server(host, port, self.app(), threaded=True)


def _form_params(form: MultiDict[str, str]) -> dict[str, Any]:
    """Form fields as the API reads them: `name[]` repeated fields are one list."""
    params: dict[str, Any] = {}
    for key in form:
        if key.endswith("[]"):
            params[key[:-2]] = form.getlist(key)
        else:
            params[key] = form[key]
    return params


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())

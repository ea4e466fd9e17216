"""The wire format of the Upload and Admin APIs: signatures, parameter encodings, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

from postupload.config import Account
from postupload.core.signature import DIGEST_BY_LENGTH

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


def sign_answer(public_id: str, version: int, api_secret: str) -> str:
    """The `signature` of an upload's answer: its public_id and version signed as a request is."""
    to_sign = string_to_sign({"public_id": public_id, "version": version})
    return hashlib.sha1((to_sign + api_secret).encode()).hexdigest()


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


def check_upload_auth(
    account: Account,
    params: dict[str, Any],
    authorization: str | None,
    now: float,
    unsigned: frozenset[str] = frozenset(),
) -> str:
    """Raise ApiError 401 unless the request is signed (or Basic-authenticated) by our account."""
    if authorization and authorization.startswith("Basic "):
        check_basic_auth(account, authorization)
        return "basic"
    if not params.get("api_key"):
        raise ApiError(401, "Must supply api_key")
    if params["api_key"] != account.api_key:
        raise ApiError(401, f"Unknown API key {params['api_key']}")
    signature, timestamp = str(params.get("signature") or ""), str(params.get("timestamp") or "")
    if not signature or not timestamp:
        raise ApiError(401, "Missing required parameter - signature and timestamp")
    if not timestamp.isdigit() or now - int(timestamp) > SIGNATURE_VALIDITY:
        raise ApiError(401, f"Stale request - reported time is {timestamp} which is more than 1 hour ago")
    skipped = UNSIGNED_PARAMS | unsigned
    to_sign = string_to_sign({k: v for k, v in params.items() if k not in skipped})
    algorithm = DIGEST_BY_LENGTH.get(len(signature), "sha1")
    digest = hashlib.new(algorithm, (to_sign + account.api_secret).encode()).hexdigest()
    if not hmac.compare_digest(digest.encode(), signature.encode()):
        raise ApiError(401, f"Invalid Signature {signature}. String to sign - '{to_sign}'.")
    return "signature"


def check_basic_auth(account: Account, authorization: str | None) -> None:
    if not authorization or not authorization.startswith("Basic "):
        raise ApiError(401, "Must supply api_key")
    expected = base64.b64encode(f"{account.api_key}:{account.api_secret}".encode())
    if not hmac.compare_digest(authorization[6:].strip().encode(), expected):
        raise ApiError(401, "Invalid credentials")


def required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value in (None, "", []):
        raise ApiError(400, f"Missing required parameter - {name}")
    return value


def truthy(value: Any) -> bool:
    return value in (True, "1", "true", "True")


def tag_list(value: Any) -> list[str]:
    """Tags as sent: a comma-separated string, or a `tag[]` list whose items may hold no comma."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not isinstance(value, str) and any("," in item for item in items):
        raise ApiError(400, "Tags may not contain commas")
    tags = [item.strip() for item in items if item.strip()]
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise ApiError(400, f"Tag is too long (max {MAX_TAG_LENGTH} characters): {tag[:40]}...")
    return tags


def metadata_value(value: str) -> Any:
    """The SDK sends list values as JSON arrays."""
    if value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def iso_now(zone: str = "+00:00") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + zone

"""Parsing a notification body and finding the assets it is about: bytes in, values out. No I/O."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema_rs

from postupload.errors import BadNotification

Notification = dict[str, Any]

# Cloudinary's bodies nest about five levels deep (moderation frames); far deeper is an attack on
# every recursive walk that follows (schema, matching, placeholders), so it is refused up front.
MAX_DEPTH = 32
# A Python int converts to float (matching) only below ~309 digits; no Cloudinary field comes close.
MAX_INTEGER_DIGITS = 30


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("postupload").joinpath("schemas/notification.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def schema_validator() -> jsonschema.protocols.Validator:
    """The validator for the notification envelope schema shipped in the package."""
    schema = _schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@cache
def _fast_validator() -> Any:
    """The same schema in jsonschema-rs (Rust): it says fast that a body is valid, on every request;
    only what it does not call valid goes through jsonschema, whose answer is the one that counts
    (a property test keeps the two agreeing). jsonschema's own pass was 12% of the intake's time."""
    return jsonschema_rs.validator_for(_schema())


def _surely_valid(value: Any) -> bool:
    try:
        return bool(_fast_validator().is_valid(value))
    except (ValueError, OverflowError):  # a value it cannot take (an integer past 64 bits)
        return False


def load_json(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it, bounded: no NaN/Infinity, no huge numbers, at most MAX_DEPTH deep.

    Raises BadNotification saying what is wrong; never RecursionError or a bare ValueError.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_integer, parse_float=_float)
    except json.JSONDecodeError as error:
        raise BadNotification("invalid_json", f"body is not JSON: {error}") from None
    except RecursionError:
        raise BadNotification("too_deep", f"body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # what our hooks raise, and the interpreter's own int-size limit
        raise BadNotification("invalid_number", str(error)) from None
    if _too_deep(value):
        raise BadNotification("too_deep", f"body nests deeper than {MAX_DEPTH} levels")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a number or null")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"a number of {len(text)} digits is too large (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def _too_deep(value: Any) -> bool:
    """Whether any value lies deeper than MAX_DEPTH, found without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_notification(body: bytes) -> Notification:
    """The body as a notification dict, or BadNotification saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadNotification("invalid_utf8", f"body is not UTF-8 (byte {error.start})") from None
    value = load_json(text)
    if not isinstance(value, dict):
        raise BadNotification("not_an_object", f"body must be a JSON object, got {type(value).__name__}")
    if _surely_valid(value):
        return value
    problem = jsonschema.exceptions.best_match(schema_validator().iter_errors(value))
    if problem is not None:
        raise BadNotification("not_a_notification", f"{problem.json_path}: {problem.message}")
    return value


def notification_id(body: bytes, cloud_name: str = "") -> str:
    """A stable id for a body delivered for a product environment: identical deliveries are one
    notification, the same bytes for two environments are two."""
    return hashlib.sha256(f"{cloud_name}\n".encode() + body if cloud_name else body).hexdigest()[:32]


# Who caused a notification, as Cloudinary's `notification_context.triggered_by` says
# (https://cloudinary.com/documentation/notifications: `{"source": "api", "id": <API key>}` for an
# API call, `{"source": "ui", "id": <user>}` for the Console).
OWN = "own"  # an API call made with this deployment's API key: postupload's own, or its loop
OTHER = "other"  # a user in the Console, or another API key
UNTOLD = "untold"  # no triggered_by (older deliveries, backfills, some types)


def origin(notification: Notification, api_key: str) -> str:
    """OWN, OTHER or UNTOLD for a notification delivered to the product environment whose calls are
    made with `api_key`."""
    context = notification.get("notification_context")
    by = context.get("triggered_by") if isinstance(context, dict) else None
    if not isinstance(by, dict):
        return UNTOLD
    return OWN if api_key and by.get("source") == "api" and by.get("id") == api_key else OTHER


@dataclass(frozen=True)
class Target:
    """An asset a notification is about, as every Cloudinary call on it names it."""

    resource_type: str
    type: str
    public_id: str
    asset_id: str | None = None
    cloud_name: str = ""  # its product environment, when known: public ids repeat across them

    @property
    def key(self) -> str:
        """A stable identity within its product environment: the asset_id (which survives renames)
        when the notification gives it. Every piece of per-asset state is kept under it, so
        nothing of one environment is shared with another, whatever asset_id a body claims."""
        return f"{self.cloud_name}:{self.asset_id or f'{self.resource_type}/{self.type}/{self.public_id}'}"

    @property
    def index_name(self) -> str:
        """The name its history is found by: the public_id, within its product environment (a cloud
        name has no ':', so no public_id can pass for another environment's)."""
        return f"{self.cloud_name}:{self.public_id}"


@dataclass(frozen=True)
class Located:
    """The assets of a notification, and why any it names could not be told apart (nothing guessed)."""

    targets: list[Target]
    problems: list[str]


# Delivery URLs read `.../<resource_type>/<type>/[transformation/]v<version>/<public_id>`, with the
# cloud name before them on res.cloudinary.com and without it on a private CDN or custom domain.
DELIVERY_TYPES = "upload|private|authenticated|fetch|multi|text|sprite|list|asset|facebook|youtube|vimeo"
_URL_KINDS = re.compile(rf"/(image|video|raw)/({DELIVERY_TYPES})/")


def kinds_from_url(url: Any) -> tuple[str, str] | None:
    """(resource_type, type) read from a delivery URL, or None when it names neither."""
    found = _URL_KINDS.search(url) if isinstance(url, str) else None
    return (found.group(1), found.group(2)) if found else None


def _top(notification: Notification, public_id_field: str = "public_id") -> Iterator[Any]:
    """A body that describes one asset itself; resource_type/type read from its fields or its URL."""
    urls = [notification.get("url"), notification.get("secure_url")]
    urls += [item.get("url") for item in notification.get("eager") or [] if isinstance(item, dict)]
    yield (notification.get(public_id_field), notification, urls)


def _from_url(notification: Notification) -> Iterator[Any]:
    """Moderation and info bodies carry no resource_type, type or asset_id: the URL tells them."""
    yield (notification.get("public_id"), {}, [notification.get("url"), notification.get("secure_url")])


def _resources(notification: Notification) -> Iterator[Any]:
    """`resources`: a list of assets (delete, tags) or a map keyed by public_id (move, context, metadata)."""
    resources = notification.get("resources")
    if isinstance(resources, list):
        for item in resources:
            if isinstance(item, dict):
                yield (item.get("public_id"), item, [])
    elif isinstance(resources, dict):
        for public_id, item in resources.items():
            if isinstance(item, dict):
                yield (public_id, item, [])


Finder = Callable[[Notification], Iterator[Any]]

# Where each kind of notification names its assets (CLOUDINARY.md; tests/data/notifications).
# Kinds not listed here are handled only when the body names public_id, resource_type and type.
WHERE_ASSETS: dict[str, Finder] = {
    "upload": _top,
    "eager": _top,
    "multi": _top,
    "explode": _top,
    "restore_asset_version": _top,
    "resource_display_name_changed": _top,
    "access_control_changed": _top,
    "rename": lambda notification: _top(notification, "to_public_id"),
    "moderation": _from_url,
    "info": _from_url,
    "delete": _resources,
    "resource_tags_changed": _resources,
    "resource_context_changed": _resources,
    "resource_metadata_changed": _resources,
    "move": _resources,
}
# The Upload API's own defaults, true of upload notifications only.
UPLOAD_DEFAULTS = {"resource_type": "image", "type": "upload"}


def locate(notification: Notification) -> Located:
    """The assets a notification is about, each with the resource_type and type its calls must name."""
    kind = notification.get("notification_type")
    finder = WHERE_ASSETS.get(kind) if isinstance(kind, str) else None
    if finder is None:
        if all(isinstance(notification.get(name), str) for name in ("public_id", "resource_type", "type")):
            finder = _top
        else:
            return Located(
                [], [f"notification_type {kind!r}: where its assets are is not known; nothing done"]
            )
    targets, problems = [], []
    for public_id, fields, urls in finder(notification):
        if not isinstance(public_id, str) or not public_id:
            problems.append(f"{kind} notification: an asset without a public_id was passed over")
            continue
        unsafe = unsafe_public_id(public_id)
        if unsafe:
            problems.append(f"public_id {public_id!r} refused: {unsafe}")
            continue
        target = _target(kind, public_id, fields, urls)
        if target is None:
            problems.append(
                f"{public_id}: the {kind} notification does not say its resource_type and type "
                "(or names ones that are not a Cloudinary resource type and delivery type)"
            )
        else:
            targets.append(target)
    return Located(targets, problems)


# resource_type and type become URL path segments of every call: only such names can be.
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def unsafe_public_id(public_id: str) -> str | None:
    """Why this public_id cannot be named in an API call, or None when it can.

    The Admin API takes the public_id in its URL path. The SDK decodes %xx before it builds the
    path (so `%3F` would name the asset `?`, and `%2e%2e` a `..` segment), and the HTTP client
    resolves `.` and `..` segments (so `mod/../victim` would name `victim`, or another endpoint).
    Control characters are never part of a public_id.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in public_id):
        return "it holds control characters"
    if unquote(public_id) != public_id:
        return "it holds a %-escape, which the SDK decodes: the call would name another asset"
    if any(segment in (".", "..") for segment in public_id.split("/")):
        return "a '.' or '..' path segment would steer the call to another asset or endpoint"
    return None


def _target(kind: Any, public_id: str, fields: dict[str, Any], urls: list[Any]) -> Target | None:
    resource_type, delivery_type = fields.get("resource_type"), fields.get("type")
    for url in urls:
        if resource_type and delivery_type:
            break
        found = kinds_from_url(url)
        if found:
            resource_type, delivery_type = resource_type or found[0], delivery_type or found[1]
    if kind == "upload":
        resource_type = resource_type or UPLOAD_DEFAULTS["resource_type"]
        delivery_type = delivery_type or UPLOAD_DEFAULTS["type"]
    if not (isinstance(resource_type, str) and _KIND_NAME.fullmatch(resource_type)):
        return None
    if not (isinstance(delivery_type, str) and _KIND_NAME.fullmatch(delivery_type)):
        return None
    asset_id = fields.get("asset_id")
    return Target(resource_type, delivery_type, public_id, asset_id if isinstance(asset_id, str) else None)

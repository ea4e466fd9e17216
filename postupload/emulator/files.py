"""What an upload sends as its file, read as Cloudinary reads it: bytes (a file the SDK sent), a data
URI, or a URL the service fetches; the image's format and size read with Pillow."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from postupload.emulator.wire import ApiError

MAX_FETCH = 20 * 2**20  # the emulator fetches at most this much of a URL
DATA_URI = re.compile(r"data:([\w/+.-]+)?(;[\w=-]+)*;base64,(.*)", re.DOTALL)


@dataclass(frozen=True)
class File:
    content: bytes
    filename: str  # as sent, or the URL's last segment; "stream" for bytes without a name; "file" for data
    format: str | None
    width: int | None
    height: int | None

    @property
    def etag(self) -> str:
        return hashlib.md5(self.content).hexdigest()

    @property
    def stem(self) -> str:
        return self.filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] if "." in self.filename else self.filename


def read(content: bytes | str, filename: str | None, resource_type: str) -> File:
    """The file of an upload: `content` is the bytes sent, or the text of the `file` field (a data URI
    or a URL; a local path cannot reach a service, so it is the URL or nothing)."""
    if isinstance(content, str):
        data = DATA_URI.fullmatch(content.strip())
        if data:
            try:
                raw = base64.b64decode("".join(data.group(3).split()), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "Invalid image file") from None
            return _described(raw, "file", resource_type)
        if re.match(r"https?://", content, re.IGNORECASE):
            return _described(_fetch(content), _url_name(content), resource_type)
        raise ApiError(400, f"Invalid image file (not bytes, a data URI or an http(s) URL): {content[:60]!r}")
    return _described(content, filename or "stream", resource_type)


def _described(raw: bytes, filename: str, resource_type: str) -> File:
    if not raw:
        raise ApiError(400, "Empty file")
    if resource_type == "raw":
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else None
        return File(raw, filename, extension, None, None)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return File(raw, filename, (image.format or "").lower() or None, image.width, image.height)
    except (UnidentifiedImageError, OSError, ValueError):
        if resource_type == "image":
            raise ApiError(400, "Invalid image file") from None
        return File(raw, filename, None, None, None)


def _fetch(url: str) -> bytes:
    """The emulator fetches only loopback URLs: it runs beside tests, not on the internet."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError(400, f"Error in loading {url} - the emulator fetches only loopback URLs")
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            raw: bytes = answer.read(MAX_FETCH + 1)
    except OSError as error:
        raise ApiError(400, f"Error in loading {url} - {error}") from None
    if len(raw) > MAX_FETCH:
        raise ApiError(400, f"Error in loading {url} - larger than {MAX_FETCH} bytes")
    return raw


def _url_name(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path.rstrip("/").rsplit("/", 1)[-1] or "file"

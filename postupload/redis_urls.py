"""What a REDIS_URL says, read without Redis's client (the CLI and gunicorn's master import this
before gevent patches what that client imports). Pure.

Besides one Redis (`redis://`, `rediss://`, `unix://`), the primary a set of Redis Sentinels names,
in the form most clients read (kombu, redis-sentinel-url):

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]

`password` is the Redis servers'; the sentinels' own is `sentinel_password` (most have none).
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_FORM = "redis+sentinel://[:password@]host:port[,host:port...]/service[/db]"


class SentinelURL:
    """The parts of a `redis+sentinel://` URL, or a ValueError saying what is wrong."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        self.sentinels: list[tuple[str, int]] = []
        for address in filter(None, netloc.split(",")):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel address {address!r}: expected host:port")
            self.sentinels.append((host.strip("[]"), int(port)))
        if not self.sentinels:
            raise ValueError(f"no sentinel address; expected {SENTINEL_FORM}")
        path = [unquote(part) for part in parts.path.split("/") if part]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"expected the service name and an optional db number: {SENTINEL_FORM}")
        self.service = path[0]
        self.db = int(path[1]) if len(path) == 2 else 0
        userinfo = parts.netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        self.username = unquote(user) or None
        self.password = unquote(password) or None
        self.sentinel_password = parse_qs(parts.query).get("sentinel_password", [None])[0]


def check_url(url: str) -> str | None:
    """What is wrong with a REDIS_URL, or None."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL_SCHEME:
        try:
            SentinelURL(url)
        except ValueError as error:
            return str(error)
        return None
    if scheme not in ("redis", "rediss", "unix"):
        return f"expected redis://[:password@]host:port/db (or rediss://, unix://, or {SENTINEL_FORM})"
    return None

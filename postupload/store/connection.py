"""Redis clients from a URL: one Redis (`redis://`, `rediss://`, `unix://`), or the primary a set of
Redis Sentinels names (`redis+sentinel://`, see postupload.redis_urls), followed to a new primary
when they fail over."""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from postupload.redis_urls import SENTINEL_SCHEME, SentinelURL

# A client that fails fast: the web answers 503 rather than hang when Redis is away.
FAIL_FAST: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2, "health_check_interval": 30}


# Error replies of a Redis that cannot take writes for now, as a ConnectionError: every part of
# postupload rides them out as it rides out a Redis that is away (503s, jobs waiting), instead of
# failing a job. NOREPLICAS: a primary with `min-replicas-to-write` and too few replicas (one that
# lost its replica to a failover, before the sentinels make it a replica); READONLY: a replica.
# A script's error carries the reply inside its own ("Error running script ...: -NOREPLICAS ...").
UNAVAILABLE_REPLIES = re.compile(r"(^|-)(NOREPLICAS|READONLY) ")


@functools.cache
def _refusals_unavailable(connection_class: Any) -> Any:
    """`connection_class`, with UNAVAILABLE_REPLIES raised as ConnectionError (the connection is
    dropped: through sentinels, the next one asks them where the primary is now)."""

    class Connection(connection_class):
        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except redis.ResponseError as error:
                if not UNAVAILABLE_REPLIES.search(str(error)):
                    raise
                self.disconnect()
                raise redis.ConnectionError(f"Redis takes no writes now: {error}") from error

    Connection.__name__ = Connection.__qualname__ = connection_class.__name__
    return Connection


def connect(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis the URL names (FAIL_FAST unless `options` say otherwise). Through
    sentinels, each new connection asks them for the primary. A Redis that takes no writes for now
    (UNAVAILABLE_REPLIES) is, to the client, a Redis that is away."""
    settings = {**FAIL_FAST, **options}
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        client = redis.Redis.from_url(url, **settings)
    else:
        parts = SentinelURL(url)
        asking = {"socket_timeout": 2, "socket_connect_timeout": 2, "password": parts.sentinel_password}
        sentinels = Sentinel(parts.sentinels, sentinel_kwargs=asking)
        client = sentinels.master_for(
            parts.service, db=parts.db, username=parts.username, password=parts.password, **settings
        )
    pool = client.connection_pool
    pool.connection_class = _refusals_unavailable(pool.connection_class)
    return client


def same_redis(connection: redis.Redis, **options: Any) -> redis.Redis:
    """A client of the same Redis (or the same sentinels' primary) on a pool of its own, with
    `options` changed: for commands that block longer than FAIL_FAST allows, or for a forked
    process (a pool copied across a fork may hold a lock another thread had then)."""
    pool = connection.connection_pool
    settings = {**pool.connection_kwargs, **options}
    if isinstance(pool, SentinelConnectionPool):
        settings.pop(
            "connection_pool", None
        )  # the old pool's link to the sentinels: the new one makes its own
        fresh = SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, is_master=pool.is_master, **settings
        )
        return redis.Redis(connection_pool=fresh)
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **settings))


def waiting(connection: redis.Redis, seconds: float) -> redis.Redis:
    """A client of the same Redis for commands that block up to `seconds` (BLPOP, BLMOVE), on a pool
    of its own: connections made by `connect` give up after 5 s."""
    return same_redis(connection, socket_timeout=seconds + 10)

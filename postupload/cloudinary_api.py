"""The thin shell around the official cloudinary SDK: per-call credentials, a timeout, our errors."""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import cloudinary.api
import cloudinary.api_client.call_api
import cloudinary.exceptions
import cloudinary.search
import cloudinary.uploader
from urllib3.util.retry import Retry

from postupload.backfill.events import AssetSource
from postupload.config import Account
from postupload.core.client import RateLimit
from postupload.errors import ActionError, RateLimitError
from postupload.store.metrics import Counts

# The SDK's exceptions carry no status code (cloudinary/exceptions.py); map them back.
STATUS_OF_ERROR: dict[type[Exception], int] = {
    cloudinary.exceptions.BadRequest: 400,
    cloudinary.exceptions.AuthorizationRequired: 401,
    cloudinary.exceptions.NotAllowed: 403,
    cloudinary.exceptions.NotFound: 404,
    cloudinary.exceptions.AlreadyExists: 409,
    cloudinary.exceptions.RateLimited: 420,
}
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409})
# Cloudinary's 420/429 message ends "Try again on <time>" (retry_time); without it, wait this long.
RATE_LIMIT_FALLBACK = 60.0


class CloudinaryClient:
    """Our `Client` through the official SDK, on one account: every call names it and has a timeout,
    and is timed into the `postupload_cloudinary_call_seconds` histogram by endpoint and status."""

    def __init__(self, account: Account, timeout: float, counts: Counts | None = None) -> None:
        self.account = account
        self.timeout = timeout
        self.counts = counts
        answer_rate_limits_at_once()

    def explicit(self, public_id: str, *, resource_type: str, type: str, **params: Any) -> dict[str, Any]:
        """Upload API explicit (not rate-limited): eager transformations and add-ons."""
        return dict(
            self._call(
                "explicit",
                cloudinary.uploader.explicit,
                public_id,
                resource_type=resource_type,
                type=type,
                **params,
            )
        )

    def tags(
        self, command: str, tags: list[str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API tags on up to 1000 assets; answers the public ids Cloudinary changed."""
        function = {
            "add": cloudinary.uploader.add_tag,
            "remove": cloudinary.uploader.remove_tag,
            "replace": cloudinary.uploader.replace_tag,
        }[command]
        answer = self._call(
            f"tags/{command}", function, tags, public_ids, resource_type=resource_type, type=type
        )
        return list(answer.get("public_ids") or [])

    def context(
        self, pairs: dict[str, str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API context add: merges the pairs; an empty value removes that key."""
        answer = self._call(
            "context",
            cloudinary.uploader.add_context,
            pairs,
            public_ids,
            resource_type=resource_type,
            type=type,
        )
        return list(answer.get("public_ids") or [])

    def metadata(
        self, values: dict[str, Any], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API metadata: sets structured metadata fields by external id."""
        answer = self._call(
            "metadata",
            cloudinary.uploader.update_metadata,
            values,
            public_ids,
            resource_type=resource_type,
            type=type,
        )
        return list(answer.get("public_ids") or [])

    def update(
        self, public_id: str, *, resource_type: str, type: str, **params: Any
    ) -> tuple[dict[str, Any], RateLimit | None]:
        """Admin API update (rate-limited); answers the resource and what its headers say of the budget."""
        answer = self._call(
            "update", cloudinary.api.update, public_id, resource_type=resource_type, type=type, **params
        )
        return dict(answer), rate_limit_of(answer)

    def list_assets(
        self, source: AssetSource, cursor: str | None, max_results: int = 500
    ) -> tuple[list[dict[str, Any]], str | None, RateLimit | None]:
        """One page of existing assets (Admin API: counted against its rate limit): by prefix, by tag,
        or by a Search API expression; the assets, the next page's cursor, and the budget left."""
        paging: dict[str, Any] = {"max_results": max_results}
        if cursor:
            paging["next_cursor"] = cursor
        if source.expression is not None:
            answer = self._call("search", _search, source.expression, **paging)
            resources = [_context_as_notified(resource) for resource in answer.get("resources") or []]
            return resources, answer.get("next_cursor"), rate_limit_of(answer)
        elif source.tag is not None:
            answer = self._call(
                "resources_by_tag",
                cloudinary.api.resources_by_tag,
                source.tag,
                resource_type=source.resource_type,
                tags=True,
                context=True,
                metadata=True,
                **paging,
            )
        else:
            answer = self._call(
                "resources",
                cloudinary.api.resources,
                resource_type=source.resource_type,
                type=source.type,
                prefix=source.prefix or "",
                tags=True,
                context=True,
                metadata=True,
                **paging,
            )
        return list(answer.get("resources") or []), answer.get("next_cursor"), rate_limit_of(answer)

    def _call(self, endpoint: str, function: Callable[..., Any], *args: Any, **params: Any) -> Any:
        # Upload calls honour only a per-call timeout; without one a call can hang forever. They are
        # asked to return errors rather than raise them: the SDK's exceptions drop the HTTP status.
        options = {**self.account.sdk_options(), "timeout": self.timeout}
        if function.__module__ == cloudinary.uploader.__name__:
            options["return_error"] = True
        status = "error"
        started = time.monotonic()
        try:
            answer = function(*args, **params, **options)
            error = answer.get("error") if isinstance(answer, dict) else None
            if isinstance(error, dict):
                code = error.get("http_code")
                status = str(code) if isinstance(code, int) else "error"
                raise failure(code if isinstance(code, int) else None, str(error.get("message", "")))
            status = "200"
            return answer
        except ActionError:
            raise
        except Exception as error:  # the SDK's exceptions, sockets, timeouts
            code, status = status_of(error)
            message = str(error)
            if "Error parsing server response" in message:  # the SDK quotes the whole body
                message = "its answer is not JSON (a proxy's error page?)"
            raise failure(code, message, status) from None
        finally:
            if self.counts is not None:
                seconds = time.monotonic() - started
                self.counts.observe(
                    "postupload_cloudinary_call_seconds",
                    seconds,
                    endpoint=endpoint,
                    status=status,
                    cloud=self.account.cloud_name,
                )


# urllib3's default retries (three, on connection errors), minus its wait for a Retry-After.
NO_RETRY_AFTER = Retry(3, respect_retry_after_header=False)


def answer_rate_limits_at_once() -> None:
    """Under the SDK, urllib3 sleeps out a 429's Retry-After (up to an hour: the rest of Cloudinary's
    window) before it tries a GET again, holding the calling thread past any timeout. Without that
    wait the 429 reaches us at once, and the work is deferred to the reset instead."""
    for pool_manager in (cloudinary.uploader._http, cloudinary.api_client.call_api._http):
        if pool_manager.connection_pool_kw.get("retries") is not NO_RETRY_AFTER:
            pool_manager.connection_pool_kw["retries"] = NO_RETRY_AFTER
            pool_manager.clear()  # pools made before keep their retries; new ones take these


def widen_http_pools(connections: int) -> None:
    """Let the SDK keep this many connections to each host. Its HTTP pools (urllib3's, made when the
    SDK is imported) keep 1 each by default, so with several calls in flight every call but one
    would open a new connection, and urllib3 would warn that it discards the rest."""
    for pool_manager in (cloudinary.uploader._http, cloudinary.api_client.call_api._http):
        pool_manager.connection_pool_kw["maxsize"] = max(connections, 1)
        pool_manager.clear()  # pools made before keep their size; new ones take this one


def _search(expression: str, max_results: int, next_cursor: str | None = None, **options: Any) -> Any:
    search = cloudinary.search.Search().expression(expression).max_results(max_results)
    for name in ("tags", "context", "metadata"):
        search = search.with_field(name)
    if next_cursor:
        search = search.next_cursor(next_cursor)
    return search.execute(**options)


def _context_as_notified(resource: dict[str, Any]) -> dict[str, Any]:
    """A Search API resource with its context as notifications and the Admin API carry it. Search
    answers context flat ({"sku": "RS-1"}, pycloudinary's test_should_include_context); rules are
    written against {"custom": {"sku": "RS-1"}}, so a backfill by expression would match nothing."""
    context = resource.get("context")
    if not isinstance(context, dict) or not context:
        return resource
    return {**resource, "context": {"custom": context}}


def status_of(error: Exception) -> tuple[int | None, str]:
    """The HTTP status an SDK exception stands for (its class, or its message), and the label for it:
    the status, or timeout / connection when no answer came."""
    message = str(error)
    # Admin API: "Error 503 - ..."; either API, a body that is not JSON: "... server response (502)".
    found = re.match(r"Error (\d{3}) - ", message) or re.search(r"server response \((\d{3})\)", message)
    if found:
        return int(found.group(1)), found.group(1)
    for kind, code in STATUS_OF_ERROR.items():
        if isinstance(error, kind):
            return code, str(code)
    if "timed out" in message.lower() or "timeout" in message.lower():
        return None, "timeout"
    if "Socket" in message or "Unexpected error" in message or isinstance(error, OSError):
        return None, "connection"
    return None, "error"


def failure(status: int | None, message: str, reason: str | None = None) -> ActionError:
    """Our error for what Cloudinary answered (status None: no answer came, for `reason`)."""
    if status in (420, 429):
        reset = retry_time(message) or time.time() + RATE_LIMIT_FALLBACK
        return RateLimitError(f"Cloudinary answered {status}: {message}", reset)
    if status in PERMANENT_STATUSES:
        return ActionError(f"Cloudinary answered {status}: {message}", permanent=True, status=status)
    if status is None:
        return ActionError(f"Cloudinary call failed: {message}", permanent=False, reason=reason)
    return ActionError(f"Cloudinary answered {status}: {message}", permanent=False, status=status)


def rate_limit_of(answer: Any) -> RateLimit | None:
    """The X-FeatureRateLimit-* headers, as the SDK exposes them on Admin API answers."""
    limit = getattr(answer, "rate_limit_allowed", None)
    remaining = getattr(answer, "rate_limit_remaining", None)
    reset_at = getattr(answer, "rate_limit_reset_at", None)
    if limit is None or remaining is None or reset_at is None:
        return None
    return RateLimit(limit, remaining, float(calendar.timegm(reset_at)))


def retry_time(message: str) -> float | None:
    """The time in Cloudinary's rate-limit message, as unix seconds. Users report it as
    "... Try again on 2024-10-04 14:00:00 UTC"; older captures and the headers use an HTTP date
    ("Try again on Tue, 18 Aug 2026 17:00:00 GMT"). Either form; None for anything else."""
    match = re.search(r"Try again on (.+?)\.?\s*$", message)
    if match is None:
        return None
    when = match.group(1).strip()
    plain = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*(?:UTC|GMT|Z|\+00:?00)?", when
    )
    if plain:
        moment = datetime.fromisoformat(f"{plain.group(1)}T{plain.group(2)}+00:00")
        return moment.timestamp()
    parsed = email.utils.parsedate_tz(when)
    return float(email.utils.mktime_tz(parsed)) if parsed else None

"""The thin shell around the official cloudinary SDK: per-call credentials, a timeout, our errors."""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Callable
from typing import Any

import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader

from postupload.client import RateLimit
from postupload.config import Account
from postupload.errors import ActionError, RateLimitError

# The SDK's exceptions carry no status code (cloudinary/exceptions.py); map them back.
PERMANENT_ERRORS: dict[type[Exception], int] = {
    cloudinary.exceptions.BadRequest: 400,
    cloudinary.exceptions.AuthorizationRequired: 401,
    cloudinary.exceptions.NotAllowed: 403,
    cloudinary.exceptions.NotFound: 404,
    cloudinary.exceptions.AlreadyExists: 409,
}
# Cloudinary's 420 message ends "Try again on <HTTP date>"; without it, wait this long.
RATE_LIMIT_FALLBACK = 60.0


class CloudinaryClient:
    """Our `Client` through the official SDK, on one account: every call names it and has a timeout."""

    def __init__(self, account: Account, timeout: float) -> None:
        self.account = account
        self.timeout = timeout

    def explicit(self, public_id: str, *, resource_type: str, type: str, **params: Any) -> dict[str, Any]:
        """Upload API explicit (not rate-limited): eager transformations and add-ons."""
        return dict(
            self._call(
                cloudinary.uploader.explicit, public_id, resource_type=resource_type, type=type, **params
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
        answer = self._call(function, tags, public_ids, resource_type=resource_type, type=type)
        return list(answer.get("public_ids") or [])

    def context(
        self, pairs: dict[str, str], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API context add: merges the pairs; an empty value removes that key."""
        answer = self._call(
            cloudinary.uploader.add_context, pairs, public_ids, resource_type=resource_type, type=type
        )
        return list(answer.get("public_ids") or [])

    def metadata(
        self, values: dict[str, Any], public_ids: list[str], *, resource_type: str, type: str
    ) -> list[str]:
        """Upload API metadata: sets structured metadata fields by external id."""
        answer = self._call(
            cloudinary.uploader.update_metadata, values, public_ids, resource_type=resource_type, type=type
        )
        return list(answer.get("public_ids") or [])

    def update(
        self, public_id: str, *, resource_type: str, type: str, **params: Any
    ) -> tuple[dict[str, Any], RateLimit | None]:
        """Admin API update (rate-limited); answers the resource and what its headers say of the budget."""
        answer = self._call(
            cloudinary.api.update, public_id, resource_type=resource_type, type=type, **params
        )
        return dict(answer), rate_limit_of(answer)

    def _call(self, function: Callable[..., Any], *args: Any, **params: Any) -> Any:
        # Upload calls honour only a per-call timeout; without one a call can hang forever.
        options = {**self.account.sdk_options(), "timeout": self.timeout}
        try:
            return function(*args, **params, **options)
        except cloudinary.exceptions.RateLimited as error:
            reset = retry_time(str(error)) or time.time() + RATE_LIMIT_FALLBACK
            raise RateLimitError(f"Cloudinary answered 420: {error}", reset) from None
        except tuple(PERMANENT_ERRORS) as error:
            status = PERMANENT_ERRORS[type(error)]
            raise ActionError(
                f"Cloudinary answered {status}: {error}", permanent=True, status=status
            ) from None
        except Exception as error:  # GeneralError, the SDK's bare Error/Exception for 502/504, sockets
            raise ActionError(f"Cloudinary call failed: {error}", permanent=False) from None


def rate_limit_of(answer: Any) -> RateLimit | None:
    """The X-FeatureRateLimit-* headers, as the SDK exposes them on Admin API answers."""
    limit = getattr(answer, "rate_limit_allowed", None)
    remaining = getattr(answer, "rate_limit_remaining", None)
    reset_at = getattr(answer, "rate_limit_reset_at", None)
    if limit is None or remaining is None or reset_at is None:
        return None
    return RateLimit(limit, remaining, float(calendar.timegm(reset_at)))


def retry_time(message: str) -> float | None:
    """The time in Cloudinary's "Try again on <date>" rate-limit message, as unix seconds."""
    match = re.search(r"Try again on (.+?)\.?$", message)
    if match is None:
        return None
    parsed = email.utils.parsedate_tz(match.group(1))
    return float(email.utils.mktime_tz(parsed)) if parsed else None

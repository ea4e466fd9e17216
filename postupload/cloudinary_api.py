"""The thin shell around the official cloudinary SDK: per-call credentials, a timeout, our errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudinary.exceptions
import cloudinary.uploader

from postupload.config import Account
from postupload.errors import ActionError

# The SDK's exceptions carry no status code (cloudinary/exceptions.py); map them back.
PERMANENT_ERRORS: dict[type[Exception], int] = {
    cloudinary.exceptions.BadRequest: 400,
    cloudinary.exceptions.AuthorizationRequired: 401,
    cloudinary.exceptions.NotAllowed: 403,
    cloudinary.exceptions.NotFound: 404,
    cloudinary.exceptions.AlreadyExists: 409,
}


class CloudinaryClient:
    """Calls on one account. Every call names its account and carries a timeout."""

    def __init__(self, account: Account, timeout: float) -> None:
        self.account = account
        self.timeout = timeout

    def explicit(self, public_id: str, *, resource_type: str, type: str, **params: Any) -> dict[str, Any]:
        """Upload API explicit (not rate-limited)."""
        return self._call(
            cloudinary.uploader.explicit, public_id, resource_type=resource_type, type=type, **params
        )

    def _call(self, function: Callable[..., Any], *args: Any, **params: Any) -> dict[str, Any]:
        # Upload calls honour only a per-call timeout; without one a call can hang forever.
        options = {**self.account.sdk_options(), "timeout": self.timeout}
        try:
            return dict(function(*args, **params, **options))
        except tuple(PERMANENT_ERRORS) as error:
            status = PERMANENT_ERRORS[type(error)]
            raise ActionError(
                f"Cloudinary answered {status}: {error}", permanent=True, status=status
            ) from None
        except Exception as error:  # GeneralError, RateLimited, the SDK's bare Error for 502/504 and sockets
            raise ActionError(f"Cloudinary call failed: {error}", permanent=False) from None

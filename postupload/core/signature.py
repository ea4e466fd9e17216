"""Cloudinary notification signatures: sign and verify, over the exact bytes received.

signature = hex(sha1|sha256(raw_body + X-Cld-Timestamp + api_secret)), a plain digest, not an HMAC
(cloudinary.com/documentation/notification_signatures; pycloudinary utils.verify_notification_signature).
Which digest an account uses is an account setting, so we tell them apart by length.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection

from postupload.errors import SignatureError

DIGEST_BY_LENGTH = {40: "sha1", 64: "sha256"}


def sign_notification(body: bytes, timestamp: str, secret: str, algorithm: str = "sha1") -> str:
    """The X-Cld-Signature Cloudinary would send for this body and timestamp."""
    return hashlib.new(algorithm, body + timestamp.encode() + secret.encode()).hexdigest()


def verify_notification(
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    secret: str,
    *,
    now: float,
    tolerance: int,
    algorithms: Collection[str] = ("sha1", "sha256"),
) -> None:
    """Raise SignatureError unless the headers sign this body recently enough, in either direction."""
    if not timestamp or not signature:
        missing = "X-Cld-Timestamp" if not timestamp else "X-Cld-Signature"
        raise SignatureError("missing_signature", f"header {missing} is missing; Cloudinary sends both")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("bad_timestamp", "X-Cld-Timestamp must be unix seconds") from None
    # The SDK accepts any future timestamp; a bounded skew stops a captured request living forever.
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            "stale_signature",
            f"X-Cld-Timestamp is {int(now - sent_at)} s from our clock; at most {tolerance} s is accepted",
        )
    algorithm = DIGEST_BY_LENGTH.get(len(signature))
    if algorithm is None or algorithm not in algorithms:
        raise SignatureError("bad_signature", "X-Cld-Signature is not a digest we accept")
    expected = sign_notification(body, timestamp, secret, algorithm)
    # Cloudinary sends lowercase hex; compare_digest refuses non-ASCII str, so compare bytes.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise SignatureError("bad_signature", "X-Cld-Signature does not match the body and our api_secret")

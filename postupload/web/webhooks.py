"""The webhook: verify, dedupe, enqueue, answer. It makes no Cloudinary call."""

from __future__ import annotations

import logging
import time

import redis
from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from postupload.core.envelope import Envelope
from postupload.core.notification import WHERE_ASSETS, origin
from postupload.errors import BadNotification, BodyTooLarge, UnsupportedMediaType
from postupload.logs import printable
from postupload.store.queue import enqueue_notification
from postupload.web.state import error_answer, web

log = logging.getLogger(__name__)
READ_AT_ONCE = 65_536  # bytes of the body asked for in one read
webhooks = Blueprint("webhooks", __name__)


@webhooks.post("/webhooks/cloudinary")
@webhooks.post("/webhooks/cloudinary/<cloud_name>")
def receive(cloud_name: str | None = None) -> tuple[Response, int]:
    shared = web()
    settings, accounts, queue = shared.parts.settings, shared.parts.accounts, shared.parts.queue
    # Each product environment at its own path, verified with its own secret; the bare path is
    # CLOUDINARY_URL's. What is sent to the wrong path fails its signature check.
    account = accounts.get(cloud_name) if cloud_name else settings.account
    g.cloud = account.cloud_name if account else "unknown"
    if account is None:
        g.answer = "unknown_cloud"
        if cloud_name:
            return error_answer(
                "unknown_cloud",
                f"no product environment {printable(cloud_name)!r} is served here: add it to "
                "POSTUPLOAD_ACCOUNTS, or check the notification URL set in its console",
                404,
            )
        return error_answer(
            "unknown_cloud",
            "this deployment serves several product environments: send each one's notifications to "
            "/webhooks/cloudinary/<cloud_name>",
            404,
        )
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            "unsupported_media_type", f"Content-Type must be application/json, got {request.mimetype!r}"
        )
    envelope = Envelope.from_http(
        _read_body(settings.max_body),
        request.headers,
        secret=account.api_secret,
        cloud_name=account.cloud_name,
        now=time.time(),
        tolerance=settings.signature_tolerance,
        algorithms=settings.signature_algorithms,
    )
    kind = envelope.notification_type
    g.notification_type = kind if kind in WHERE_ASSETS else "other"  # label values stay few
    g.origin = origin(envelope.notification, account.api_key)
    try:
        queued = enqueue_notification(queue, envelope, settings.retries, shared.keep, settings.redis_replicas)
    except redis.RedisError as error:
        log.error("notification %s not stored: %s", envelope.id, error)
        g.answer = "store_unavailable"
        return error_answer("store_unavailable", "the notification could not be stored; retry later", 503)
    answer = "queued" if queued else "duplicate"
    g.answer = answer
    log.info(
        "notification %s %s (%s)",
        envelope.id,
        answer,
        envelope.notification_type,
        extra={"notification": envelope.id, "cloud": account.cloud_name, "type": kind, "outcome": answer},
    )
    # The answer's JSON as a string: both values are words of ours (the id is hex), and jsonify
    # cost a twentieth of the intake's time.
    return Response(f'{{"id":"{envelope.id}","status":"{answer}"}}\n', mimetype="application/json"), 200


@webhooks.after_request
def count_notification(response: Response) -> Response:
    """Every answer of the webhook counted, error answers too, by what it said."""
    counts = web().parts.counts
    answer = g.get("answer") or _answer_code(response)
    # the cloud label only takes the names served: a path's is anybody's to choose
    counts.notification(
        g.get("notification_type", "unknown"), answer, g.get("cloud", "unknown"), g.get("origin", "unknown")
    )
    if answer != "store_unavailable":  # Redis is away: kept for the next flush
        counts.flush_soon()
    return response


def _answer_code(response: Response) -> str:
    """The error code of one of our JSON answers, or the status."""
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", response.status_code))
    return str(response.status_code)


def _read_body(limit: int) -> bytes:
    """The body, read up to `limit` bytes whether it came with a Content-Length or chunked."""
    parts: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            # A read of n bytes first makes a buffer of n (io's read): of the limit, a megabyte each
            # time, cost a tenth of the intake's time.
            part = request.stream.read(min(READ_AT_ONCE, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except HTTPException:
        raise  # werkzeug's own answers (a Content-Length over the limit: 413)
    except Exception:  # the server's parser on a malformed chunked body, or a broken connection
        raise BadNotification(
            "unreadable_body", "the body could not be read: malformed chunked encoding or a broken connection"
        ) from None
    if size > limit:
        raise BodyTooLarge("body_too_large", f"body is larger than POSTUPLOAD_MAX_BODY ({limit} bytes)")
    return b"".join(parts)

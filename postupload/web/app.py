"""The web process: verify, dedupe, enqueue, answer. It makes no Cloudinary call."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rq import Worker
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from postupload import logs
from postupload.config import Settings
from postupload.core.envelope import Envelope
from postupload.core.notification import WHERE_ASSETS
from postupload.errors import (
    BadNotification,
    BodyTooLarge,
    RequestRejected,
    RuleSetError,
    UnsupportedMediaType,
)
from postupload.logs import printable
from postupload.rules.source import RuleSource
from postupload.store.kept_notifications import Keep
from postupload.store.last_good import LastGood
from postupload.store.metrics import Recorder, StateCollector
from postupload.store.queue import connect, enqueue_notification, notification_queue
from postupload.web.console import console_blueprint

log = logging.getLogger(__name__)
METRICS_EVERY = 1.0  # seconds between a web process's metric flushes


def create_app(settings: Settings | None = None, connection: redis.Redis | None = None) -> Flask:
    """The Flask app; with no arguments, configured from the environment (gunicorn's entry)."""
    settings = settings or Settings.from_env()
    if not logging.getLogger().handlers:  # under gunicorn's own entry point nothing set it up
        logs.configure(settings.log_level, settings.log_format)
    accounts = settings.all_accounts()
    if not accounts:
        settings.require_account()  # says which variable to set
    connection = connection or connect(settings.require_redis_url())
    queue = notification_queue(connection)
    # Counts go to Redis at most once a second (one transaction, not one per notification).
    recorder = Recorder(connection, every=METRICS_EVERY).flush_in_background()
    rules = RuleSource(
        settings.rules_dir,
        on_invalid=recorder.invalid_rule_set,
        require_tests=settings.rules_require_tests,
        last_good=LastGood(connection),
    )
    keep = Keep(settings.preview_keep, settings.preview_days, settings.preview_megabytes)
    rules.current()  # at start, as every process does: siblings answer /readyz alike after a bad edit
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(StateCollector(connection, list(accounts), rules))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    if settings.trusted_proxies:  # TLS ended in front: the scheme and client are the proxies' word
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.register_blueprint(console_blueprint(settings, connection, rules))

    @app.post("/webhooks/cloudinary")
    @app.post("/webhooks/cloudinary/<cloud_name>")
    def webhook(cloud_name: str | None = None) -> tuple[Response, int]:
        # Each product environment at its own path, verified with its own secret; the bare path is
        # CLOUDINARY_URL's. What is sent to the wrong path fails its signature check.
        account = accounts.get(cloud_name) if cloud_name else settings.account
        g.cloud = account.cloud_name if account else "unknown"
        if account is None:
            g.answer = "unknown_cloud"
            if cloud_name:
                return _error(
                    "unknown_cloud",
                    f"no product environment {printable(cloud_name)!r} is served here: add it to "
                    "POSTUPLOAD_ACCOUNTS, or check the notification URL set in its console",
                    404,
                )
            return _error(
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
        try:
            queued = enqueue_notification(queue, envelope, settings.retries, keep)
        except redis.RedisError as error:
            log.error("notification %s not stored: %s", envelope.id, error)
            g.answer = "store_unavailable"
            return _error("store_unavailable", "the notification could not be stored; retry later", 503)
        answer = "queued" if queued else "duplicate"
        g.answer = answer
        log.info(
            "notification %s %s (%s)",
            envelope.id,
            answer,
            envelope.notification_type,
            extra={"notification": envelope.id, "cloud": account.cloud_name, "type": kind, "outcome": answer},
        )
        return jsonify({"status": answer, "id": envelope.id}), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            connection.ping()
        except redis.RedisError as error:
            log.warning("readyz: Redis does not answer: %s", error)  # where it is: for the logs only
            return _error("redis_unavailable", "Redis does not answer", 503)
        ruleset = rules.current()
        if ruleset is None:
            reason = rules_summary(rules.error) if rules.error else "no rule set loaded"
            return _error("no_rule_set", f"no valid rule set: {reason}", 503)
        # Readiness is about taking notifications, which needs neither a valid new edit nor a worker;
        # what is wrong elsewhere is said, not answered with a 503 that would stop the intake.
        workers = Worker.count(connection=connection)
        body: dict[str, Any] = {
            "status": "ready",
            "rules": len(ruleset.rules),
            "version": ruleset.version,
            "workers": workers,
        }
        if rules.error is not None:
            body["rules_error"] = rules_summary(rules.error)  # the last good set keeps running
        if workers == 0:
            body["workers_error"] = "no worker is alive: notifications are stored but not worked"
        return jsonify(body), 200

    @app.get("/metrics")
    def prometheus_metrics() -> Response | tuple[Response, int]:
        try:
            recorder.flush()  # this process's own counts are in the answer; others' within a second
            return Response(generate_latest(metrics), mimetype=CONTENT_TYPE_LATEST)
        except redis.RedisError as error:  # the counts live there: no answer rather than a wrong one
            log.warning("metrics: Redis does not answer: %s", error)
            return _error("redis_unavailable", "Redis does not answer; the metrics are kept there", 503)

    @app.before_request
    def own_counts_first() -> None:
        if request.blueprint == "console":  # its pages show counts: this process's own are in them
            recorder.flush()

    @app.after_request
    def count_notification(response: Response) -> Response:
        if request.endpoint == "webhook":
            answer = g.get("answer") or _answer_code(response)
            # the cloud label only takes the names served: a path's is anybody's to choose
            recorder.notification(g.get("notification_type", "unknown"), answer, g.get("cloud", "unknown"))
            if answer != "store_unavailable":  # Redis is away: kept for the next flush
                recorder.flush_soon()
        return response

    @app.errorhandler(RequestRejected)
    def rejected(error: RequestRejected) -> tuple[Response, int]:
        g.answer = error.code
        return _error(error.code, error.message, error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 400
        if status == 413:
            message = f"body is larger than POSTUPLOAD_MAX_BODY ({settings.max_body} bytes)"
            return _error("body_too_large", message, 413)
        return _error(error.name.lower().replace(" ", "_"), error.description or error.name, status)

    app.extensions["postupload.recorder"] = recorder
    return app


def close(app: Flask) -> None:
    """As a web process ends (gunicorn's worker_exit, postupload/web/serving.py): its last second of
    counts, which the background flusher has not added yet, goes to Redis instead of being lost."""
    app.extensions["postupload.recorder"].close()


def _read_body(limit: int) -> bytes:
    """The body, read up to `limit` bytes whether it came with a Content-Length or chunked."""
    parts: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            part = request.stream.read(limit + 1 - size)
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


def _answer_code(response: Response) -> str:
    """The error code of one of our JSON answers, or the status."""
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", response.status_code))
    return str(response.status_code)


def _error(code: str, message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def rules_summary(error: Exception) -> str:
    """What is wrong with the rule files, in codes and counts: `/readyz` answers anyone, and a
    problem's own words may quote a value (a URL with a token in it) or the rules directory."""
    where = "details: `postupload rules check` and the console's Rules page"
    if isinstance(error, RuleSetError):
        codes = sorted({problem.code for problem in error.problems})
        count = len(error.problems)
        return f"invalid: {', '.join(codes)} ({count} problem{'s' if count != 1 else ''}); {where}"
    return f"unreadable ({type(error).__name__}); {where}"

"""The app factory: the parts built once, the blueprints registered, the answers every view shares."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, g
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from postupload import logs
from postupload.config import Settings
from postupload.errors import (
    RequestRejected,
)
from postupload.parts import Parts
from postupload.store.kept_notifications import Keep
from postupload.store.metrics import StateCollector
from postupload.web.console import console
from postupload.web.health import health
from postupload.web.metrics_page import metrics_page
from postupload.web.state import Web, error_answer
from postupload.web.webhooks import webhooks

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, connection: redis.Redis | None = None) -> Flask:
    """The Flask app; with no arguments, configured from the environment (gunicorn's entry)."""
    settings = settings or Settings.from_env()
    if not logging.getLogger().handlers:  # under gunicorn's own entry point nothing set it up
        logs.configure(settings.log_level, settings.log_format)
    parts = Parts(settings, connection)
    accounts, connection, rules = parts.accounts, parts.connection, parts.rules
    parts.counts.flush_in_background()
    keep = Keep(settings.preview_keep, settings.preview_days, settings.preview_megabytes)
    rules.current()  # at start, as every process does: siblings answer /readyz alike after a bad edit
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(StateCollector(connection, list(accounts), rules))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    if settings.trusted_proxies:  # TLS ended in front: the scheme and client are the proxies' word
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.extensions["postupload"] = Web(parts, keep, metrics)
    app.register_blueprint(webhooks)
    app.register_blueprint(health)
    app.register_blueprint(metrics_page)
    app.register_blueprint(console)

    @app.errorhandler(RequestRejected)
    def rejected(error: RequestRejected) -> tuple[Response, int]:
        g.answer = error.code
        return error_answer(error.code, error.message, error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 400
        if status == 413:
            message = f"body is larger than POSTUPLOAD_MAX_BODY ({settings.max_body} bytes)"
            return error_answer("body_too_large", message, 413)
        return error_answer(error.name.lower().replace(" ", "_"), error.description or error.name, status)

    return app


def close(app: Flask) -> None:
    """As a web process ends (gunicorn's worker_exit, postupload/web/serving.py): its last second of
    counts, which the background flusher has not added yet, goes to Redis instead of being lost."""
    app.extensions["postupload"].parts.counts.close()

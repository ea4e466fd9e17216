"""How the web process is served by gunicorn: `postupload web` applies these settings, and the
Procfile loads this module as gunicorn's config (`-c python:postupload.web.serving`).

An event-driven worker class: a client that sends its request slowly, or keeps a connection idle,
costs a greenlet, not one of a few threads, so such clients cannot keep Cloudinary's notifications
from being answered (bench/slow_clients.py measures it). On the open internet, put a buffering
proxy in front as well (docs/deployment.md).
"""

from __future__ import annotations

from typing import Any

worker_class = "gevent"
worker_connections = 10_000  # connections per worker process, idle or slow ones included
keepalive = 5  # seconds an idle keep-alive connection is kept
timeout = 30  # a worker silent this long (stuck) is replaced by the master
graceful_timeout = 10
accesslog = "-"


def worker_exit(server: Any, worker: Any) -> None:
    """In each web process as it ends: its last counts go to Redis (postupload.web.app.close)."""
    from flask import Flask

    from postupload.web.app import close

    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):  # not gunicorn's stand-in for an app that failed to load
        close(app)


SETTINGS = {
    "worker_class": worker_class,
    "worker_connections": worker_connections,
    "keepalive": keepalive,
    "timeout": timeout,
    "graceful_timeout": graceful_timeout,
    "accesslog": accesslog,
    "worker_exit": worker_exit,
}

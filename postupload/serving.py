"""How the web process is served by gunicorn: `postupload web` applies these settings, and the
Procfile loads this module as gunicorn's config (`-c python:postupload.serving`).

An event-driven worker class: a client that sends its request slowly, or keeps a connection idle,
costs a greenlet, not one of a few threads, so such clients cannot keep Cloudinary's notifications
from being answered (bench/slow_clients.py measures it). On the open internet, put a buffering
proxy in front as well (README, Deploying).
"""

from __future__ import annotations

worker_class = "gevent"
worker_connections = 10_000  # connections per worker process, idle or slow ones included
keepalive = 5  # seconds an idle keep-alive connection is kept
timeout = 30  # a worker silent this long (stuck) is replaced by the master
graceful_timeout = 10
accesslog = "-"

SETTINGS = {
    "worker_class": worker_class,
    "worker_connections": worker_connections,
    "keepalive": keepalive,
    "timeout": timeout,
    "graceful_timeout": graceful_timeout,
    "accesslog": accesslog,
}

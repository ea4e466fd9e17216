"""The console's blueprint, and what every page shares: its answers to a missing store and its
headers (no caching, no framing, no script), and the message page."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, render_template

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")


@console.after_request
def no_caching(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'"
    return response


@console.errorhandler(redis.RedisError)
def store_unavailable(error: redis.RedisError) -> tuple[str, int]:
    return message("Redis does not answer", "The console reads everything from Redis; retry later.", 503)


def message(title: str, text: str, status: int) -> tuple[str, int]:
    return render_template("message.html", title=title, text=text), status

"""/metrics for Prometheus: this process's own counts flushed first, then everything read from
Redis (every process's counts, queue depths, workers), or a 503 rather than a wrong answer."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from postupload.web.state import error_answer, web

log = logging.getLogger(__name__)
metrics_page = Blueprint("metrics", __name__)


@metrics_page.get("/metrics")
def prometheus_metrics() -> Response | tuple[Response, int]:
    try:
        web().parts.counts.flush()  # this process's own counts are in the answer; others' within a second
        return Response(generate_latest(web().metrics), mimetype=CONTENT_TYPE_LATEST)
    except redis.RedisError as error:  # the counts live there: no answer rather than a wrong one
        log.warning("metrics: Redis does not answer: %s", error)
        return error_answer("redis_unavailable", "Redis does not answer; the metrics are kept there", 503)

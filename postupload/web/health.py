"""Liveness and readiness: /healthz answers while the process runs; /readyz says whether
notifications can be taken (Redis answers, a rule set is loaded) and what is wrong elsewhere."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, Response, jsonify
from rq import Worker

from postupload.web.state import error_answer, rules_summary, web

log = logging.getLogger(__name__)
health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    connection, rules = web().parts.connection, web().parts.rules
    try:
        connection.ping()
    except redis.RedisError as error:
        log.warning("readyz: Redis does not answer: %s", error)  # where it is: for the logs only
        return error_answer("redis_unavailable", "Redis does not answer", 503)
    ruleset = rules.current()
    if ruleset is None:
        reason = rules_summary(rules.error) if rules.error else "no rule set loaded"
        return error_answer("no_rule_set", f"no valid rule set: {reason}", 503)
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

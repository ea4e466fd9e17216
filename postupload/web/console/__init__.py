"""The console: what ops look at (`/console/` on the web process). Server-rendered, no JavaScript.

Off unless POSTUPLOAD_CONSOLE_TOKEN is set. Every page asks for the token, as `Authorization: Bearer`
or through the login form, which starts a session: a random HttpOnly, SameSite=Strict cookie, kept
in Redis (by its hash) with a CSRF value of its own for 12 hours or until logout. Every POST from a
cookie session carries that CSRF value. Wrong tokens are throttled per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from postupload.backfill.runner import recent_backfills
from postupload.config import Settings
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.notification import load_json, locate
from postupload.errors import BadNotification, RuleSetError
from postupload.rules.explain import decisions, describe
from postupload.rules.loading import load_ruleset
from postupload.rules.preview import diff
from postupload.rules.source import RuleSource
from postupload.store import history, keys
from postupload.store.failures import failed_job_ids, failed_jobs, replay, waiting_jobs
from postupload.store.kept_notifications import latest
from postupload.store.state import matches_last_day, notifications_per_minute, overview

COOKIE = "postupload_console"
PLAYGROUND_RECENT = 20  # the latest kept notifications the playground offers
PREVIEW_RECENT = 1000  # recorded notifications a console preview runs through, unless asked otherwise
PLAYGROUND_LIMIT = 262_144  # bytes of a pasted notification
SHOWN = 200  # failed and waiting jobs listed on a page (the counts are of all)


def console_blueprint(settings: Settings, connection: redis.Redis, rules: RuleSource) -> Blueprint:
    console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
    token = settings.console_token
    cloud_names = list(settings.all_accounts())

    @console.before_request
    def authenticate() -> tuple[str, int] | None:
        if token is None:
            return _message(
                "The console is off",
                "Set POSTUPLOAD_CONSOLE_TOKEN (16 characters or more) on the web process to turn it on.",
                404,
            )
        g.csrf = _derive(token, "csrf")  # for a Bearer request, which needs none; a session has its own
        if request.endpoint == "console.login":
            return None
        how = _signed_in(token, connection)
        if how is None:
            return render_template(
                "login.html", next=_local(request.full_path.rstrip("?")), failed=False
            ), 401
        # A browser sends the cookie by itself, whatever page made it post: a request signed in by
        # the cookie proves it came from our form. A Bearer token is sent only by who holds it.
        if request.method == "POST" and how == "cookie":
            sent = request.form.get("csrf", "")
            if not hmac.compare_digest(sent.encode(), g.csrf.encode()):
                return _message(
                    "Refused", "The form is out of date (CSRF check failed): reload the page.", 403
                )
        return None

    @console.after_request
    def no_caching(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'"
        return response

    @console.errorhandler(redis.RedisError)
    def store_unavailable(error: redis.RedisError) -> tuple[str, int]:
        return _message("Redis does not answer", "The console reads everything from Redis; retry later.", 503)

    @console.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | Response | tuple[str, int] | str:
        assert token is not None
        target = _local(request.values.get("next", ""))
        if request.method == "GET":
            return render_template("login.html", next=target, failed=False)
        failures = keys.login_failures(request.remote_addr or "")
        if int(connection.get(failures) or 0) >= keys.LOGIN_FAILURES:
            wait = max(1, int(connection.ttl(failures)))
            page, status = _message(
                "Too many attempts", f"Too many wrong tokens from your address: try again in {wait} s.", 429
            )
            return Response(page, status, {"Retry-After": str(wait)})
        if not hmac.compare_digest(request.form.get("token", "").encode(), token.encode()):
            with connection.pipeline() as pipe:  # the window starts at the first failure
                pipe.set(failures, 0, ex=keys.LOGIN_WINDOW, nx=True)  # (EXPIRE NX needs Redis 7)
                pipe.incr(failures)  # keeps the time to live
                pipe.execute()
            return render_template("login.html", next=target, failed=True), 401
        # A session of its own, kept in Redis: logout and expiry end it, and its cookie says nothing
        # about the token.
        session = secrets.token_urlsafe(32)
        connection.set(_session_key(session), secrets.token_hex(32), ex=keys.CONSOLE_SESSION_TTL)
        response = redirect(target, code=303)
        response.set_cookie(
            COOKIE,
            session,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,  # behind TLS termination: POSTUPLOAD_TRUSTED_PROXIES
            path="/console/",
            max_age=keys.CONSOLE_SESSION_TTL,
        )
        return response

    @console.post("/logout")
    def logout() -> BaseResponse:
        connection.delete(_session_key(request.cookies.get(COOKIE, "")))
        response = redirect(url_for("console.login"), code=303)
        response.delete_cookie(COOKIE, path="/console/")
        return response

    @console.get("/")
    def home() -> str:
        now = time.time()
        per_minute = notifications_per_minute(connection, now)
        counts = [sum(answers.values()) for _, answers in per_minute]
        return render_template(
            "overview.html",
            state=overview(connection, cloud_names, now),
            ruleset=rules.current(),
            rules_error=rules.error,
            failures=failed_jobs(connection, latest=5)[::-1],
            per_minute=[(stamp, count) for (stamp, _), count in zip(per_minute, counts, strict=True)],
            peak=max(counts) or 1,
            last_hour=sum(counts),
            now=now,
        )

    @console.get("/rules")
    def rule_list() -> str:
        ruleset = rules.current()
        return render_template(
            "rules.html",
            ruleset=ruleset,
            rules_error=rules.error,
            matches=matches_last_day(connection),
        )

    @console.route("/playground", methods=["GET", "POST"])
    def playground() -> tuple[str, int]:
        recent = latest(connection, PLAYGROUND_RECENT)
        text = request.form.get("notification", "")
        cloud = request.form.get("cloud", settings.default_cloud_name())
        report, problem, status = None, None, 200
        if request.method == "GET" and request.args.get("notification"):
            picked = next((item for item in recent if item.id == request.args["notification"]), None)
            text = json.dumps(picked.notification, indent=2) if picked else ""
            cloud = picked.cloud_name if picked else cloud
            if picked is None:
                problem = (
                    f"notification {request.args['notification']!r} is not among the "
                    f"{PLAYGROUND_RECENT} latest kept; paste it instead"
                )
                status = 404
        if text.strip() and problem is None:
            report, problem = _evaluate(text, rules, cloud)
            status = 400 if problem else 200
        return render_template(
            "playground.html",
            recent=recent,
            text=text,
            report=report,
            problem=problem,
            clouds=cloud_names,
            cloud=cloud,
        ), status

    @console.get("/preview")
    def preview() -> str:
        """What the rules on disk would change, against the running set, on recorded notifications."""
        running = rules.current()
        recent = request.args.get("recent", PREVIEW_RECENT, type=int) or PREVIEW_RECENT
        try:
            on_disk, problems = load_ruleset(rules.directory), []
        except RuleSetError as error:
            on_disk, problems = None, error.problems
        report = None
        if running is not None and on_disk is not None:
            envelopes = latest(connection, max(1, min(recent, settings.preview_keep or 1)))
            report = diff(running, on_disk, envelopes)
        return render_template(
            "preview.html",
            running=running,
            on_disk=on_disk,
            problems=problems,
            gate=rules.error if on_disk is not None else None,
            report=report,
            recent=recent,
        )

    @console.get("/backfills")
    def backfills() -> str:
        return render_template("backfills.html", backfills=recent_backfills(connection))

    @console.get("/assets")
    def assets() -> str:
        query = request.args.get("q", "").strip()
        chosen = request.args.get("cloud", "")
        found = (
            history.find(connection, query, [chosen] if chosen in cloud_names else cloud_names)
            if query
            else []
        )
        cloud, key = found[0] if found else (chosen, "")
        entries = history.entries(connection, key) if key else []
        return render_template(
            "asset.html",
            query=query,
            entries=entries,
            clouds=cloud_names,
            cloud=cloud,
            also=[name for name, _ in found[1:]],
        )

    @console.get("/jobs")
    def jobs() -> str:
        state = overview(connection, cloud_names)
        return render_template(
            "jobs.html",
            failed=failed_jobs(connection, latest=SHOWN)[::-1],
            failed_count=state.failed,
            waiting=waiting_jobs(connection, soonest=SHOWN),
            waiting_count=state.retrying + state.deferred,
            replayed=request.args.get("replayed", type=int),
            several=len(cloud_names) > 1,
        )

    @console.post("/jobs/replay")
    def replay_jobs() -> BaseResponse | tuple[str, int]:
        chosen = request.form.getlist("job")
        if request.form.get("all"):
            chosen = failed_job_ids(connection)
        try:
            replayed = replay(connection, chosen, settings.retries)
        except KeyError as error:
            return _message("Not replayed", f"Not a failed job (any more): {error.args[0]}", 404)
        return redirect(url_for("console.jobs", replayed=len(replayed)), code=303)

    @console.app_template_filter("when")
    def when(moment: float | datetime | None) -> str:
        if moment is None:
            return "—"
        if isinstance(moment, datetime):
            moment = moment.timestamp()
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")

    console.add_app_template_global(describe, "describe")

    @console.app_template_filter("assets")
    def assets_of(notification: dict[str, Any]) -> str:
        """The public ids a notification is about, as the worker finds them."""
        return ", ".join(target.public_id for target in locate(notification).targets)

    @console.app_template_filter("rule_file")
    def rule_file(file: str) -> str:
        """A rule file's path as ops know it: within the rules directory."""
        path, directory = Path(file), rules.directory
        return str(path.relative_to(directory)) if path.is_relative_to(directory) else file

    @console.app_template_filter("pretty")
    def pretty(value: Any) -> str:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)

    return console


def _evaluate(text: str, rules: RuleSource, cloud_name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Each rule's decision and the plan (the very calls a worker would make) for a pasted
    notification delivered for `cloud_name`, or what is wrong with it."""
    body = text.encode()
    if len(body) > PLAYGROUND_LIMIT:
        return None, f"the notification is larger than {PLAYGROUND_LIMIT} bytes"
    try:
        notification = load_json(body)
    except BadNotification as error:
        return None, f"not JSON: {error.message}"
    if not isinstance(notification, dict):
        return None, "a notification is a JSON object"
    ruleset = rules.current()
    if ruleset is None:
        return None, "no valid rule set is loaded"
    envelope = Envelope.of(body, notification, cloud_name)
    planned = decide(ruleset, envelope)
    return {"decisions": decisions(ruleset, envelope, planned.rules), "plan": planned}, None


def _signed_in(token: str, connection: redis.Redis) -> str | None:
    """How the request is signed in: "bearer" (the token in the Authorization header), "cookie"
    (a live session's cookie, whose CSRF value goes in `g.csrf`; any other Authorization scheme
    is ignored), or None."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return "bearer" if hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode()) else None
    cookie = request.cookies.get(COOKIE, "")
    csrf = connection.get(_session_key(cookie)) if cookie else None
    if csrf is None:
        return None
    g.csrf = csrf.decode() if isinstance(csrf, bytes) else str(csrf)
    return "cookie"


def _session_key(cookie: str) -> str:
    return keys.console_session(hashlib.sha256(cookie.encode()).hexdigest())


def _derive(token: str, purpose: str) -> str:
    """A value that proves knowledge of the token without being it (changing the token voids it)."""
    return hmac.new(token.encode(), f"postupload-console:{purpose}".encode(), hashlib.sha256).hexdigest()


def _local(target: str) -> str:
    """Where to go after login: a console page of this site, never another site."""
    parts = urlsplit(target)
    unprintable = any(ord(char) < 32 or ord(char) == 127 for char in target)  # a header line of its own
    if unprintable or parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return "/console/"
    return target


def _message(title: str, text: str, status: int) -> tuple[str, int]:
    return render_template("message.html", title=title, text=text), status

"""Who may see the console: the token as `Authorization: Bearer`, or a session started by the login
form (a random HttpOnly, SameSite=Strict cookie kept in Redis by its hash, with a CSRF value of its
own); wrong tokens throttled per client address."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

import redis
from flask import Response, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from postupload.store import keys
from postupload.web.console.blueprint import console, message
from postupload.web.state import web

COOKIE = "postupload_console"


def _token() -> str | None:
    return web().parts.settings.console_token


@console.before_request
def authenticate() -> tuple[str, int] | None:
    web().parts.counts.flush()  # the pages show counts: this process's own are in them
    token = _token()
    if token is None:
        return message(
            "The console is off",
            "Set POSTUPLOAD_CONSOLE_TOKEN (16 characters or more) on the web process to turn it on.",
            404,
        )
    g.csrf = _derive(token, "csrf")  # for a Bearer request, which needs none; a session has its own
    if request.endpoint == "console.login":
        return None
    how = _signed_in(token, web().parts.connection)
    if how is None:
        return render_template("login.html", next=_local(request.full_path.rstrip("?")), failed=False), 401
    # A browser sends the cookie by itself, whatever page made it post: a request signed in by
    # the cookie proves it came from our form. A Bearer token is sent only by who holds it.
    if request.method == "POST" and how == "cookie":
        sent = request.form.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), g.csrf.encode()):
            return message("Refused", "The form is out of date (CSRF check failed): reload the page.", 403)
    return None


@console.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | Response | tuple[str, int] | str:
    token = _token()
    assert token is not None
    connection = web().parts.connection
    target = _local(request.values.get("next", ""))
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    failures = keys.login_failures(request.remote_addr or "")
    if int(connection.get(failures) or 0) >= keys.LOGIN_FAILURES:
        wait = max(1, int(connection.ttl(failures)))
        page, status = message(
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
    connection = web().parts.connection
    connection.delete(_session_key(request.cookies.get(COOKIE, "")))
    response = redirect(url_for("console.login"), code=303)
    response.delete_cookie(COOKIE, path="/console/")
    return response


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

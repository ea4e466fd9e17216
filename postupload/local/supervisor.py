"""`postupload run`: every process of a local deployment, started in order, kept running, stopped in
reverse."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import redis

from postupload import processes
from postupload.config import DEV_ACCOUNT, Account, Settings, environment
from postupload.errors import PostuploadError
from postupload.local import run_env
from postupload.local.redis_server import RedisServer, free_port
from postupload.processes import StopFlag, die_with_parent
from postupload.store.connection import connect

EXAMPLE_NOTIFICATION = Path("examples/upload.json")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # a closed terminal stops it all too
RESTARTS = 5  # a child that dies this often within RESTART_WINDOW seconds is given up on
RESTART_WINDOW = 60.0


@dataclass
class Child:
    """One process we started, and how to start it again."""

    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    deaths: list[float] = field(default_factory=list)

    def start(self) -> Child:
        # Its own session: a Ctrl-C reaches only us, and we stop the children in order (worker
        # before Redis). The kernel ends it if we die without a word (SIGKILL).
        self.process = subprocess.Popen(
            self.command, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )
        return self

    def stop(self) -> None:
        processes.stop(self.process)


def run_local(settings: Settings, port: int, environ: Mapping[str, str] | None = None) -> None:
    """Embedded Redis (unless REDIS_URL), the emulator (unless CLOUDINARY_URL), web and worker."""
    env = environment() if environ is None else dict(environ)
    check_port(port)
    if settings.redis_url is not None:
        _check_redis(settings.redis_url)
    stop = _stop_on_signals()
    children: list[Child] = []
    redis_server = None
    webhook_url = f"http://127.0.0.1:{port}/webhooks/cloudinary"
    me = [sys.executable, "-m", "postupload"]
    # The console is on, with a token made for this run unless one was chosen.
    made_token = None if settings.console_token else secrets.token_urlsafe(24)
    if made_token:
        env["POSTUPLOAD_CONSOLE_TOKEN"] = made_token
    try:
        if settings.redis_url is None:
            redis_server = RedisServer(Path("var/redis")).start()
            env["REDIS_URL"] = redis_server.url
        account = settings.account
        if account is None:
            emulator_port = free_port()
            account = replace(DEV_ACCOUNT, upload_prefix=f"http://127.0.0.1:{emulator_port}")
            env["CLOUDINARY_URL"] = account.to_url()
            seed = ["--asset", str(EXAMPLE_NOTIFICATION)] if EXAMPLE_NOTIFICATION.exists() else []
            command = [*me, "emulator", "--port", str(emulator_port), "--notify-url", webhook_url, *seed]
            children.append(Child("emulator", command, env).start())
        children.append(Child("web", [*me, "web", "--port", str(port)], env).start())
        children.append(Child("worker", [*me, "worker"], env).start())
        if not _wait_for_web(port, children, stop):
            return
        _banner(webhook_url, env, account, settings.account is None, made_token)
        found = {
            "REDIS_URL": env["REDIS_URL"],
            "POSTUPLOAD_WEB_URL": f"http://127.0.0.1:{port}",
            "POSTUPLOAD_RULES_DIR": str(settings.rules_dir.resolve()),
        }
        if settings.account is None:  # the development account's secret is no secret
            found["CLOUDINARY_URL"] = env["CLOUDINARY_URL"]
            found["POSTUPLOAD_EMULATOR_URL"] = account.upload_prefix or ""
        run_env.write(found)
        _supervise(children, stop)
    finally:
        run_env.remove()
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        for child in reversed(children):  # worker first (it finishes its job), Redis last
            child.stop()
        if redis_server is not None:
            redis_server.stop()


def check_port(port: int) -> None:
    """Refuse a port something listens on. Connections of a run just stopped (TIME-WAIT) do not
    count: the web binds with SO_REUSEADDR too, as gunicorn does, so a restart is not refused."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PostuploadError(f"port {port} is in use; stop what uses it, or give --port") from None


def _check_redis(url: str) -> None:
    try:
        connect(url, socket_timeout=2).ping()
    except (redis.RedisError, ValueError) as error:
        raise PostuploadError(f"REDIS_URL {_masked(url)} does not answer: {error}") from None


def _stop_on_signals() -> StopFlag:
    stop = StopFlag()  # set by the handlers: no lock (processes.StopFlag)
    # Installed explicitly: a shell starting us in the background leaves SIGINT ignored.
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: stop.set())
    return stop


def _wait_for_web(port: int, children: list[Child], stop: StopFlag, timeout: float = 30) -> bool:
    """Until our web process answers /healthz (the port was free before it started: it is ours)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        dead = [child.name for child in children if child.process and child.process.poll() is not None]
        if dead:
            raise PostuploadError(f"{', '.join(dead)} stopped while starting; see its messages above")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            stop.wait(0.2)
    if stop.is_set():
        return False  # stopped while starting: nothing to report
    raise PostuploadError(f"the web process did not answer on port {port} within {timeout} s")


def _masked(url: str) -> str:
    """A URL with the password part hidden: banners and errors are read over shoulders."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest or ":" not in rest.split("@", 1)[0]:
        return url
    user, _, tail = rest.partition("@")
    return f"{scheme}{sep}{user.split(':', 1)[0]}:***@{tail}"


def _banner(
    webhook_url: str, env: dict[str, str], account: Account, development: bool, made_token: str | None
) -> None:
    emulator = f" (emulator at {account.upload_prefix})" if development else ""
    lines = [
        "",
        f"postupload is running. POST Cloudinary notifications to {webhook_url}",
        f"  Redis: {_masked(env['REDIS_URL'])}",
        f"  Cloudinary: cloud {account.cloud_name}{emulator}",
        f"  Console: {webhook_url.removesuffix('webhooks/cloudinary')}console/",
        f"    token: {made_token} (made for this run; set POSTUPLOAD_CONSOLE_TOKEN to choose one)"
        if made_token
        else "    token: the one in POSTUPLOAD_CONSOLE_TOKEN",
        # Commands run here find this stack (Redis, web, the development account) in var/run.env.
        "Send a signed sample notification:",
        f"  .venv/bin/postupload notify {EXAMPLE_NOTIFICATION}",
    ]
    if development:
        lines.append(f"See the calls it caused: curl {account.upload_prefix}/emulator/calls")
    lines.append("Stop with Ctrl-C.\n")
    click.echo("\n".join(lines))


def _supervise(children: list[Child], stop: StopFlag) -> None:
    """Until a stop signal: a child that dies is started again, unless it keeps dying."""
    while not stop.wait(0.2):
        for child in children:
            if child.process is None or child.process.poll() is None:
                continue
            now = time.monotonic()
            child.deaths = [moment for moment in child.deaths if now - moment < RESTART_WINDOW] + [now]
            if len(child.deaths) >= RESTARTS:
                raise PostuploadError(
                    f"{child.name} stopped {len(child.deaths)} times within {RESTART_WINDOW:.0f} s "
                    f"(last with {child.process.returncode}); stopping everything"
                )
            click.echo(f"{child.name} stopped with {child.process.returncode}; starting it again", err=True)
            child.start()
    click.echo("stopping")

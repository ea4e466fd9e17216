"""`postupload run`: every process of a local deployment, started in order and stopped in reverse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import click

from postupload.config import DEV_ACCOUNT, Account, Settings
from postupload.errors import PostuploadError
from postupload.redis_server import RedisServer, free_port

EXAMPLE_NOTIFICATION = Path("examples/upload.json")


def run_local(settings: Settings, port: int, environ: Mapping[str, str] | None = None) -> None:
    """Embedded Redis (unless REDIS_URL), the emulator (unless CLOUDINARY_URL), web and worker."""
    env = dict(os.environ if environ is None else environ)
    children: list[subprocess.Popen[bytes]] = []
    redis_server = None
    webhook_url = f"http://127.0.0.1:{port}/webhooks/cloudinary"
    me = [sys.executable, "-m", "postupload"]
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
            children.append(_start(command, env))
        children.append(_start([*me, "web", "--port", str(port)], env))
        children.append(_start([*me, "worker"], env))
        _wait_for(f"http://127.0.0.1:{port}/healthz", children)
        _banner(webhook_url, env, account)
        _supervise(children)
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):  # worker first (it finishes its job), Redis last
            _stop(child)
        if redis_server is not None:
            redis_server.stop()


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: Ctrl-C reaches only us, and we stop the children in order (worker before Redis).
    return subprocess.Popen(command, env=env, start_new_session=True)


def _stop(child: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _wait_for(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise PostuploadError("a process stopped while starting; see its messages above")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise PostuploadError(f"the web process did not answer on {url} within {timeout} s")


def _banner(webhook_url: str, env: dict[str, str], account: Account) -> None:
    emulator = f" (emulator at {account.upload_prefix})" if account.upload_prefix else ""
    lines = [
        "",
        f"postupload is running. POST Cloudinary notifications to {webhook_url}",
        f"  Redis: {env['REDIS_URL']}",
        f"  Cloudinary: cloud {account.cloud_name}{emulator}",
        "Send a signed sample notification:",
        f"  CLOUDINARY_URL='{env['CLOUDINARY_URL']}' .venv/bin/postupload notify {EXAMPLE_NOTIFICATION} "
        f"--url {webhook_url}",
    ]
    if account.upload_prefix:
        lines.append(f"See the calls it caused: curl {account.upload_prefix}/emulator/calls")
    lines.append("Stop with Ctrl-C.\n")
    click.echo("\n".join(lines))


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until Ctrl-C, SIGTERM, or any child stopping; the caller then stops the rest."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Installed explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                click.echo(f"process {child.args!r} stopped with {child.returncode}; stopping", err=True)
                return
        time.sleep(0.2)
    click.echo("stopping")

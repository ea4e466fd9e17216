"""Slow and idle clients against the web process: are Cloudinary's notifications still answered fast?

Run with `make bench` or `.venv/bin/python bench/slow_clients.py [--slow 500] [--idle 2000]`.
For each worker class, `postupload web` (2 gunicorn workers) on an embedded Redis answers legitimate
signed notifications, first alone (the baseline), then while `--slow` connections send their headers
one byte a second and `--idle` connections send nothing. Printed: answered, p50 and p99 latency, and
p99 under load over the baseline's, measured in the same run. Traffic goes to 127.0.0.1 only; every
phase is bounded in requests and time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from postupload.config import DEV_ACCOUNT
from postupload.core.signature import sign_notification
from postupload.local.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]


class Hostile:
    """`slow` connections dribbling a request's headers, `idle` ones silent; closed on stop()."""

    def __init__(self, port: int, slow: int, idle: int) -> None:
        self.sockets: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self.stopped = threading.Event()
        for number in range(slow + idle):
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:  # a server that no longer accepts: what it did not take is counted
                continue
            self.sockets.append(connection)
            if number < slow:
                connection.sendall(b"POST /webhooks/cloudinary HTTP/1.1\r\nHost: x\r\n")
                self.slow.append(connection)
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        while not self.stopped.wait(1.0):
            for connection in self.slow:
                with contextlib.suppress(OSError):
                    connection.sendall(b"X")  # one byte of a header name, never finished

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        for connection in self.sockets:
            connection.close()


def legitimate(
    url: str, count: int, label: str, secret: str = DEV_ACCOUNT.api_secret, within: float = 30.0
) -> list[float | None]:
    """`count` signed notifications, one after another, each on a new connection, for at most
    `within` seconds; each one's latency, or None when it was not answered 200 (or not sent)."""
    latencies: list[float | None] = []
    deadline = time.monotonic() + within
    for number in range(count):
        if time.monotonic() > deadline:
            return latencies + [None] * (count - number)
        fields = f'"notification_type":"upload","public_id":"{label}/{number}","resource_type":"image"'
        body = f"{{{fields}}}".encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Cld-Timestamp": stamp,
            "X-Cld-Signature": sign_notification(body, stamp, secret),
        }
        started = time.perf_counter()
        try:
            answer = requests.post(url, data=body, headers=headers, timeout=3)
            latencies.append(time.perf_counter() - started if answer.status_code == 200 else None)
        except requests.RequestException:
            latencies.append(None)
    return latencies


def summary(latencies: list[float | None]) -> tuple[int, float, float]:
    answered = sorted(value for value in latencies if value is not None)
    if not answered:
        return 0, float("nan"), float("nan")
    p50 = answered[len(answered) // 2]
    p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))]
    return len(answered), p50 * 1000, p99 * 1000


def measure(
    worker_class: str, redis_url: str, rules: Path, slow: int, idle: int, requests_per_phase: int
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CLOUDINARY_URL": DEV_ACCOUNT.to_url(),
        "REDIS_URL": redis_url,
        "POSTUPLOAD_RULES_DIR": str(rules),
    }
    command = [sys.executable, "-m", "postupload", "web", "--port", str(port), "--worker-class", worker_class]
    web = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/cloudinary"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        quiet = summary(legitimate(url, requests_per_phase, f"{worker_class}-quiet"))
        hostile = Hostile(port, slow, idle)
        time.sleep(2)  # the slow ones are in the middle of their headers
        try:
            loaded = summary(legitimate(url, requests_per_phase, f"{worker_class}-loaded"))
        finally:
            hostile.stop()
        label = f"{worker_class:>8}"
        print(
            f"{label} alone:        {quiet[0]:4d}/{requests_per_phase} answered, "
            f"p50 {quiet[1]:6.1f} ms, p99 {quiet[2]:6.1f} ms"
        )
        print(
            f"{label} {slow} slow + {idle} idle: {loaded[0]:4d}/{requests_per_phase} answered, "
            f"p50 {loaded[1]:6.1f} ms, p99 {loaded[2]:6.1f} ms, p99 {loaded[2] / quiet[2]:.2f}x alone"
        )
    finally:
        web.terminate()
        web.wait(20)


def rules_matching_nothing(directory: Path) -> Path:
    """A rules directory whose one rule matches no notification: the web's work alone is measured."""
    rules = directory / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "rules:\n  - {name: none, match: {public_id: [nothing]}, actions: [{tags: {add: [x]}}]}\n"
    )
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200, help="legitimate notifications per phase")
    parser.add_argument("--worker-classes", default="gevent,gthread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rules = rules_matching_nothing(Path(scratch))
        with RedisServer(Path(scratch) / "redis") as server:
            for worker_class in args.worker_classes.split(","):
                measure(worker_class, server.url, rules, args.slow, args.idle, args.requests)


if __name__ == "__main__":
    main()

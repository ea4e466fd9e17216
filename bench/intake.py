"""The intake's cost beside two baselines, under identical gunicorn settings (postupload.web.serving:
gevent, 2 workers, a new connection per notification, 1 KB signed bodies), in one run (#24, item 2).

Run with `.venv/bin/python -m bench.intake [--seconds 8] [--clients 24]`. Three apps are served in
turn on an embedded Redis:

- bare: a Flask app that answers "ok" and does nothing else;
- naive: verify the signature, SET NX the dedupe key, enqueue with RQ (what any handler must do);
- postupload: `postupload.web:create_app()`, as deployed.

All three are served at once and driven in turn, `--rounds` times (default 3), each for `--seconds`
by `--clients` client threads in 4 processes (raw sockets, one connection per request). Printed per
round: answers a second, the web processes' CPU per answer (psutil), postupload's ratios over each
baseline; then the medians (the ratio's, of the rounds), and each app's p50 and p99 at a fixed 300
notifications a second. The load generator shares the machine: compare the ratios, not the absolute figures.
Traffic goes to 127.0.0.1 only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis
from flask import Flask, Response, request
from rq import Queue

from bench.slow_clients import rules_matching_nothing
from postupload.config import DEV_ACCOUNT
from postupload.core.signature import sign_notification, verify_notification
from postupload.local.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = DEV_ACCOUNT.api_secret


def bare() -> Flask:
    app = Flask("bare")

    @app.post("/webhooks/cloudinary")
    def receive() -> str:
        request.get_data()
        return "ok"

    return app


def naive() -> Flask:
    """What every intake must do at least: verify, dedupe, enqueue (RQ)."""
    app = Flask("naive")
    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    queue = Queue("naive", connection=connection)

    @app.post("/webhooks/cloudinary")
    def receive() -> tuple[Response | str, int]:
        body = request.get_data()
        headers = request.headers
        verify_notification(
            body,
            headers.get("X-Cld-Timestamp"),
            headers.get("X-Cld-Signature"),
            SECRET,
            now=time.time(),
            tolerance=7200,
        )
        key = "naive:seen:" + request.headers.get("X-Cld-Signature", "")
        if connection.set(key, 1, nx=True, ex=90_000):
            queue.enqueue("bench.intake.never_run", body.decode())
        return "ok", 200

    return app


def never_run(body: str) -> None:  # the naive queue is never worked
    raise NotImplementedError


def body_of(number: int, label: str) -> bytes:
    """A 1 KB upload notification, different each time (no dedupe hit)."""
    fields = {
        "notification_type": "upload",
        "public_id": f"{label}/{number}",
        "resource_type": "image",
        "type": "upload",
        "format": "jpg",
        "width": 1200,
        "height": 800,
        "bytes": 123456,
        "tags": ["product", "summer"],
        "secure_url": f"https://res.cloudinary.com/demo/image/upload/v1/{label}/{number}.jpg",
        "context": {"custom": {"alt": "x" * 200, "caption": "y" * 200}},
    }
    text = json.dumps(fields)
    return (text[:-1] + ', "pad": "' + "z" * max(0, 1000 - len(text) - 12) + '"}').encode()


def send(port: int, body: bytes) -> tuple[bool, float]:
    stamp = str(int(time.time()))
    head = (
        f"POST /webhooks/cloudinary HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Cld-Timestamp: {stamp}\r\nX-Cld-Signature: {sign_notification(body, stamp, SECRET)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(head + body)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    except OSError:
        return False, time.perf_counter() - started
    return answer.startswith(b"HTTP/1.1 200"), time.perf_counter() - started


def _drive(port: int, threads: int, seconds: float, label: str, results: Any) -> None:
    """One load process: `threads` threads, each sending one request after another until the end."""
    answered = [0] * threads
    end = time.monotonic() + seconds

    def run(index: int) -> None:
        number = 0
        while time.monotonic() < end:
            ok, _ = send(port, body_of(number, f"{label}-{os.getpid()}-{index}"))
            answered[index] += ok
            number += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(sum(answered))


def throughput(
    port: int, clients: int, seconds: float, label: str, web: psutil.Process
) -> tuple[float, float]:
    """Answers a second, and web CPU milliseconds per answer."""
    family = [web, *web.children(recursive=True)]
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in family)
    results: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(
            target=_drive, args=(port, max(1, clients // 4), seconds, f"{label}{n}", results)
        )
        for n in range(4)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    total = sum(results.get(timeout=seconds + 60) for _ in processes)
    for process in processes:
        process.join()
    elapsed = time.monotonic() - started
    cpu = sum(sum(p.cpu_times()[:2]) for p in family) - cpu_before
    return total / elapsed, cpu * 1000 / max(total, 1)


def paced(port: int, rate: float, seconds: float, label: str) -> tuple[float, float, int]:
    """p50 and p99 (ms) of notifications sent at a fixed `rate` a second, and how many failed."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()

    def one(number: int) -> None:
        ok, latency = send(port, body_of(number, label))
        with lock:
            latencies.append(latency)
            failed[0] += not ok

    start = time.monotonic()
    threads = []
    for number in range(int(rate * seconds)):
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one, args=(number,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000, failed[0]


def serve(app: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", app, "-c", "python:postupload.web.serving",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "/dev/null",
    ]  # fmt: skip
    web = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1.0)  # both workers booted, not only the first
                return web, port
        except OSError:
            time.sleep(0.2)
    web.kill()
    raise RuntimeError(f"{app} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument(
        "--rounds", type=int, default=3, help="each app driven this often, in turn; medians are printed"
    )
    parser.add_argument(
        "--rate", type=float, default=300.0, help="notifications a second for the latency phase"
    )
    args = parser.parse_args()
    apps = {
        "bare": "bench.intake:bare()",
        "naive": "bench.intake:naive()",
        "postupload": "postupload.web:create_app()",
    }
    with tempfile.TemporaryDirectory() as scratch:
        rules = rules_matching_nothing(Path(scratch))
        with RedisServer(Path(scratch) / "redis") as server:
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "CLOUDINARY_URL": DEV_ACCOUNT.to_url(),
                "REDIS_URL": server.url,
                "POSTUPLOAD_RULES_DIR": str(rules),
            }
            # All three up at once, driven in turn, round after round: a machine that is slower for
            # a while (these are shared) slows one round of each, not one app's only run.
            served = {name: serve(app, env) for name, app in apps.items()}
            rounds: list[dict[str, tuple[float, float]]] = []
            latency: dict[str, tuple[float, float, int]] = {}
            try:
                for number in range(args.rounds):
                    rounds.append(
                        {
                            name: throughput(
                                port, args.clients, args.seconds, f"{name}{number}-", psutil.Process(web.pid)
                            )
                            for name, (web, port) in served.items()
                        }
                    )
                    _print_round(number + 1, rounds[-1])
                for name, (_, port) in served.items():
                    latency[name] = paced(port, args.rate, args.seconds, f"{name}-paced")
            finally:
                for web, _ in served.values():
                    web.terminate()
                    web.wait(20)
    print(f"\nmedians of {args.rounds} rounds; at {args.rate:.0f}/s: p50, p99, failed")
    for name in apps:
        rate = statistics.median(one[name][0] for one in rounds)
        cpu = statistics.median(one[name][1] for one in rounds)
        p50, p99, failed = latency[name]
        print(f"{name:>11}  {rate:9.0f}/s  {cpu:6.2f} ms CPU  {p50:8.1f} ms {p99:8.1f} ms  {failed}")
    over_bare = statistics.median(one["postupload"][0] / one["bare"][0] for one in rounds)
    over_naive = statistics.median(one["postupload"][0] / one["naive"][0] for one in rounds)
    print(
        f"postupload / bare: {over_bare:.2f}x   postupload / naive: {over_naive:.2f}x   (medians of the"
        " rounds' ratios; #24 asks >= 0.5x bare, >= 1.2x naive, p99 at 300/s under 10 ms)"
    )


def _print_round(number: int, rates: dict[str, tuple[float, float]]) -> None:
    said = "  ".join(f"{name} {rate:5.0f}/s {cpu:.2f} ms" for name, (rate, cpu) in rates.items())
    ours, bare_rate, naive_rate = rates["postupload"][0], rates["bare"][0], rates["naive"][0]
    print(f"round {number}: {said}  ours/bare {ours / bare_rate:.2f}x  ours/naive {ours / naive_rate:.2f}x")


if __name__ == "__main__":
    main()

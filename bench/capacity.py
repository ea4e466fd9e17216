"""Capacity: what one Redis costs per notification, and the rate at which it becomes the limit.

Run with `.venv/bin/python -m bench.capacity [--uploads 200] [--clients 1,2,3,4]`.

1. **Per notification**, from an end-to-end run of `bench/e2e.py`'s stack (emulator answering at
   once, web, one worker; each upload makes an eager transformation, tags and context, and Cloudinary
   sends its upload notification plus the ones our calls cause): Redis commands (INFO commandstats,
   scripts' inner commands included) and Redis CPU (INFO cpu, user + system).
2. **Where one Redis is the limit.** Every command that run sent (recorded with MONITOR, with each
   client's order) is replayed against the same Redis, every 32-hex id made new for each copy (so
   each copy is new notifications, not duplicates), blocking commands sent as their non-blocking
   forms, in batches of BATCH commands a round trip, by 1, 2, ... client processes until Redis's
   one thread is busy. Printed: notifications/s at each, and how busy Redis was (its CPU seconds a
   second). Batching costs Redis less per command than one round trip each, as the processes send
   them: the replay's rate is an upper bound, and the CPU of part 1 gives the lower one.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import redis
import requests

from bench.e2e import Run, scratch_stack, upload_all
from postupload.local.redis_server import RedisServer
from postupload.store.connection import connect

BATCH = 20  # commands a round trip in the replay (--batch)
SKIP = frozenset({"MONITOR", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "CLIENT", "INFO", "QUIT", "HELLO"})
NON_BLOCKING = {"BLMOVE": "LMOVE", "BRPOPLPUSH": "RPOPLPUSH", "BLPOP": "LPOP", "BRPOP": "RPOP"}
ID = re.compile(rb"[0-9a-f]{32}")
ARGUMENT = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(rb"\\(x[0-9a-f]{2}|.)")
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def parse_monitor_line(line: bytes) -> tuple[bytes, list[bytes]] | None:
    """(client, arguments) of a MONITOR line, or None for a script's inner command (its EVAL is
    replayed) or a line that is no command."""
    head, _, rest = line.partition(b"] ")
    if b" lua" in head or not rest:
        return None
    client = head.rpartition(b" ")[2]

    def unescape(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return (
            bytes([int(code[1:], 16)])
            if code.startswith(b"x") and len(code) == 3
            else ESCAPES.get(code, code)
        )

    return client, [ESCAPE.sub(unescape, argument) for argument in ARGUMENT.findall(rest)]


def replayable(arguments: list[bytes]) -> list[bytes] | None:
    name = arguments[0].upper().decode()
    if name in SKIP:
        return None
    if name in NON_BLOCKING:
        # the keys (and directions) without the timeout; a multi-key pop takes its first key
        kept = arguments[1:-1] if name == "BLMOVE" or name == "BRPOPLPUSH" else arguments[1:2]
        return [NON_BLOCKING[name].encode(), *kept]
    return arguments


def per_notification(uploads: int) -> dict[str, float]:
    """Redis commands and CPU per notification in a run nothing watches (MONITOR costs Redis CPU)."""
    with scratch_stack() as (rules_dir, server):
        connection = connect(server.url)
        run = Run(server.url, rules_dir, 0.0, 1, "postupload")
        try:
            time.sleep(3)
            commands_before, cpu_before, started = _commands(connection), _cpu(connection), time.time()
            upload_all(run, connection, uploads)
            elapsed = time.time() - started
            cpu, commands = _cpu(connection) - cpu_before, _commands(connection) - commands_before
            sent = requests.get(f"{run.emulator}/emulator/notifications", timeout=60).json()["notifications"]
        finally:
            run.stop()
    jobs = len(sent)
    return {
        "uploads": uploads,
        "notifications": jobs,
        "rate": jobs / elapsed,
        "commands": commands / jobs,
        "cpu_ms": cpu * 1000 / jobs,
    }


def record(uploads: int, scratch: tuple[Path, RedisServer]) -> tuple[list[list[bytes]], int, str]:
    """Run the stack once on `scratch`'s Redis, watching it. Returns the commands in order, the
    notifications they carried, and that Redis's URL (the replay uses it: its scripts are loaded)."""
    rules_dir, server = scratch
    connection = connect(server.url)
    run = Run(server.url, rules_dir, 0.0, 1, "postupload")
    lines: list[bytes] = []
    stop = threading.Event()
    watcher = socket.create_connection(("127.0.0.1", server.port))

    def watch() -> None:
        watcher.sendall(b"MONITOR\r\n")
        buffer = b""
        while not stop.is_set():
            chunk = watcher.recv(1 << 20)
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            lines.extend(line[1:] for line in complete if line.startswith(b"+"))

    try:
        time.sleep(3)  # the processes settle (rule sets loaded, workers registered)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(0.5)
        upload_all(run, connection, uploads)
        time.sleep(1.5)  # the last metric flushes
        sent = requests.get(f"{run.emulator}/emulator/notifications", timeout=60).json()["notifications"]
    finally:
        run.stop()
    stop.set()
    connection.ping()
    thread.join(10)
    watcher.close()
    parsed = [found for line in lines if (found := parse_monitor_line(line)) is not None]
    stream = [command for _, arguments in parsed if (command := replayable(arguments))]
    return stream, len(sent), server.url


def replay(
    url: str, stream: list[list[bytes]], number: int, until: float, done: Any, batch_size: int
) -> None:
    """Send copies of the stream until `until`, each with its ids made new; count the copies."""
    connection = redis.Redis.from_url(url).connection_pool.make_connection()
    for copy in itertools.count():
        if time.time() >= until:
            return
        prefix = b"%02x%06x" % (number, copy)

        def renamed(match: re.Match[bytes], prefix: bytes = prefix) -> bytes:
            return prefix + match.group(0)[8:]

        copied = [[ID.sub(renamed, word) for word in command] for command in stream]
        for start in range(0, len(copied), batch_size):
            batch = copied[start : start + batch_size]
            connection.send_packed_command(connection.pack_commands(batch))
            for _ in batch:
                # as in the run, some answers are errors: a WATCHed transaction that lost, ...
                with contextlib.suppress(redis.ResponseError):
                    connection.read_response()
        with done.get_lock():
            done.value += 1


def drive(
    url: str, stream: list[list[bytes]], clients: int, seconds: float, notifications: int, batch_size: int
) -> tuple[float, float]:
    """Notifications/s the clients get through, and Redis's CPU seconds a second meanwhile."""
    control = connect(url)
    done = multiprocessing.Value("i", 0)
    until = time.time() + seconds
    cpu_before, started = _cpu(control), time.time()
    workers = [
        multiprocessing.Process(target=replay, args=(url, stream, number, until, done, batch_size))
        for number in range(clients)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.time() - started
    return done.value * notifications / elapsed, (_cpu(control) - cpu_before) / elapsed


def _commands(connection: Any) -> int:
    return sum(int(entry["calls"]) for entry in connection.info("commandstats").values())


def _cpu(connection: Any) -> float:
    info = connection.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--clients", default="1,2,3,4")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=BATCH, help="commands a round trip in the replay")
    options = parser.parse_args()
    figures = per_notification(options.uploads)
    print(
        f"{options.uploads} uploads, {figures['notifications']:.0f} notifications (Cloudinary's, each a job)"
        f" at {figures['rate']:.0f}/s; per notification: {figures['commands']:.1f} Redis commands run,"
        f" {figures['cpu_ms']:.3f} ms of Redis CPU -> one Redis core at {1000 / figures['cpu_ms']:,.0f}"
        " notifications/s"
    )
    with scratch_stack() as scratch:
        stream, notifications, url = record(options.uploads, scratch)
        print(
            f"  replayed: {len(stream) / notifications:.1f} commands a notification,"
            f" {options.batch} a round trip"
        )
        base = None
        for clients in (int(n) for n in options.clients.split(",")):
            rate, busy = drive(url, stream, clients, options.seconds, notifications, options.batch)
            base = base or rate
            print(
                f"  replay, {clients} client processes: {rate:,.0f} notifications/s ({rate / base:.2f}x one),"
                f" Redis busy {busy:.0%} of a core"
            )


if __name__ == "__main__":
    main()

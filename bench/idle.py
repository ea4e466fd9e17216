"""What idle workers cost: Redis commands per second and CPU per second, against plain RQ workers.

Run with `.venv/bin/python -m bench.idle [--seconds 30] [--workers 1,10]`. Each set of workers runs
on a Redis of its own with nothing to do; commands are counted with INFO commandstats (a count, so
not noisy) and CPU is read from /proc. Printed per second for the whole set and per worker. A
postupload deployment also runs one RQ scheduler per Redis (in whichever worker holds its lock),
which wakes every second: that share does not grow with the workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from postupload.config import DEV_ACCOUNT
from postupload.local.redis_server import RedisServer

RULES = "rules:\n  - name: a\n    match: {resource_type: image}\n    actions:\n      - tags: {add: [x]}\n"


def commands(connection: redis.Redis) -> int:
    return sum(int(entry["calls"]) for entry in connection.info("commandstats").values())


def cpu_seconds(pid: int) -> float:
    """The process's CPU time, and its children's (a worker's scheduler is a child)."""
    total = 0.0
    for each in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(each) for each in found.read_text().split()] if found.exists() else []


def measure(command: list[str], count: int, scratch: Path, seconds: float) -> tuple[float, float]:
    """Redis commands/s and CPU s/s of `count` such workers, idle, together."""
    (scratch / "rules").mkdir(exist_ok=True)
    (scratch / "rules" / "r.yaml").write_text(RULES)
    with RedisServer(scratch / f"redis-{len(command)}-{command[-1]}-{count}") as server:
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "CLOUDINARY_URL": DEV_ACCOUNT.to_url(),
            "POSTUPLOAD_RULES_DIR": str(scratch / "rules"),
        }
        workers = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)
        ]
        try:
            time.sleep(5 + count)  # started, registered, settled
            connection = redis.Redis.from_url(server.url)
            before = commands(connection), sum(cpu_seconds(worker.pid) for worker in workers)
            time.sleep(seconds)
            after = commands(connection), sum(cpu_seconds(worker.pid) for worker in workers)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
    return (after[0] - before[0] - 1) / seconds, (after[1] - before[1]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", default="1,10", help="how many idle workers, comma-separated")
    options = parser.parse_args()
    ours_command = [sys.executable, "-m", "postupload", "worker"]
    plain_command = [sys.executable, "-m", "rq.cli", "worker", "postupload"]
    commands_by_name = {
        "postupload worker": ours_command,
        "rq worker": plain_command,
        "rq worker --with-scheduler": [*plain_command, "--with-scheduler"],
    }
    print(f"idle workers on one Redis, over {options.seconds:.0f} s:")
    with tempfile.TemporaryDirectory() as scratch:
        for count in (int(each) for each in options.workers.split(",")):
            for name, command in commands_by_name.items():
                rate, cpu = measure(command, count, Path(scratch), options.seconds)
                print(
                    f"  {count:>3} x {name:<26}: {rate:6.1f} Redis commands/s"
                    f" ({rate / count:5.2f} per worker),"
                    f" {cpu * 1000 / count:5.2f} ms CPU/s per worker"
                )


if __name__ == "__main__":
    main()

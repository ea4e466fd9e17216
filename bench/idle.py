"""What an idle worker costs: Redis commands per second and CPU per second, against a plain RQ worker.

Run with `.venv/bin/python -m bench.idle [--seconds 10]`. Each worker runs alone on its own Redis
with nothing to do; commands are counted with INFO commandstats (a count, so not noisy) and CPU is
read from /proc. Printed per second, with ours over RQ's as the ratio.
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
from postupload.redis_server import RedisServer

RULES = "rules:\n  - name: a\n    match: {resource_type: image}\n    actions:\n      - tags: {add: [x]}\n"


def commands(connection: redis.Redis) -> int:
    return sum(int(entry["calls"]) for entry in connection.info("commandstats").values())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(command: list[str], scratch: Path, seconds: float) -> tuple[float, float]:
    (scratch / "rules").mkdir(exist_ok=True)
    (scratch / "rules" / "r.yaml").write_text(RULES)
    with RedisServer(scratch / f"redis-{command[-1]}") as server:
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "CLOUDINARY_URL": DEV_ACCOUNT.to_url(),
            "POSTUPLOAD_RULES_DIR": str(scratch / "rules"),
        }
        worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # started, registered, settled
            connection = redis.Redis.from_url(server.url)
            before, cpu_before = commands(connection), cpu_seconds(worker.pid)
            time.sleep(seconds)
            after, cpu_after = commands(connection), cpu_seconds(worker.pid)
        finally:
            worker.terminate()
            worker.wait(30)
    return (after - before - 1) / seconds, (cpu_after - cpu_before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        ours = measure([sys.executable, "-m", "postupload", "worker"], Path(scratch), options.seconds)
        plain = measure(
            [sys.executable, "-m", "rq.cli", "worker", "postupload"], Path(scratch), options.seconds
        )
    print(f"idle, over {options.seconds:.0f} s:")
    print(f"  postupload worker: {ours[0]:.1f} Redis commands/s, {ours[1] * 1000:.1f} ms CPU/s")
    print(f"  plain rq worker:   {plain[0]:.1f} Redis commands/s, {plain[1] * 1000:.1f} ms CPU/s")
    print(f"ratio (ours / RQ's): commands {ours[0] / max(plain[0], 0.01):.1f}x")


if __name__ == "__main__":
    main()

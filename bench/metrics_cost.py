"""What metrics cost a worker: the job function timed with metrics and with every metric a no-op.

Run with `.venv/bin/python -m bench.metrics_cost [--jobs 300] [--rounds 8] [--latency 0]`.
One process runs the worker's own job function (`Runtime.process`: match, plan, execute) on
notifications of distinct assets, against a real Redis and the emulator (a separate process, with
`--latency` seconds on every API call). Rounds alternate between the two recorders, so the
machine's drift falls on both alike; the figure is a ratio of the two, measured in the same process.
Redis commands per job are counted too (INFO commandstats): a count, not a time, so not noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.e2e import RULES
from postupload.config import DEV_ACCOUNT, Account, Settings
from postupload.core.envelope import Envelope
from postupload.local.redis_server import RedisServer, free_port
from postupload.store.connection import connect
from postupload.store.metrics import Counts
from postupload.worker.jobs import Runtime


class Unmeasured(Counts):
    """Every metric a no-op."""

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def matched(self, rules: Any) -> None:
        pass

    def flush(self) -> bool:
        return True


def use(runtime: Runtime, counts: Counts) -> None:
    runtime.counts = counts
    for executor in runtime.executors.values():
        executor.client.counts = counts  # type: ignore[attr-defined]
    runtime.batches.counts = counts


def commands(connection: Any) -> int:
    stats = connection.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each, alternated")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the emulator adds per call")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rules_dir = Path(scratch) / "rules"
        rules_dir.mkdir()
        (rules_dir / "bench.yaml").write_text(RULES)
        port = free_port()
        emulator_url = f"http://127.0.0.1:{port}"
        account = Account(DEV_ACCOUNT.cloud_name, DEV_ACCOUNT.api_key, DEV_ACCOUNT.api_secret, emulator_url)
        command = [sys.executable, "-m", "postupload", "emulator", "--port", str(port)]
        command += ["--latency", str(options.latency)]
        emulator = subprocess.Popen(
            command,
            env={**os.environ, "CLOUDINARY_URL": account.to_url()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with RedisServer(Path(scratch) / "redis") as server:
                run(options, server.url, rules_dir, account, emulator_url)
        finally:
            emulator.terminate()
            emulator.wait(10)


def run(
    options: argparse.Namespace, redis_url: str, rules_dir: Path, account: Account, emulator: str
) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{emulator}/emulator/state", timeout=1)
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    settings = Settings(account=account, redis_url=redis_url, rules_dir=rules_dir, asset_action_cap=0)
    connection = connect(redis_url)
    runtime = Runtime.from_settings(settings, connection)
    recorders = {"with metrics": runtime.counts, "without": Unmeasured(connection)}
    total = options.jobs * options.rounds * 2 + 20
    session = requests.Session()
    for number in range(total):
        body = {"public_id": f"bench/{number}", "tags": ["social"]}
        session.post(f"{emulator}/emulator/upload", json=body, timeout=10).raise_for_status()
    jobs = [
        Envelope(
            f"n{number}",
            time.time(),
            account.cloud_name,
            {
                "notification_type": "upload",
                "public_id": f"bench/{number}",
                "resource_type": "image",
                "type": "upload",
                "asset_id": f"asset{number}",
                "version": 1,
                "tags": ["social"],
            },
        ).to_job()
        for number in range(total)
    ]
    for job in jobs[:20]:  # warm up: connections, rule set, caches
        runtime.process(job)
    seconds = dict.fromkeys(recorders, 0.0)
    calls = dict.fromkeys(recorders, 0)
    position = 20
    print(
        f"{options.jobs} jobs a round, {options.rounds} rounds each, {options.latency * 1000:.0f} ms per call"
    )
    for round_number in range(options.rounds):
        order = list(recorders) if round_number % 2 == 0 else list(reversed(recorders))
        figures = []
        for name in order:
            use(runtime, recorders[name])
            block = jobs[position : position + options.jobs]
            position += options.jobs
            before = commands(connection)
            started = time.perf_counter()
            for job in block:
                runtime.process(job)
            elapsed = time.perf_counter() - started
            seconds[name] += elapsed
            calls[name] += commands(connection) - before - 1  # less the INFO itself
            figures.append(f"{name} {options.jobs / elapsed:.0f} jobs/s")
        print(f"  round {round_number + 1}: " + ", ".join(figures), flush=True)
    jobs_each = options.jobs * options.rounds
    ratio = seconds["without"] / seconds["with metrics"]
    print(
        f"throughput with metrics / without: {ratio:.3f}x (metrics cost {100 * (1 - ratio):.1f}%);"
        f" Redis commands per job: {calls['with metrics'] / jobs_each:.1f} with,"
        f" {calls['without'] / jobs_each:.1f} without"
    )


if __name__ == "__main__":
    main()

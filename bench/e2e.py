"""End to end: uploads through web → Redis → workers → the emulator, ours against a naive path.

Run with `make bench` or `.venv/bin/python bench/e2e.py [--uploads 2000] [--latency 0.03]`.
Every run starts its own emulator (with the given latency on every API call), web (gunicorn) and
workers on one embedded Redis, uploads N assets through the emulator (which sends the signed
upload notifications), and stops the clock when every expected effect is in the emulator's state.

The naive baseline is what a straightforward implementation does with the same rules: one API call
per action, no shared explicit call, no tag batches. It runs our own web and queue; only the job
function differs (each worker process swaps `postupload.worker.process_notification` for it).
Figures are printed as ratios against the naive run made in the same process, as machines here
are noisy.

Other modes: `latency-presets` (one worker process each, at 0.03 s and 0.3 s a call: notifications/s
per process, calls per notification, Redis commands per notification, worker peak RSS) and
`metrics-cost` (workers with metrics against the same workers with every metric a no-op).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from postupload.config import DEV_ACCOUNT, Account, Settings
from postupload.local.redis_server import RedisServer, free_port
from postupload.store.connection import connect
from postupload.store.queue import notification_queue, quiet

ROOT = Path(__file__).resolve().parents[1]
RULES = """
rules:
  - name: thumbnails
    match: {resource_type: image, public_id: [{prefix: bench/}]}
    actions:
      - explicit: {eager: ["c_scale,w_200", "c_fill,h_150,w_150"]}
      - tags: {add: [thumbnailed]}
  - name: social
    match: {resource_type: image, tags: [social]}
    actions:
      - explicit: {eager: "c_fill,g_auto,h_1080,w_1080"}
      - tags: {add: [social-ready]}
  - name: catalog
    match: {resource_type: image, public_id: [{prefix: bench/}]}
    actions:
      - context: {set: {pipeline: postupload, alt: "Picture ${public_id}"}}
"""
EXPECTED_TAGS = {"social", "thumbnailed", "social-ready"}


def naive_process(envelope: dict[str, Any]) -> dict[str, Any]:
    """The baseline job: every planned action is its own SDK call, made at once."""
    from postupload.cloudinary_api import CloudinaryClient
    from postupload.core.notification import locate
    from postupload.core.planning import plan_actions
    from postupload.rules.loading import load_ruleset

    settings = Settings.from_env()
    client = CloudinaryClient(settings.require_account(), settings.api_timeout)
    notification = envelope["notification"]
    planned = plan_actions(load_ruleset(settings.rules_dir).match(notification), notification)
    for target in locate(notification).targets:
        where = {"resource_type": target.resource_type, "type": target.type}
        for action in planned:
            if action.action == "explicit":
                client.explicit(target.public_id, **where, **action.params)
            elif action.action == "tags":
                client.tags("add", action.params["add"], [target.public_id], **where)
            elif action.action == "context":
                client.context(action.params["context"], [target.public_id], **where)
    return {"actions": len(planned)}


def naive_worker() -> None:
    """A worker process running the baseline job function on our queue."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    import postupload.worker.jobs

    postupload.worker.process_notification = naive_process
    settings = Settings.from_env()
    connection = connect(settings.require_redis_url())
    worker = SimpleWorker([notification_queue(connection)], connection=connection, serializer=JSONSerializer)
    worker.work(logging_level="WARNING")


def unmeasured_worker() -> None:
    """Our worker with every metric a no-op: what metrics cost is measured against it."""
    from postupload.cli import main
    from postupload.store.metrics import Counts

    for name in ("count", "observe", "notification", "matched", "invalid_rule_set"):
        setattr(Counts, name, lambda self, *args, **kwargs: None)
    Counts.flush = lambda self: True  # type: ignore[method-assign]
    main(["worker"])


PATHS = ("naive", "postupload", "unmeasured")


class Run:
    """One measured run: emulator, web and `workers` worker processes, all stopped at the end."""

    def __init__(self, redis_url: str, rules_dir: Path, latency: float, workers: int, path: str) -> None:
        self.emulator_port, self.web_port = free_port(), free_port()
        self.emulator = f"http://127.0.0.1:{self.emulator_port}"
        account = Account(DEV_ACCOUNT.cloud_name, DEV_ACCOUNT.api_key, DEV_ACCOUNT.api_secret, self.emulator)
        self.env = {
            **os.environ,
            "CLOUDINARY_URL": account.to_url(),
            "REDIS_URL": redis_url,
            "POSTUPLOAD_RULES_DIR": str(rules_dir),
            "POSTUPLOAD_ASSET_ACTION_CAP": "0",
        }
        me = [sys.executable, "-m", "postupload"]
        webhook = f"http://127.0.0.1:{self.web_port}/webhooks/cloudinary"
        emulator = ["emulator", "--port", str(self.emulator_port), "--latency", str(latency)]
        self.processes = [
            self._start([*me, *emulator, "--notify-url", webhook, "--retry-delays", "1,2,4"]),
            self._start([*me, "web", "--port", str(self.web_port), "--workers", "2"]),
        ]
        worker = [*me, "worker"] if path == "postupload" else [sys.executable, __file__, f"{path}-worker"]
        self.processes += [self._start(worker) for _ in range(workers)]
        self._wait_for(f"{self.emulator}/emulator/state")
        self._wait_for(f"http://127.0.0.1:{self.web_port}/healthz")

    def _start(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_for(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def complete(run: Run, count: int) -> bool:
    assets = requests.get(f"{run.emulator}/emulator/state", timeout=30).json()["assets"]
    finished = [
        asset
        for asset in assets
        if set(asset["tags"]) >= EXPECTED_TAGS and len(asset["derived"]) == 3 and asset["context"]
    ]
    return len(finished) == count


def upload_all(run: Run, connection: Any, uploads: int) -> None:
    """`uploads` uploads, one after another, and wait until every effect of every one is there."""
    session = requests.Session()
    for number in range(uploads):
        body = {"public_id": f"bench/{number}", "tags": ["social"], "width": 1600, "height": 1200}
        session.post(f"{run.emulator}/emulator/upload", json=body, timeout=30).raise_for_status()
    while not (quiet(connection) and complete(run, uploads)):
        time.sleep(0.25)


def measure(
    redis_url: str, rules_dir: Path, uploads: int, latency: float, workers: int, path: str
) -> dict[str, Any]:
    connection = connect(redis_url)
    connection.flushall()
    run = Run(redis_url, rules_dir, latency, workers, path)
    try:
        session = requests.Session()

        def upload(number: int) -> None:
            body = {"public_id": f"bench/{number}", "tags": ["social"], "width": 1600, "height": 1200}
            session.post(f"{run.emulator}/emulator/upload", json=body, timeout=30).raise_for_status()

        commands_before = redis_commands(connection)
        cpu_before = machine_cpu()
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(uploads)))
        while not (quiet(connection) and complete(run, uploads)):
            if time.perf_counter() - started > 1800:
                raise RuntimeError("the run did not finish in 30 minutes")
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
        busy, total = (after - before for after, before in zip(machine_cpu(), cpu_before, strict=True))
        commands = redis_commands(connection) - commands_before
        rss = max(peak_rss_mib(process.pid) for process in run.processes[2:])
        calls = requests.get(f"{run.emulator}/emulator/calls", timeout=60).json()["calls"]
        api_calls = [call for call in calls if call["status"] == 200]
        sent = requests.get(f"{run.emulator}/emulator/notifications", timeout=60).json()["notifications"]
        return {
            "path": path,
            "workers": workers,
            "seconds": elapsed,
            "per_second": uploads / elapsed,
            "calls_per_notification": len(api_calls) / uploads,
            "tags_calls": sum(call["endpoint"] == "tags" for call in api_calls),
            "commands_per_notification": commands / uploads,  # all of Redis: web, RQ, workers
            "commands_per_job": commands / max(len(sent), 1),  # each notification Cloudinary sent is a job
            "worker_rss_mib": rss,
            "machine_busy": busy / total if total else 0.0,  # share of all cores in use, any process
        }
    finally:
        run.stop()


def redis_commands(connection: Any) -> int:
    return sum(int(entry["calls"]) for entry in connection.info("commandstats").values())


def machine_cpu() -> tuple[int, int]:
    """Busy and total jiffies of all cores so far (/proc/stat): whether a run was CPU-bound."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# Per-process figures at Cloudinary-like latencies: one worker process each, ours (default
# concurrency) and the naive baseline (one job at a time, as every worker was before); uploads per
# path, so that each run lasts long enough to measure: latency (s), {path: uploads}.
PRESETS = {
    "0.03": (0.03, {"naive": 300, "postupload": 2000}),
    "0.3": (0.3, {"naive": 40, "postupload": 1000}),
}


def latency_presets() -> None:
    with scratch_stack() as (rules_dir, server):
        for name, (latency, uploads) in PRESETS.items():
            print(f"{name} s per call, one worker process:", flush=True)
            results = {
                path: measure(server.url, rules_dir, count, latency, 1, path)
                for path, count in uploads.items()
            }
            for path, result in results.items():
                print(
                    f"  {path:>10}: {result['per_second']:.2f} notifications/s per process"
                    f" ({uploads[path]} uploads),"
                    f" {result['calls_per_notification']:.3f} calls/notification,"
                    f" {result['commands_per_job']:.0f} Redis commands/job (all: web, RQ, ours),"
                    f" worker peak RSS {result['worker_rss_mib']:.0f} MiB,"
                    f" machine CPU {100 * result['machine_busy']:.0f}% busy",
                    flush=True,
                )
            ours, naive = results["postupload"], results["naive"]
            print(
                f"  postupload / naive: throughput {ours['per_second'] / naive['per_second']:.2f}x,"
                f" calls {ours['calls_per_notification'] / naive['calls_per_notification']:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "mode",
        nargs="?",
        default="bench",
        choices=["bench", "metrics-cost", "latency-presets", "naive-worker", "unmeasured-worker"],
    )
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds the emulator adds to every call")
    parser.add_argument("--workers", default="1,2,4", help="worker counts for postupload")
    parser.add_argument(
        "--naive-workers", default="4", help="worker counts for the naive baseline (0: no baseline run)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="metrics-cost: rounds of each, alternated")
    options = parser.parse_args()
    if options.mode == "naive-worker":
        naive_worker()
        return
    if options.mode == "unmeasured-worker":
        unmeasured_worker()
        return
    if options.mode == "latency-presets":
        latency_presets()
        return
    if options.mode == "metrics-cost":
        metrics_cost(options.uploads, options.latency, int(options.workers.split(",")[0]), options.rounds)
        return
    counts = [int(item) for item in options.workers.split(",")]
    naive_counts = [int(item) for item in options.naive_workers.split(",") if int(item)]
    with scratch_stack() as (rules_dir, server):
        print(f"{options.uploads} uploads, {options.latency * 1000:.0f} ms per API call; rules:{RULES}")
        results = []
        for path, worker_counts in (("naive", naive_counts), ("postupload", counts)):
            for workers in worker_counts:
                result = measure(server.url, rules_dir, options.uploads, options.latency, workers, path)
                results.append(result)
                print(
                    f"  {result['path']:>10}  {workers} workers:"
                    f" {result['per_second']:7.1f} notifications/s,"
                    f" {result['calls_per_notification']:.3f} calls/notification"
                    f" ({result['tags_calls']} tags calls, {result['seconds']:.1f} s,"
                    f" machine CPU {100 * result['machine_busy']:.0f}% busy)",
                    flush=True,
                )
    print("\nratios (postupload / naive, same worker count):")
    for workers in sorted(set(counts) & set(naive_counts)):
        ours = next(r for r in results if r["path"] == "postupload" and r["workers"] == workers)
        naive_run = next(r for r in results if r["path"] == "naive" and r["workers"] == workers)
        calls = ours["calls_per_notification"] / naive_run["calls_per_notification"]
        speed = ours["per_second"] / naive_run["per_second"]
        print(f"  {workers} workers: calls/notification {calls:.2f}x, throughput {speed:.2f}x")
    base = next(r for r in results if r["path"] == "postupload" and r["workers"] == counts[0])
    print("scaling (postupload, throughput over its own " + f"{counts[0]}-worker run):")
    for workers in counts:
        ours = next(r for r in results if r["path"] == "postupload" and r["workers"] == workers)
        print(f"  {workers} workers: {ours['per_second'] / base['per_second']:.2f}x")


@contextlib.contextmanager
def scratch_stack() -> Iterator[tuple[Path, RedisServer]]:
    """A rules directory with the bench's rules, and a Redis of its own; both gone afterwards."""
    with tempfile.TemporaryDirectory() as scratch:
        rules_dir = Path(scratch) / "rules"
        rules_dir.mkdir()
        (rules_dir / "bench.yaml").write_text(RULES)
        with RedisServer(Path(scratch) / "redis") as server:
            yield rules_dir, server


def metrics_cost(uploads: int, latency: float, workers: int, rounds: int) -> None:
    """Worker throughput with metrics against the same workers with every metric a no-op,
    alternated round by round so the machine's drift falls on both alike."""
    with scratch_stack() as (rules_dir, server):
        print(f"metrics cost: {uploads} uploads, {latency * 1000:.0f} ms per API call, {workers} workers")
        seconds: dict[str, list[float]] = {"postupload": [], "unmeasured": []}
        for round_number in range(rounds):
            order = ("unmeasured", "postupload") if round_number % 2 else ("postupload", "unmeasured")
            for path in order:
                result = measure(server.url, rules_dir, uploads, latency, workers, path)
                seconds[path].append(result["seconds"])
                print(f"  round {round_number + 1} {path:>10}: {result['per_second']:7.1f} notifications/s")
    measured, unmeasured = sum(seconds["postupload"]), sum(seconds["unmeasured"])
    ratio = unmeasured / measured
    print(f"throughput with metrics / without: {ratio:.3f}x (metrics cost {100 * (1 - ratio):.1f}%)")


if __name__ == "__main__":
    main()

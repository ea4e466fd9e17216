"""Backfill: `postupload backfill` against a naive loop, on assets preloaded in the emulator.

Run with `.venv/bin/python bench/backfill.py [--assets 10000] [--latency 0] [--workers 2]`.
Both start from the same emulator state (its own process, `--assets N` preloaded, `--latency` on
every call) and apply the same rules to every asset:
- ours: `postupload backfill --prefix products/` with `--workers` worker processes on one Redis;
- naive: one process that asks for one `resources` page at a time and makes one SDK call per action
  of every asset (explicit, tags, context), as a script written for the job would.
Printed: time to completion and Cloudinary calls per asset for each, and ours over naive as ratios
measured in the same run (machines here are noisy).
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

from postupload.config import DEV_ACCOUNT, Account
from postupload.local.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = """
rules:
  - name: thumbnails
    match: {resource_type: image, public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
      - tags: {add: [backfilled]}
      - context: {set: {catalog: "yes"}}
"""


class Emulator:
    def __init__(self, assets: int, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.account = Account(DEV_ACCOUNT.cloud_name, DEV_ACCOUNT.api_key, DEV_ACCOUNT.api_secret, self.url)
        command = [sys.executable, "-m", "postupload", "emulator", "--port", str(self.port)]
        command += ["--assets", str(assets), "--latency", str(latency), "--admin-budget", "5000"]
        env = {**os.environ, "CLOUDINARY_URL": self.account.to_url()}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/emulator/faults", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the emulator did not start")

    def calls(self) -> int:
        answer = requests.get(f"{self.url}/emulator/calls", timeout=120).json()["calls"]
        return sum(1 for call in answer if call["status"] == 200)

    def tagged(self, tag: str) -> int:
        state = requests.get(f"{self.url}/emulator/state", timeout=120).json()
        return sum(1 for asset in state["assets"] if tag in asset["tags"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def ours(assets: int, latency: float, workers: int, scratch: Path) -> dict[str, Any]:
    emulator = Emulator(assets, latency)
    rules = scratch / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "bench.yaml").write_text(RULES)
    with RedisServer(scratch / "redis") as server:
        env = {
            **os.environ,
            "CLOUDINARY_URL": emulator.account.to_url(),
            "REDIS_URL": server.url,
            "POSTUPLOAD_RULES_DIR": str(rules),
            "POSTUPLOAD_ASSET_ACTION_CAP": "0",
        }
        me = [sys.executable, "-m", "postupload"]
        running = [
            subprocess.Popen([*me, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        try:
            started = time.perf_counter()
            subprocess.run(
                [*me, "backfill", "--prefix", "products/"], env=env, check=True, stdout=subprocess.DEVNULL
            )
            # The backfill waits for its jobs; the tag batches they joined go out within 2 s after.
            while emulator.tagged("backfilled") < assets:
                time.sleep(0.2)
            seconds = time.perf_counter() - started
        finally:
            for process in running:
                process.terminate()
            for process in running:
                process.wait(30)
    calls = emulator.calls()
    emulator.stop()
    return {"seconds": seconds, "calls": calls}


def naive(assets: int, latency: float) -> dict[str, Any]:
    import cloudinary.api
    import cloudinary.uploader

    emulator = Emulator(assets, latency)
    options = emulator.account.sdk_options()
    started = time.perf_counter()
    cursor = None
    while True:
        page = cloudinary.api.resources(
            type="upload", prefix="products/", max_results=500, next_cursor=cursor, **options
        )
        for resource in page["resources"]:
            public_id = resource["public_id"]
            cloudinary.uploader.explicit(public_id, type="upload", eager="c_scale,w_300", **options)
            cloudinary.uploader.add_tag("backfilled", [public_id], **options)
            cloudinary.uploader.add_context({"catalog": "yes"}, [public_id], **options)
        cursor = page.get("next_cursor")
        if not cursor:
            break
    seconds = time.perf_counter() - started
    calls = emulator.calls()
    emulator.stop()
    return {"seconds": seconds, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the emulator adds to every call")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    print(f"{options.assets} assets, {options.latency * 1000:.0f} ms per call; rules:{RULES}")
    with tempfile.TemporaryDirectory() as scratch:
        mine = ours(options.assets, options.latency, options.workers, Path(scratch))
    print(
        f"  postupload backfill ({options.workers} workers): {mine['seconds']:.1f} s,"
        f" {mine['calls'] / options.assets:.3f} calls/asset",
        flush=True,
    )
    theirs = naive(options.assets, options.latency)
    per_asset = theirs["calls"] / options.assets
    print(f"  naive loop (1 process): {theirs['seconds']:.1f} s, {per_asset:.3f} calls/asset")
    print(
        f"ratios (postupload / naive): time {mine['seconds'] / theirs['seconds']:.2f}x,"
        f" calls per asset {mine['calls'] / theirs['calls']:.2f}x"
    )


if __name__ == "__main__":
    main()

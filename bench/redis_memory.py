"""Redis memory per notification and per asset, and what the largest notifications cost.

Run with `.venv/bin/python -m bench.redis_memory [--uploads 300]`. It starts the stack of
`bench/e2e.py` (emulator answering at once, web, one worker; its rules make three eager
transformations, tags and context per upload) on a Redis of its own, uploads, waits until every
effect is there, and sizes every key with MEMORY USAGE, grouped by what it keeps. Then it sends,
signed, the largest notifications Cloudinary sends (docs/deployment.md, "Redis memory"):
a `delete` of 1,000 assets
(`delete_resources_by_prefix` deletes up to 1,000 a call) and an upload whose asset holds 1,000 tags
of 255 characters, and sizes what each adds.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from typing import Any

import requests

from bench.e2e import DEV_ACCOUNT, Run, scratch_stack, upload_all
from postupload.core.signature import sign_notification
from postupload.store.connection import connect
from postupload.store.queue import quiet

# What each key keeps, by its name (the first pattern that matches).
GROUPS = [
    ("RQ job (a failed one: its notification, 7 days)", r"^rq:job:"),
    ("RQ results (a failed job's reason, 7 days)", r"^rq:results:"),
    ("RQ registries and queue", r"^rq:"),
    ("dedupe mark (25 h)", r"^postupload:dedupe:"),
    ("done marks (8 days)", r"^postupload:done:"),
    ("asset history (30 days, 500 entries)", r"^postupload:history:"),
    ("public_id -> asset (30 days)", r"^postupload:asset:"),
    ("loop-guard counts (1 h)", r"^postupload:cap:"),
    ("kept for previews (10,000, 7 days or 256 MiB)", r"^postupload:recorded$"),
    ("metrics and per-minute counts", r"^postupload:(metrics|recent|matches|notifications)"),
    ("other", r""),
]


def sizes(connection: Any) -> tuple[Counter[str], Counter[str]]:
    """Bytes and keys per group, every key sized exactly (SAMPLES 0)."""
    memory: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for key in connection.scan_iter(count=1000):
        name = key.decode(errors="replace")
        group = next(label for label, pattern in GROUPS if re.search(pattern, name))
        memory[group] += connection.memory_usage(key, samples=0) or 0
        count[group] += 1
    return memory, count


def report(
    title: str, before: tuple[Counter[str], Counter[str]], after: tuple[Counter[str], Counter[str]], per: int
) -> None:
    memory = after[0] - before[0]
    keys = after[1] - before[1]
    total = sum(memory.values())
    print(f"{title}: {total / per / 1024:.1f} KiB and {sum(keys.values()) / per:.1f} keys each")
    for label, _ in GROUPS:
        if memory[label]:
            print(f"  {memory[label] / per / 1024:8.2f} KiB {keys[label] / per:7.2f} keys  {label}")


def post_signed(run: Run, body: dict[str, Any]) -> tuple[int, int]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Cld-Timestamp": timestamp,
        "X-Cld-Signature": sign_notification(raw, timestamp, DEV_ACCOUNT.api_secret, "sha1"),
    }
    answer = requests.post(
        f"http://127.0.0.1:{run.web_port}/webhooks/cloudinary", data=raw, headers=headers, timeout=30
    )
    return answer.status_code, len(raw)


def largest_delete(count: int) -> dict[str, Any]:
    """A delete notification's shape (shared samples), for `count` assets with long public ids."""
    resources = [
        {
            "resource_type": "image",
            "type": "upload",
            "asset_id": f"{number:032x}",
            "public_id": f"catalogue/2026/spring/collection-{number:05d}/hero-image-large",
            "version": 1_700_000_000 + number,
            "asset_folder": "catalogue/2026/spring",
            "display_name": f"hero-image-large-{number:05d}",
        }
        for number in range(count)
    ]
    return {
        "notification_type": "delete",
        "resources": resources,
        "notification_context": {
            "triggered_at": "2026-12-05T00:00:00Z",
            "triggered_by": {"source": "api", "id": DEV_ACCOUNT.api_key},
        },
    }


def tagged_upload(tags: int) -> dict[str, Any]:
    return {
        "notification_type": "upload",
        "asset_id": "f" * 32,
        "public_id": "bench/many-tags",
        "version": 1_700_000_000,
        "resource_type": "image",
        "type": "upload",
        "width": 1600,
        "height": 1200,
        "format": "jpg",
        "bytes": 120_000,
        "tags": [f"{number:04d}-" + "t" * 250 for number in range(tags)],
    }


def settle(run: Run, connection: Any) -> None:
    while not quiet(connection):
        time.sleep(0.25)
    time.sleep(1.5)  # the last metric flushes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=300)
    options = parser.parse_args()
    with scratch_stack() as (rules_dir, server):
        connection = connect(server.url)
        run = Run(server.url, rules_dir, 0.0, 1, "postupload")
        try:
            time.sleep(3)  # the processes settle (rule sets loaded, workers registered)
            start = sizes(connection)
            upload_all(run, connection, options.uploads)
            settle(run, connection)
            uploaded = sizes(connection)
            report(
                f"{options.uploads} uploads (each a 1 KB upload notification, and the tags change it makes)",
                start,
                uploaded,
                options.uploads,
            )
            history = list(connection.scan_iter("postupload:history:*", count=1000))
            one = sum(connection.memory_usage(k, samples=0) or 0 for k in history) / max(len(history), 1)
            entries = connection.llen(history[0])
            print(f"  an asset's history after its upload: {one / 1024:.2f} KiB ({entries} entries)")

            status, length = post_signed(run, largest_delete(1000))
            settle(run, connection)
            deleted = sizes(connection)
            report(
                f"a delete of 1,000 assets ({length / 1024:.0f} KiB body, answered {status})",
                uploaded,
                deleted,
                1,
            )

            status, length = post_signed(run, tagged_upload(1000))
            settle(run, connection)
            report(
                f"an upload with 1,000 tags of 255 characters ({length / 1024:.0f} KiB, answered {status})",
                deleted,
                sizes(connection),
                1,
            )
        finally:
            run.stop()


if __name__ == "__main__":
    main()

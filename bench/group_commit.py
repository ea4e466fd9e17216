"""What the group commit (postupload/store/group_commit.py) buys when notifications are stored at
the same moment: `--callers` callers store `--notifications` notifications through
`enqueue_notification`, each into a fresh queue of an embedded Redis, first with one notification a
round trip (`most=1`: the baseline, no grouping), then grouped (`most=64`, as deployed), in threads
and in gevent greenlets (each in a process of its own, as gunicorn's gevent worker is patched).

Run with `.venv/bin/python -m bench.group_commit [--callers 16] [--notifications 4000]`. Printed:
notifications a second and this process's CPU per notification for each, the grouped run's ratios
over the baseline of the same process, and the round trips each took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(mode: str, callers: int, count: int, most: int) -> dict[str, float]:
    if mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
    import functools
    import threading
    import time

    from postupload.core.envelope import Envelope
    from postupload.local.redis_server import RedisServer
    from postupload.store.connection import connect
    from postupload.store.group_commit import GroupCommit
    from postupload.store.queue import _Storing, enqueue_notification, notification_queue

    round_trips = [0]
    real = _Storing.__call__

    def counted(self: _Storing, stores: list[object]) -> list[object]:
        round_trips[0] += 1
        return real(self, stores)  # type: ignore[arg-type]

    _Storing.__call__ = counted  # type: ignore[method-assign,assignment]
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch) / "redis") as server:
        queue = notification_queue(connect(server.url), name=f"bench-{mode}-{most}")
        queue.__dict__["stores"] = GroupCommit(functools.partial(_Storing, queue.connection), most=most)
        pad = "z" * 800
        envelopes = [
            Envelope(
                f"{number:032x}",
                time.time(),
                "demo",
                {"notification_type": "upload", "public_id": f"bench/{number}", "pad": pad},
            )
            for number in range(count)
        ]
        enqueue_notification(queue, envelopes[0])  # learns RQ's job template, loads the script

        def store(part: list[Envelope]) -> None:
            for envelope in part:
                enqueue_notification(queue, envelope)

        started, cpu = time.perf_counter(), time.process_time()
        threads = [
            threading.Thread(target=store, args=(envelopes[1 + n :: callers],)) for n in range(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        assert queue.count == count, queue.count
    stored = count - 1
    return {"rate": stored / elapsed, "cpu_us": used * 1e6 / stored, "round_trips": round_trips[0] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--notifications", type=int, default=4000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, most = args.child
        print(json.dumps(_run(mode, args.callers, args.notifications, int(most))))
        return
    for mode in ("threads", "gevent"):
        figures = {}
        for most in (1, 64):
            done = subprocess.run(
                [sys.executable, "-m", "bench.group_commit", "--callers", str(args.callers),
                 "--notifications", str(args.notifications), "--child", mode, str(most)],
                cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
            )  # fmt: skip
            figures[most] = json.loads(done.stdout.strip().splitlines()[-1])
            one, how = figures[most], "one a round trip" if most == 1 else "grouped"
            print(
                f"{mode:>7}, {args.callers} callers, {how}: {one['rate']:6.0f}/s  "
                f"{one['cpu_us']:5.0f} us CPU each  {one['round_trips']:.0f} round trips"
            )
        rate = figures[64]["rate"] / figures[1]["rate"]
        cpu = figures[64]["cpu_us"] / figures[1]["cpu_us"]
        print(f"{mode:>7}: grouped / one a round trip: {rate:.2f}x the rate, {cpu:.2f}x the CPU each")


if __name__ == "__main__":
    main()

"""Redis commands per job, ours apart from RQ's: every command the server runs during an end-to-end run
(web, worker, tag flusher; commands run inside scripts too, as INFO commandstats counts them), each
put down to whoever owns the key it touches.

Run with `.venv/bin/python -m bench.redis_cost [--uploads 300]`. It starts the stack of `bench/e2e.py`
(emulator answering at once, web, one worker) and watches Redis with MONITOR. A command on a
`postupload:` key is ours, on an `rq:` key RQ's (WATCH too); MULTI and EXEC go to whoever owns most
of what they wrap (RQ's enqueue is a transaction of its own); commands on no key (PING, CLIENT, ...)
are listed apart. A job is a notification Cloudinary
sent (each upload sends its upload notification and the tags change our batch made).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

import requests

from bench.e2e import Run, scratch_stack, upload_all
from postupload.store.connection import connect

NO_KEY = frozenset({"PING", "CLIENT", "HELLO", "INFO", "SELECT", "SCRIPT", "MONITOR", "COMMAND", "TIME"})
TRANSACTION = frozenset({"MULTI", "EXEC", "DISCARD", "UNWATCH"})


def owner(args: list[str]) -> str:
    """ours, rq or other, by the command's first key."""
    name = args[0].upper()
    if name in NO_KEY or len(args) < 2:
        return "other"
    key = args[1]
    if name in ("EVAL", "EVALSHA"):  # a script's text has spaces too: its first key is the first such word
        key = next((word for word in args[2:] if word.startswith(("postupload:", "rq:"))), "")
    if key.startswith("postupload:"):
        return "ours"
    if key.startswith("rq:"):
        return "rq"
    return "other"


class Tally:
    """Commands by owner, MULTI/EXEC by what they wrap on the same connection."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()  # every command the server ran, in scripts too
        self.sent: Counter[str] = Counter()  # the commands sent (a script call is one)
        self.by_command: Counter[tuple[str, str]] = Counter()
        self.open: dict[str, list[str]] = {}  # connection -> owners of what its transaction wraps

    def add(self, entry: dict[str, Any]) -> None:
        args = entry["command"].split(" ")
        name = args[0].upper()
        client = f"{entry.get('client_address')}:{entry.get('client_port')}"
        if name == "WATCH":  # the start of a transaction, and a command on its key (whose owner counts it)
            self.open.setdefault(client, [])
            self._count(owner(args), name, inside_script=False)
            return
        if name in TRANSACTION:
            if name == "MULTI":
                self.open.setdefault(client, []).append(name)
            else:  # EXEC, DISCARD, UNWATCH: the whole transaction goes to its main owner
                wrapped = self.open.pop(client, [])
                owners = Counter(item for item in wrapped if item in ("ours", "rq"))
                who = owners.most_common(1)[0][0] if owners else "other"
                markers = [item for item in wrapped if item in TRANSACTION] + [name]
                for marker in markers:
                    self.counts[who] += 1
                    self.sent[who] += 1
                    self.by_command[(who, marker)] += 1
            return
        who = owner(args)
        inside_script = entry.get("client_type") == "lua"
        if client in self.open and not inside_script:
            self.open[client].append(who)
        self._count(who, name, inside_script)

    def _count(self, who: str, name: str, inside_script: bool) -> None:
        self.counts[who] += 1
        if not inside_script:
            self.sent[who] += 1
        self.by_command[(who, name)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    options = parser.parse_args()
    with scratch_stack() as (rules_dir, server):
        connection = connect(server.url)
        run = Run(server.url, rules_dir, 0.0, 1, "postupload")
        tally, stop = Tally(), threading.Event()
        watching = connect(server.url)

        def watch() -> None:
            with watching.monitor() as monitor:
                for entry in monitor.listen():
                    if stop.is_set():
                        return
                    tally.add(entry)

        try:
            time.sleep(3)  # the processes settle (rule sets loaded, workers registered)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            time.sleep(0.5)
            upload_all(run, connection, options.uploads)
            time.sleep(1.5)  # the last metric flushes
            stop.set()
            connection.ping()  # one more command, so the monitor loop sees the stop
            watcher.join(10)
            sent = requests.get(f"{run.emulator}/emulator/notifications", timeout=60).json()["notifications"]
        finally:
            run.stop()
    jobs = len(sent)
    print(f"{options.uploads} uploads, {jobs} jobs (notifications sent), emulator answering at once")
    for who in ("ours", "rq", "other"):
        print(
            f"  {who:>5}: {tally.counts[who] / jobs:6.1f} Redis commands per job run by the server,"
            f" {tally.sent[who] / jobs:6.1f} sent (a script call counted once)"
        )
    print("ours, by command (per job):")
    ours = sorted(((n, c) for (w, n), c in tally.by_command.items() if w == "ours"), key=lambda x: -x[1])
    for name, count in ours:
        print(f"  {name:>14} {count / jobs:6.2f}")


if __name__ == "__main__":
    main()

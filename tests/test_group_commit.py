"""Group commit (store/group_commit.py): notifications being stored at one moment share a round trip
to Redis, each caller gets its own answer, and no caller can stall the others."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from postupload.core.envelope import Envelope
from postupload.store import keys
from postupload.store.group_commit import GroupCommit
from postupload.store.queue import enqueue_notification, notification_queue

ROOT = Path(__file__).resolve().parents[1]


class HeldSend:
    """A `send` that records each round trip and holds the first one until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.sending = threading.Event()

    def __call__(self, items: list[str]) -> list[Any]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.sending.set()
            assert self.release.wait(10)
        return [ValueError(f"refused {i}") if i.startswith("bad") else f"stored {i}" for i in items]


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.001)


def test_a_caller_alone_goes_at_once_in_a_round_trip_of_its_own() -> None:
    send = HeldSend()
    send.release.set()
    group = GroupCommit(lambda: send)
    assert group("a") == "stored a"
    assert group("b") == "stored b"
    assert send.batches == [["a"], ["b"]]


def test_callers_arriving_during_a_round_trip_go_together_next_each_with_its_own_answer() -> None:
    send = HeldSend()
    group = GroupCommit(lambda: send)
    answers: dict[str, Any] = {}

    def call(item: str) -> None:
        try:
            answers[item] = group(item)
        except ValueError as error:
            answers[item] = error

    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert send.sending.wait(10)
    later = [threading.Thread(target=call, args=(item,)) for item in ("a", "bad-b", "c", "d")]
    for thread in later:
        thread.start()
    _wait_for(lambda: group.waiting == 4)
    send.release.set()
    for thread in [first, *later]:
        thread.join(10)
    assert send.batches[0] == ["first"]
    assert sorted(send.batches[1]) == ["a", "bad-b", "c", "d"]  # one round trip for the four
    assert len(send.batches) == 2
    assert answers["first"] == "stored first" and answers["a"] == "stored a" and answers["d"] == "stored d"
    assert isinstance(answers["bad-b"], ValueError) and str(answers["bad-b"]) == "refused bad-b"


def test_a_round_trip_that_fails_fails_each_of_its_callers_and_the_next_one_goes() -> None:
    calls = Counter[str]()

    def send(items: list[str]) -> list[str]:
        calls["round trips"] += 1
        if calls["round trips"] == 1:
            raise redis.ConnectionError("Redis went away")
        return [f"stored {item}" for item in items]

    group = GroupCommit(lambda: send)
    with pytest.raises(redis.ConnectionError, match="went away"):
        group("a")
    assert group("a") == "stored a"  # Cloudinary's retry: stored this time


def test_no_more_than_most_items_go_in_one_round_trip() -> None:
    send = HeldSend()
    group = GroupCommit(lambda: send, most=3)
    threads = [threading.Thread(target=group, args=("first",))]
    threads[0].start()
    assert send.sending.wait(10)
    threads += [threading.Thread(target=group, args=(f"n{n}",)) for n in range(7)]
    for thread in threads[1:]:
        thread.start()
    _wait_for(lambda: group.waiting == 7)
    send.release.set()
    for thread in threads:
        thread.join(10)
    assert [len(batch) for batch in send.batches] == [1, 3, 3, 1]


def _gevent_script(body: str, imported_first: str = "") -> str:
    """Run `body` in a process patched by gevent, as gunicorn's gevent worker is (after importing
    `imported_first`, as an app loaded before the patch is)."""
    script = imported_first + "from gevent import monkey\nmonkey.patch_all()\n" + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


HELD = """
    import threading
    import gevent
    from postupload.store.group_commit import GroupCommit
    release = threading.Event()
    batches = []
    def send(items):
        batches.append(list(items))
        if items[0] == "first":
            release.wait()
    {at_end}
        return ["stored " + item for item in items]
    group = GroupCommit(lambda: send)
    first = gevent.spawn(group, "first")
    gevent.sleep(0)  # first leads: its round trip is held
"""


def test_under_gevent_a_caller_killed_while_waiting_leaves_the_queue_and_stalls_no_one() -> None:
    said = _gevent_script(
        HELD.format(at_end="")
        + """
    gone = gevent.spawn(group, "gone")
    stays = gevent.spawn(group, "stays")
    gevent.sleep(0)
    gone.kill()  # a timeout or a kill while it waits for the round trip in flight
    release.set()
    print(first.get(timeout=5), "|", stays.get(timeout=5), "|", batches)
    """
    )
    assert said == "stored first | stored stays | [['first'], ['stays']]"


def test_under_gevent_a_caller_killed_as_its_turn_to_send_comes_hands_the_turn_on() -> None:
    # The first round trip ends; the turn to send goes to "next", which is killed before it runs:
    # "after" must get the turn, or every notification after it would wait for ever.
    said = _gevent_script(
        HELD.format(
            at_end="""    if items[0] == "first":
            gevent.get_hub().loop.run_callback(lambda: following.throw(gevent.GreenletExit))
    """
        )
        + """
    following = gevent.spawn(group, "next")
    after = gevent.spawn(group, "after")
    gevent.sleep(0)
    release.set()
    print(first.get(timeout=5), "|", after.get(timeout=5), "|", batches)
    """
    )
    assert said == "stored first | stored after | [['first'], ['after']]"


def test_under_gevent_callers_wait_cooperatively_even_when_the_module_came_before_the_patch() -> None:
    # gunicorn --preload imports the app, and so this module, before its gevent worker patches
    # threading: a wait that blocked the process there would keep the leader's greenlet from
    # ever ending its round trip.
    said = _gevent_script(
        HELD.format(at_end="")
        + """
    waiting = [gevent.spawn(group, name) for name in ("a", "b", "c")]
    gevent.sleep(0)
    release.set()
    print(first.get(timeout=5), "|", [one.get(timeout=5) for one in waiting], "|", batches)
    """,
        imported_first="import postupload.store.group_commit\n",
    )
    assert said == "stored first | ['stored a', 'stored b', 'stored c'] | [['first'], ['a', 'b', 'c']]"


def _envelope(number: int) -> Envelope:
    notification = {"notification_type": "upload", "public_id": f"g/{number}", "resource_type": "image"}
    return Envelope(f"{number:032x}", time.time(), "demo", notification)


def test_notifications_stored_at_once_share_round_trips_and_each_is_stored_once(
    redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postupload.store.queue import _Storing

    sizes: list[int] = []
    real_send = _Storing.__call__

    def counting_send(self: _Storing, stores: list[Any]) -> list[Any]:
        sizes.append(len(stores))
        return real_send(self, stores)

    monkeypatch.setattr(_Storing, "__call__", counting_send)
    queue = notification_queue(redis_conn)
    envelopes = [_envelope(n) for n in range(200)]
    answers: list[bool] = []
    lock = threading.Lock()

    def store(part: list[Envelope]) -> None:
        for envelope in part:
            stored = enqueue_notification(queue, envelope)
            with lock:
                answers.append(stored)

    # Each envelope by two threads at once: Cloudinary delivering it again while it is being stored.
    threads = [threading.Thread(target=store, args=(envelopes[n % 8 :: 8],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers.count(True) == 200 and answers.count(False) == 200  # queued once, then duplicate
    assert queue.count == 200
    assert all(redis_conn.exists(keys.dedupe(envelope.id)) for envelope in envelopes)
    assert sum(sizes) == 400 and len(sizes) < 400  # some round trips carried several

"""Group commit: what concurrent callers send to Redis goes in one round trip.

A web process stores many notifications at once under load, each in a round trip of its own. A
round trip costs more than the script it carries: redis-py's work around it, two system calls, a
wait through gevent's hub, and Redis's own work per read. So while one round trip is in flight,
the callers arriving meanwhile wait for it to end and then go together, in one pipeline, in the
next. Each caller still waits for its own answer: nothing is answered before Redis has it. A caller
that comes alone (a quiet service, or a latency run at a fixed rate) goes at once, as before.

Leader and followers: the first caller sends; who comes while it does waits, and when its round
trip ends the leader hands over to the longest waiting, who sends for all that wait by then.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

# Answers of one round trip, one for each item sent, in order: a value, or the exception that item
# alone met (the others' answers stand).
Send = Callable[[list[Item]], Sequence[Any]]

MOST = 64  # items in one round trip: a few hundred KB at most, and no caller waits on a long one


@dataclass(eq=False)
class _Caller(Generic[Item]):
    item: Item
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # sends the next round trip (set under the lock, before `ready`)
    answer: Any = None


class GroupCommit(Generic[Item]):
    """Calls `send` (made by `make_send` in each process) with the items of the callers waiting at
    that moment, one call at a time."""

    def __init__(self, make_send: Callable[[], Send[Item]], most: int = MOST) -> None:
        self._make_send = make_send
        self._most = most
        self._start()

    def _start(self) -> None:
        """This process's state: made again in a forked child (the parent's connection, lock and
        callers are not the child's)."""
        self._pid = os.getpid()
        self.send = self._make_send()
        self._lock = threading.Lock()
        self._waiting: list[_Caller[Item]] = []
        self._busy = False  # a round trip is in flight, or being handed over

    @property
    def waiting(self) -> int:
        """Callers waiting for the round trip in flight to end."""
        return len(self._waiting)

    def __call__(self, item: Item) -> Any:
        """`item`'s answer from `send`; the exception `send` raised or answered for it, raised."""
        if os.getpid() != self._pid:
            self._start()
        me = _Caller(item)
        with self._lock:
            if self._busy:
                self._waiting.append(me)
            else:
                self._busy = me.leads = True
        if not me.leads:
            try:
                me.ready.wait()
            except BaseException:  # a timeout or a kill while waiting (gevent): hand on what is ours
                self._leave(me)
                raise
        if me.leads:
            self._lead(me)
        if isinstance(me.answer, BaseException):
            raise me.answer
        return me.answer

    def _lead(self, me: _Caller[Item]) -> None:
        with self._lock:
            batch = [me, *self._waiting[: self._most - 1]]
            del self._waiting[: self._most - 1]
        try:
            answers = self.send([caller.item for caller in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} items")
        except BaseException as error:  # the round trip failed: every caller in it hears why
            answers = [error] * len(batch)
        for caller, answer in zip(batch, answers, strict=True):
            caller.answer = answer
        self._hand_over()
        for caller in batch[1:]:
            caller.ready.set()

    def _hand_over(self) -> None:
        """The longest waiting caller sends next; with none waiting, the next caller will."""
        with self._lock:
            if self._waiting:
                following = self._waiting.pop(0)
                following.leads = True
                following.ready.set()
            else:
                self._busy = False

    def _leave(self, me: _Caller[Item]) -> None:
        """A caller that stops waiting: taken out of the queue if it was not sent, and if it was
        just made the next to send, that turn is handed on."""
        with self._lock:
            if me in self._waiting:
                self._waiting.remove(me)
                return
            handed_over = me.leads
        if handed_over:
            self._hand_over()

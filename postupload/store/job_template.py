"""RQ's writes for a notification job, learnt from RQ once and filled in for each job.

Building each job through RQ (`Queue.enqueue_call`: a Job object, its dict, its serialization) cost
about a tenth of the intake's CPU, for writes that differ from job to job in a few values only. So
the writes RQ makes for two probe jobs are recorded; every word that differs between them must be
one this module computes (the job id, RQ's `data`, the description, the retry intervals, a
timestamp), and each job's writes are then the recorded ones with those filled in. When RQ writes
anything this module cannot account for (another RQ version, another format), `learn` says so with
None and the caller keeps asking RQ for every job: the writes are RQ's either way.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import Queue, Retry

# RQ's timestamps (rq.utils.utcformat): what created_at and enqueued_at hold.
_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_PROBES = ("probe0a1b2c3d4e5f", "probe9z8y7x6w5v4u")


@dataclass(frozen=True)
class Job:
    """What differs from one notification job to the next."""

    id: str
    argument: Any  # the job function's one argument (an envelope's JSON value)
    encoded: str  # that argument as JSON text (the caller has it: it keeps a copy too)
    description: str
    retry: Retry | None


Writes = list[tuple[Any, ...]]
RecordWrites = Callable[[Queue, Job], Writes]  # RQ's own writes for a job, recorded, not sent


def learn(queue: Queue, function: str, retries: int, record: RecordWrites) -> Template | None:
    """The template of `queue`'s jobs of `function` with `retries` tries, or None when RQ writes
    something that cannot be filled in."""
    probes = [
        Job(
            _PROBES[n],
            {"probe": n},
            json.dumps({"probe": n}),
            f"probe {n}",
            Retry(retries, [2 + n] * retries) if retries else None,
        )
        for n in range(2)
    ]
    encode = queue.connection.get_encoder().encode
    recorded = [[[encode(word) for word in command] for command in record(queue, job)] for job in probes]
    if len(recorded[0]) != len(recorded[1]) or any(len(a) != len(b) for a, b in zip(*recorded, strict=True)):
        return None
    template = Template(function, [])
    values = [template.values(job, b"") for job in probes]
    for command_a, command_b in zip(*recorded, strict=True):
        slots: list[tuple[str, Any]] = []
        for word_a, word_b in zip(command_a, command_b, strict=True):
            slot = _slot(word_a, word_b, values, queue.serializer)
            if slot is None:
                return None
            slots.append(slot)
        template.commands.append(slots)
    return template


def _slot(
    word_a: bytes, word_b: bytes, values: list[dict[str, bytes]], serializer: Any
) -> tuple[str, Any] | None:
    """How to make this word for a job: as recorded, or from one of its values (None: unknown)."""
    if _STAMP.fullmatch(word_a) and _STAMP.fullmatch(word_b):
        return ("stamp", None)  # even when both probes were made within one microsecond
    if word_a == word_b:
        return ("word", word_a)
    if _same_data(word_a, values[0]["raw"], serializer) and _same_data(word_b, values[1]["raw"], serializer):
        return ("data", None)  # compressed by RQ at its level; by us at a faster one
    for name in ("description", "retry"):
        if word_a == values[0][name] and word_b == values[1][name]:
            return (name, None)
    probe_a, probe_b = (value["id"] for value in values)
    if probe_a in word_a and word_a.replace(probe_a, probe_b) == word_b:
        before, _, after = word_a.partition(probe_a)
        return ("id", (before, after))
    return None


@dataclass
class Template:
    """A job's writes as `[command [word slot ...] ...]`: a slot is a recorded word, or the name of
    a value each job has its own of; `script` writes them into a Lua script."""

    function: str
    commands: list[list[tuple[str, Any]]]

    def values(self, job: Job, stamp: bytes) -> dict[str, bytes]:
        """The values a job's writes are made of, as RQ writes them; RQ's `data` is JSON made
        around the argument's JSON text, not encoded again (`_same_data` checks RQ reads it)."""
        data = f"[{json.dumps(self.function)},null,[{job.encoded}],{{}}]".encode()
        return {
            "id": job.id.encode(),
            "raw": data,
            # RQ reads any zlib level; the fastest costs a third of RQ's default for notifications
            # (JSON) a few percent larger in Redis.
            "data": zlib.compress(data, 1),
            "description": job.description.encode(),
            "retry": json.dumps(job.retry.intervals).encode() if job.retry else b"",
            "stamp": stamp,
        }

    def script(self, head: str, first: int) -> tuple[str, list[str]]:
        """A Lua script that makes the writes itself, the recorded words written into it: `head`
        first, then each write, the values a job fills in taken from ARGV from `first` on, in the
        order returned (what `arguments` gives). redis-py then packs a handful of words a job, not
        RQ's seventy."""
        order = [name for name in ("id", "data", "stamp", "description", "retry") if self._uses(name)]
        argv = {name: f"ARGV[{first + n}]" for n, name in enumerate(order)}
        lines = [head]
        for command in self.commands:
            words = []
            for kind, value in command:
                if kind == "word":
                    words.append(_lua(value))
                elif kind == "id":
                    words.append(
                        " .. ".join(
                            [
                                *([_lua(value[0])] if value[0] else []),
                                argv["id"],
                                *([_lua(value[1])] if value[1] else []),
                            ]
                        )
                    )
                else:
                    words.append(argv[kind])
            lines.append(f"redis.call({', '.join(words)})")
        return "\n".join(lines), order

    def arguments(self, job: Job, order: list[str]) -> list[bytes]:
        """A job's values in the script's order."""
        values = self.values(job, _now())
        return [values[name] for name in order]

    def _uses(self, name: str) -> bool:
        return any(kind == name for command in self.commands for kind, _ in command)


def _same_data(word: bytes, ours: bytes, serializer: Any) -> bool:
    """Whether RQ's `data` word and ours are the same job to RQ's serializer (which reads either)."""
    try:
        return bool(serializer.loads(zlib.decompress(word)) == serializer.loads(ours))
    except Exception:  # not compressed, or not what this serializer reads (not JSON: a pickle)
        return False


def _now() -> bytes:
    """Now, as RQ writes a timestamp (rq.utils.utcformat: "%Y-%m-%dT%H:%M:%S.%fZ", in a third of
    strftime's time)."""
    return (datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z").encode()


_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-./ ")


def _lua(word: bytes) -> str:
    """A Lua string literal of any bytes: plain ones as they are, the others as decimal escapes."""
    return '"' + "".join(chr(byte) if byte in _PLAIN else f"\\{byte:03d}" for byte in word) + '"'

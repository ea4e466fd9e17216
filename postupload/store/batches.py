"""Tag changes coalesced across notifications into Upload API `tags` calls of up to 1000 assets.

A `tags` action does not call Cloudinary: it appends the asset to the pending list of its batch
(same resource type, delivery type, command and tags) and gives the batch a due time, FLUSH_AFTER
seconds after its first pending asset (at once when a full call's worth is waiting). Every worker
runs a flusher thread that claims due batches with a lease and sends them. Items leave the list
only after Cloudinary answered, so a worker killed mid-flush loses nothing: the lease runs out,
another flusher sends them again, and Cloudinary's tag commands are idempotent.

Flushers wait on Redis, not by polling it: a batch that starts or fills pushes a token onto a wake
list, a flusher blocked on that list takes it and waits (on the list still) until the batch is
due. An idle flusher asks Redis something every IDLE s, for a batch whose flusher died meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue

from handlers import tags as tags_handler
from postupload import backoff
from postupload.core.calls import Call
from postupload.core.client import Client
from postupload.errors import ActionError
from postupload.logs import printable
from postupload.store import history, keys
from postupload.store.connection import waiting
from postupload.store.metrics import Counts
from postupload.store.queue import retry_policy

log = logging.getLogger(__name__)

SINGLE_FUNCTION = "postupload.worker.apply_tag_item"
FLUSH_AFTER = 1.9  # seconds after a batch's first pending asset
POLL = 0.05  # the flusher's retry pace while Redis is away
IDLE = 30.0  # an idle flusher's longest wait on the wake list
WAKE_TOKENS = 8  # at most this many tokens wait: a flusher woken looks at every batch anyway
DUE, SPECS, ATTEMPTS, WAKE = (
    keys.TAG_BATCHES_DUE,
    keys.TAG_BATCH_SPECS,
    keys.TAG_BATCH_ATTEMPTS,
    keys.TAG_BATCHES_WAKE,
)

# Append each change and make its batch due. A batch whose list is not empty is already in DUE (only
# _RELEASE takes it out, and only once its list is empty), and its spec is kept (never deleted): only
# the push that starts a list records them, and wakes a flusher. A job run again after a crash may
# append a change twice: the flusher sends an asset once per call, and skips a change marked done.
# KEYS: DUE, SPECS, WAKE, then a pending list per change; ARGV: now, due, WAKE_TOKENS, then (item,
# batch size, batch id, spec) per change.
_PUSH = """
for i = 0, #KEYS - 4 do
  local pending = KEYS[4 + i]
  local item, size, id, spec = ARGV[4 + 4 * i], tonumber(ARGV[5 + 4 * i]), ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  local length = redis.call('rpush', pending, item)
  if length == 1 then redis.call('hset', KEYS[2], id, spec) end
  local woken = false
  if length >= size then
    woken = redis.call('zadd', KEYS[1], 'LT', 'CH', ARGV[1], id) == 1
  elseif length == 1 then
    woken = redis.call('zadd', KEYS[1], 'NX', ARGV[2], id) == 1
  end
  if woken and redis.call('llen', KEYS[3]) < tonumber(ARGV[3]) then redis.call('rpush', KEYS[3], id) end
end
return 1
"""
# Claim the most overdue batch for `lease` seconds.
_CLAIM = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('zadd', KEYS[1], 'XX', ARGV[2], due[1])
return due[1]
"""
# Done with a batch for now: forget it if nothing waits, else make it due again at ARGV[1].
_RELEASE = """
if redis.call('llen', KEYS[1]) == 0 then
  redis.call('zrem', KEYS[2], ARGV[2])
else
  redis.call('zadd', KEYS[2], ARGV[1], ARGV[2])
end
return 1
"""

# Remove the first N items only if they are still the ones we sent (a flusher whose lease ran out
# must not cut items another flusher has meanwhile sent and removed, or new ones).
_TRIM = """
local count = tonumber(ARGV[3])
if redis.call('lindex', KEYS[1], 0) == ARGV[1] and redis.call('lindex', KEYS[1], count - 1) == ARGV[2] then
  redis.call('ltrim', KEYS[1], count, -1)
  return 1
end
return 0
"""
# Every batch waiting for its due time (not one a flusher holds a lease on) becomes due now.
_DUE_NOW = """
for _, id in ipairs(redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1])) do
  redis.call('zadd', KEYS[1], 0, id)
end
return 1
"""


# The client of a product environment, by cloud name ("" for a batch queued before there were several).
Clients = Callable[[str], Client]


@dataclass(frozen=True)
class Spec:
    resource_type: str
    type: str
    command: str
    tags: tuple[str, ...]
    cloud_name: str = ""  # one batch per product environment: its own credentials send it

    def as_json(self) -> str:
        fields = [self.resource_type, self.type, self.command, list(self.tags)]
        return json.dumps([*fields, self.cloud_name] if self.cloud_name else fields)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.as_json().encode()).hexdigest()[:24]

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        resource_type, delivery_type, command, tags, *cloud_name = json.loads(text)
        return cls(resource_type, delivery_type, command, tuple(tags), *cloud_name)

    @property
    def batch_size(self) -> int:
        return tags_handler.batch_size(list(self.tags))

    def call(self, public_ids: list[str]) -> Call:
        """The tags call that sends this batch's change to these assets."""
        params = {"command": self.command, "tags": list(self.tags)}
        return Call("upload", "tags", self.resource_type, self.type, tuple(public_ids), params, "batch", ())


pending_key = keys.tag_batch


class TagBatches:
    def __init__(
        self,
        connection: redis.Redis,
        queue: Queue,
        lease: float = 40.0,
        retries: int = 6,
        clock: Callable[[], float] = time.time,
        counts: Counts | None = None,
    ) -> None:
        self.connection = connection
        self.counts = counts
        self.queue = queue  # where refused items go, as jobs of their own
        self.lease = lease
        self.retries = retries
        self.clock = clock
        self._push = connection.register_script(_PUSH)
        self._claim = connection.register_script(_CLAIM)
        self._release = connection.register_script(_RELEASE)
        self._due_now = connection.register_script(_DUE_NOW)
        self._trim = connection.register_script(_TRIM)

    def add_many(self, changes: list[tuple[Spec, dict[str, Any]]]) -> None:
        """Queue these changes, in one round trip."""
        if not changes:
            return
        now = self.clock()
        names: list[str] = [DUE, SPECS, WAKE]
        args: list[Any] = [now, now + FLUSH_AFTER, WAKE_TOKENS]
        for spec, item in changes:
            names.append(pending_key(spec.id))
            args += [json.dumps(item), spec.batch_size, spec.id, spec.as_json()]
        self._push(keys=names, args=args)

    def next_due(self) -> float | None:
        """When the next batch is due (or its lease ends), if any batch waits."""
        first = self.connection.zrange(DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def flush_due(self, clients: Clients) -> int:
        """Send every batch that is due (the flusher's one round); calls made."""
        calls = 0
        while True:
            now = self.clock()
            claimed = self._claim(keys=[DUE], args=[now, now + self.lease])
            if claimed is None:
                return calls
            calls += self.flush(claimed.decode() if isinstance(claimed, bytes) else claimed, clients)

    def drain(self, clients: Clients) -> int:
        """Make every batch due now and send them (a burst worker, before it exits); calls made."""
        self._due_now(keys=[DUE], args=[self.clock() + FLUSH_AFTER + 0.1])  # leased ones stay leased
        return self.flush_due(clients)

    def flush(self, batch_id: str, clients: Clients) -> int:
        """Send a claimed batch: what is pending now, then any further full call's worth."""
        raw_spec = self.connection.hget(SPECS, batch_id)
        if raw_spec is None:
            self.connection.zrem(DUE, batch_id)
            return 0
        spec = Spec.from_json(raw_spec)
        client = clients(spec.cloud_name)
        calls = 0
        again_at = self.clock() + FLUSH_AFTER
        try:
            while True:
                raw = self.connection.lrange(pending_key(batch_id), 0, spec.batch_size - 1)
                if not raw or (calls and len(raw) < spec.batch_size):
                    break
                calls += self._apply(spec, batch_id, [json.loads(entry) for entry in raw], client)
                self._trim(keys=[pending_key(batch_id)], args=[raw[0], raw[-1], len(raw)])
            self.connection.hdel(ATTEMPTS, batch_id)
        except ActionError as error:
            again_at = self._failed(spec, batch_id, error)
        self._release(keys=[pending_key(batch_id), DUE], args=[again_at, batch_id])
        return calls

    def _failed(self, spec: Spec, batch_id: str, error: ActionError) -> float:
        """A transient failure: try again with jittered backoff; after `retries`, hand the items to RQ."""
        attempts = int(self.connection.hincrby(ATTEMPTS, batch_id, 1))
        if attempts <= self.retries:
            delay = backoff.RETRY.compute(attempts - 1)
            log.warning("tags %s %s: %s; again in %.1f s", spec.command, list(spec.tags), error, delay)
            return self.clock() + delay
        raw = self.connection.lrange(pending_key(batch_id), 0, spec.batch_size - 1)
        for entry in raw:  # each becomes a job that retries on its own and ends in the failed registry
            self._give_up(spec, json.loads(entry), error)
        if raw:
            self._trim(keys=[pending_key(batch_id)], args=[raw[0], raw[-1], len(raw)])
        self.connection.hdel(ATTEMPTS, batch_id)
        return self.clock() + FLUSH_AFTER

    def _apply(self, spec: Spec, batch_id: str, items: list[dict[str, Any]], client: Client) -> int:
        """One call for these items (split in halves when Cloudinary refuses the whole); calls made."""
        done = self.connection.mget([item["key"] for item in items])
        todo = [item for item, mark in zip(items, done, strict=True) if mark is None]
        if not todo:
            return 0
        self.connection.zadd(DUE, {batch_id: self.clock() + self.lease}, xx=True)  # renew the lease
        public_ids = list(dict.fromkeys(item["public_id"] for item in todo))
        try:
            changed = tags_handler.send(client, spec.call(public_ids)).changed
        except ActionError as error:
            if not error.permanent:
                raise
            if len(todo) == 1:
                self._give_up(spec, todo[0], error)
                return 1
            middle = len(todo) // 2
            halves = (todo[:middle], todo[middle:])
            return 1 + sum(self._apply(spec, batch_id, half, client) for half in halves)
        self.mark_done(spec, todo, set(changed))
        if self.counts is not None:
            self.counts.observe("postupload_tag_batch_size", len(public_ids), command=spec.command)
        return 1

    def mark_done(self, spec: Spec, items: list[dict[str, Any]], changed: set[str]) -> None:
        told = []
        with self.connection.pipeline(transaction=False) as pipe:
            for item in items:
                outcome: dict[str, Any] = {"status": "ok"}
                if item["public_id"] not in changed:
                    outcome["detail"] = "no change (tags already so, or asset not found)"
                pipe.set(item["key"], json.dumps(outcome), ex=keys.DONE_TTL)
                entry = {
                    "event": "action",
                    "notification": item["notification"],
                    "rule": item["rule"],
                    "action": "tags",
                    "call": {spec.command: list(spec.tags)},
                    **outcome,
                }
                where = item.get("index", item["public_id"])
                told.append(history.Story(item["asset"], where, [(entry, self.clock())], refresh=False))
            history.record_all(pipe, told)
            pipe.execute()

    def _give_up(self, spec: Spec, item: dict[str, Any], error: ActionError) -> None:
        """Cloudinary refused this asset's change: its own job holds it (failed registry, replayable)."""
        log.warning("tags %s on %s: %s; moved to a job of its own", spec.command, item["public_id"], error)
        self.queue.enqueue_call(
            SINGLE_FUNCTION,
            args=(spec.as_json(), item),
            retry=None if error.permanent else retry_policy(self.retries),
            result_ttl=keys.FINISHED_JOB_TTL,
            failure_ttl=keys.FAILED_JOB_TTL,
            description=printable(f"tags {spec.command} {list(spec.tags)} on {item['public_id']}"),
            at_front=True,
        )

    def apply_single(self, spec_json: str, item: dict[str, Any], clients: Clients) -> dict[str, Any]:
        """The job for one refused asset: try once more, alone; raise (to the failed registry) if refused."""
        spec = Spec.from_json(spec_json)
        client = clients(spec.cloud_name)
        if self.connection.exists(item["key"]):
            return {"skipped": "already done"}
        try:
            changed = tags_handler.send(client, spec.call([item["public_id"]])).changed
        except ActionError as error:
            entry = {
                "event": "action",
                "notification": item["notification"],
                "rule": item["rule"],
                "action": "tags",
                "status": "failed",
                "error": str(error),
            }
            history.record(
                self.connection, item["asset"], item.get("index", item["public_id"]), entry, self.clock()
            )
            raise
        self.mark_done(spec, [item], set(changed))
        return {"changed": bool(changed)}


class Flusher:
    """The thread in each worker process that sends due tag batches. Between two rounds it blocks on
    the wake list (and a list of its own, for stopping) until the next batch is due, IDLE s at most."""

    def __init__(self, batches: TagBatches, clients: Clients, timeout: float) -> None:
        self.batches = batches
        self.clients = clients
        self.timeout = timeout  # of one call: how long stopping may wait for the one in flight
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="tag-flusher", daemon=True)
        self.stop_key = keys.flusher_stop(f"{socket.gethostname()}:{os.getpid()}:{id(self)}")
        self.waiting = waiting(batches.connection, IDLE)

    def start(self) -> Flusher:
        self.thread.start()
        return self

    def run(self) -> None:
        failing = False  # said once per outage, not 20 times a second
        delay = 0.0
        while not self.stopping.is_set():
            try:
                if delay > 0:
                    self.waiting.blpop([self.stop_key, WAKE], timeout=delay)
                if self.stopping.is_set():
                    return
                self.batches.flush_due(self.clients)
                due = self.batches.next_due()
                wait = IDLE if due is None else due - self.batches.clock()
                delay = min(IDLE, max(0.01, wait))  # BLPOP's timeout 0 would mean forever
            except redis.RedisError as error:
                if not failing:
                    log.warning("tag flusher: Redis failed (%s); trying again every %.2f s", error, POLL)
                failing = True
                self.stopping.wait(POLL)
                delay = 0.0
                continue
            except Exception:  # keep flushing whatever one batch did; the lease brings it back
                log.exception("tag flusher")
                delay = POLL
            if failing:
                log.warning("tag flusher: Redis answers again")
                failing = False

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(redis.RedisError):  # wake it now (Redis away: its wait fails soon)
            self.batches.connection.rpush(self.stop_key, 1)
            self.batches.connection.expire(self.stop_key, 60)
        self.thread.join(timeout=self.timeout + 5)
        self.waiting.close()

"""Tag changes coalesced across notifications into Upload API `tags` calls of up to 1000 assets.

A `tags` action does not call Cloudinary: it appends the asset to the pending list of its batch
(same resource type, delivery type, command and tags) and makes sure a flush is scheduled about a
second later. The flush takes the list in calls of up to `batch_size` ids, marks each action done,
and removes what it sent only after Cloudinary answered, so a worker killed mid-flush loses nothing:
the job is run again, and Cloudinary's tag commands are idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from rq import Queue

from handlers import tags as tags_handler
from postupload import history
from postupload.cloudinary_api import CloudinaryClient
from postupload.errors import ActionError
from postupload.queue import retry_policy

log = logging.getLogger(__name__)

FLUSH_FUNCTION = "postupload.worker.flush_tags"
SINGLE_FUNCTION = "postupload.worker.apply_tag_item"
FLUSH_DELAY = timedelta(seconds=1)  # with the scheduler's 1 s tick: sent within 2 s of the first id
QUEUED_TTL = 8 * 24 * 3600

# Append unless this action is already queued (a job re-run or a duplicate): one atomic step.
_PUSH = """
if redis.call('set', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('rpush', KEYS[1], ARGV[1])
end
return 0
"""
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Spec:
    resource_type: str
    type: str
    command: str
    tags: tuple[str, ...]

    @property
    def id(self) -> str:
        text = json.dumps([self.resource_type, self.type, self.command, list(self.tags)])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def as_json(self) -> str:
        return json.dumps([self.resource_type, self.type, self.command, list(self.tags)])

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        resource_type, delivery_type, command, tags = json.loads(text)
        return cls(resource_type, delivery_type, command, tuple(tags))


class TagBatches:
    SPECS = "postupload:tag-batches"

    def __init__(
        self, connection: redis.Redis, queue: Queue, lock_seconds: float = 40.0, retries: int = 6
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.retries = retries
        self.lock_seconds = max(5, int(lock_seconds))
        self._push = connection.register_script(_PUSH)
        self._unlock = connection.register_script(_UNLOCK)

    def _pending(self, batch_id: str) -> str:
        return f"postupload:tag-batch:{batch_id}"

    def add(self, spec: Spec, item: dict[str, Any]) -> bool:
        """Queue one asset's change; False when this very action was queued before."""
        batch_id = spec.id
        self.connection.hset(self.SPECS, batch_id, spec.as_json())
        queued_marker = f"postupload:queued:{item['key']}"
        length = int(
            self._push(keys=[self._pending(batch_id), queued_marker], args=[json.dumps(item), QUEUED_TTL])
        )
        if length == 0:
            return False
        if length % tags_handler.batch_size(list(spec.tags)) == 0:
            self.queue.enqueue_call(
                FLUSH_FUNCTION, args=(batch_id,), retry=retry_policy(self.retries)
            )  # full: now
        elif self.connection.set(f"postupload:tag-batch:{batch_id}:scheduled", 1, nx=True, ex=2):
            self.schedule(batch_id)
        return True

    def schedule(self, batch_id: str) -> None:
        self.queue.enqueue_in(FLUSH_DELAY, FLUSH_FUNCTION, batch_id, retry=retry_policy(self.retries))

    def flush(self, batch_id: str, client: CloudinaryClient) -> dict[str, Any]:
        """Send what is pending for one batch: the first call whatever its size, then only full ones."""
        self.connection.delete(f"postupload:tag-batch:{batch_id}:scheduled")
        raw_spec = self.connection.hget(self.SPECS, batch_id)
        if raw_spec is None:
            return {"batch": batch_id, "calls": 0}
        spec = Spec.from_json(raw_spec)
        size = tags_handler.batch_size(list(spec.tags))
        lock, token = f"postupload:tag-batch:{batch_id}:lock", secrets.token_hex(8)
        if not self.connection.set(lock, token, nx=True, ex=self.lock_seconds):
            self.schedule(batch_id)  # another flush is sending; look again in a second
            return {"batch": batch_id, "calls": 0, "busy": True}
        calls = sent = 0
        try:
            while True:
                self.connection.expire(lock, self.lock_seconds)
                raw = self.connection.lrange(self._pending(batch_id), 0, size - 1)
                if not raw or (calls and len(raw) < size):
                    break
                items = [json.loads(entry) for entry in raw]
                calls += self._apply(spec, items, client)
                sent += len(items)
                self.connection.ltrim(self._pending(batch_id), len(raw), -1)
            if self.connection.llen(self._pending(batch_id)):
                self.schedule(batch_id)
        finally:
            self._unlock(keys=[lock], args=[token])
        return {"batch": batch_id, "calls": calls, "actions": sent}

    def _apply(self, spec: Spec, items: list[dict[str, Any]], client: CloudinaryClient) -> int:
        """One call for these items (split in halves when Cloudinary refuses the whole); calls made."""
        todo = [item for item in items if not self.connection.exists(item["key"])]
        if not todo:
            return 0
        public_ids = list(dict.fromkeys(item["public_id"] for item in todo))
        try:
            changed = tags_handler.run(
                client, spec.command, list(spec.tags), public_ids, spec.resource_type, spec.type
            )
        except ActionError as error:
            if not error.permanent:
                raise
            if len(todo) == 1:
                self._give_up(spec, todo[0], error)
                return 1
            middle = len(todo) // 2
            return 1 + self._apply(spec, todo[:middle], client) + self._apply(spec, todo[middle:], client)
        self.mark_done(spec, todo, set(changed))
        return 1

    def mark_done(self, spec: Spec, items: list[dict[str, Any]], changed: set[str]) -> None:
        with self.connection.pipeline(transaction=False) as pipe:
            for item in items:
                found = item["public_id"] in changed
                outcome = (
                    {"status": "ok", "changed": found}
                    if found
                    else {"status": "ok", "detail": "asset not found"}
                )
                pipe.set(item["key"], json.dumps(outcome), ex=QUEUED_TTL)
                pipe.delete(f"postupload:queued:{item['key']}")
                history.record(
                    pipe,
                    item["asset"],
                    item["public_id"],
                    {
                        "event": "action",
                        "notification": item["notification"],
                        "rule": item["rule"],
                        "action": "tags",
                        "call": {spec.command: list(spec.tags)},
                        **outcome,
                    },
                )
            pipe.execute()

    def _give_up(self, spec: Spec, item: dict[str, Any], error: ActionError) -> None:
        """A permanent refusal for one asset: its own job holds it in the failed registry, replayable."""
        log.warning("tags %s on %s refused: %s", spec.command, item["public_id"], error)
        self.queue.enqueue_call(
            SINGLE_FUNCTION, args=(spec.as_json(), item), retry=retry_policy(self.retries)
        )

    def apply_single(self, spec_json: str, item: dict[str, Any], client: CloudinaryClient) -> dict[str, Any]:
        """The job for one refused asset: try once more, alone; raises (to the failed registry) if refused."""
        spec = Spec.from_json(spec_json)
        if self.connection.exists(item["key"]):
            return {"skipped": "already done"}
        try:
            changed = tags_handler.run(
                client, spec.command, list(spec.tags), [item["public_id"]], spec.resource_type, spec.type
            )
        except ActionError as error:
            history.record(
                self.connection,
                item["asset"],
                item["public_id"],
                {
                    "event": "action",
                    "notification": item["notification"],
                    "rule": item["rule"],
                    "action": "tags",
                    "status": "failed",
                    "error": str(error),
                },
            )
            raise
        self.mark_done(spec, [item], set(changed))
        return {"changed": bool(changed)}

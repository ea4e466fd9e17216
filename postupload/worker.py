"""The worker process: load the rule set, match, plan, run handlers. RQ calls `process_notification`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from handlers import REGISTRY
from postupload.cloudinary_api import CloudinaryClient
from postupload.config import Settings
from postupload.errors import ActionError, RuleSetError
from postupload.plan import plan_actions
from postupload.queue import notification_queue
from postupload.ruleset import RuleSource

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a job needs beyond its arguments: the rule set and a Cloudinary client."""

    rules: RuleSource
    client: CloudinaryClient

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        client = CloudinaryClient(settings.require_account(), settings.api_timeout)
        return cls(RuleSource(settings.rules_dir), client)

    def process(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Match one notification and run what its rules ask for; raise if any action failed."""
        ruleset = self.rules.current()
        if ruleset is None:
            raise RuleSetError(self.rules.error.problems if self.rules.error else [])
        notification = envelope["notification"]
        matched = ruleset.match(notification)
        outcomes = []
        for planned in plan_actions(matched, notification):
            try:
                detail = REGISTRY[planned.action].run(planned.params, notification, self.client)
                outcomes.append({"rule": planned.rule, "action": planned.action, "ok": True, **detail})
            except ActionError as error:
                log.warning("%s: rule %s %s failed: %s", envelope["id"], planned.rule, planned.action, error)
                outcomes.append(
                    {"rule": planned.rule, "action": planned.action, "ok": False, "error": str(error)}
                )
        result = {"id": envelope["id"], "rules": [rule.name for rule in matched], "actions": outcomes}
        failed = [outcome for outcome in outcomes if not outcome["ok"]]
        if failed:
            raise ActionError(f"{len(failed)} of {len(outcomes)} actions failed: {failed}", permanent=False)
        return result


_runtime: Runtime | None = None


def process_notification(envelope: dict[str, Any]) -> dict[str, Any]:
    """The RQ job function. Under `rq worker` (no `postupload worker`) it configures itself from the env."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_settings(Settings.from_env())
    return _runtime.process(envelope)


def run_worker(settings: Settings, connection: redis.Redis, queue_names: list[str], burst: bool) -> bool:
    """Work the queues until stopped (or, with burst, until they are empty)."""
    global _runtime
    runtime = Runtime.from_settings(settings)
    if runtime.rules.current() is None:
        assert runtime.rules.error is not None
        raise runtime.rules.error
    _runtime = runtime
    queues = [notification_queue(connection, name) for name in queue_names]
    # SimpleWorker: no fork per job, so the loaded rule set and HTTP connections are reused.
    worker = SimpleWorker(queues, connection=connection, serializer=JSONSerializer)
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")

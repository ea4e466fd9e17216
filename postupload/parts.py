"""One place builds the parts a process uses, from the settings: the Redis connection, the counts,
the queue, the live rule source, the tag batches, and per product environment a Cloudinary client and
its Admin API budget. The web, the worker and the CLI each take what they need from here, so that a
part is made one way everywhere."""

from __future__ import annotations

from functools import cached_property

import redis

from postupload.cloudinary_api import CloudinaryClient
from postupload.config import Account, Settings
from postupload.rules.source import RuleSource
from postupload.store.batches import TagBatches
from postupload.store.budget import AdminBudget
from postupload.store.connection import connect
from postupload.store.last_good import LastGood
from postupload.store.metrics import Counts
from postupload.store.queue import NotificationQueue, notification_queue

# Seconds between a long-running process's flushes of its counts to Redis (one transaction, not one
# per notification). A command that ends soon (backfill) flushes as it goes.
METRICS_EVERY = 1.0


class Parts:
    def __init__(
        self, settings: Settings, connection: redis.Redis | None = None, metrics_every: float = METRICS_EVERY
    ) -> None:
        self.settings = settings
        self.accounts: dict[str, Account] = settings.all_accounts()
        if not self.accounts:
            settings.require_account()  # raises, saying which variable to set
        self.connection = connection or connect(settings.require_redis_url())
        self.counts = Counts(self.connection, every=metrics_every)
        self.queue: NotificationQueue = notification_queue(self.connection)

    @cached_property
    def rules(self) -> RuleSource:
        """The rule files, reloaded when they change, with the last good set kept in Redis."""
        settings = self.settings
        return RuleSource(
            settings.rules_dir,
            on_invalid=self.counts.invalid_rule_set,
            require_tests=settings.rules_require_tests,
            last_good=LastGood(self.connection),
        )

    @cached_property
    def batches(self) -> TagBatches:
        """Tag changes of many notifications, sent together (shared by every product environment)."""
        timeout = self.settings.api_timeout + 10
        return TagBatches(self.connection, self.queue, timeout, self.settings.retries, counts=self.counts)

    def client(self, account: Account) -> CloudinaryClient:
        return CloudinaryClient(account, self.settings.api_timeout, self.counts)

    def budget(self, cloud_name: str) -> AdminBudget:
        """The product environment's Admin API budget, shared by every process on this Redis."""
        return AdminBudget(self.connection, cloud_name, self.settings.api_timeout)

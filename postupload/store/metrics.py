"""Metrics kept in Redis: each process adds its counts there, and any web process's /metrics shows
the deployment's totals with the state of the queue read at scrape time.

Why Redis and not prometheus-client's multiprocess mode or a port per worker: workers run on
platforms (a Procfile's `worker`) that give them no port to scrape, web and worker processes come
and go, and counts held in a process would start again from zero with it. In Redis a count only
grows, whoever made it and whatever restarted since; one scrape of the web service sees it all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from postupload.rules.source import RuleSource
from postupload.store import keys
from postupload.store.measures import bucket, families, field
from postupload.store.state import overview

log = logging.getLogger(__name__)


class Counts:
    """Counts made in this process, added to Redis in one round trip by `flush`. What cannot be
    added (Redis is away) is kept and added with the next flush.

    A process flushes at most every `every` seconds: the web after a request, a worker after a job,
    and both from `flush_in_background` when none follows (it asks Redis nothing when idle). A busy
    process's counts cost Redis one transaction a second rather than one a notification; they show
    within that second, and a process killed outright loses at most that second's counts (a worker
    that is stopped flushes first)."""

    def __init__(
        self,
        connection: redis.Redis,
        clock: Callable[[], float] = time.time,
        every: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.clock = clock
        self.every = every
        self.monotonic = monotonic
        self._flushed_at = float("-inf")
        self._lock = threading.Lock()  # jobs, heartbeats and the tag-batch flusher share a worker
        self._flushing = threading.Lock()
        self._fields: defaultdict[str, float] = defaultdict(float)
        self._recent: defaultdict[tuple[str, str, int], int] = defaultdict(int)  # key, field, ttl
        self.stopping = threading.Event()  # ends `flush_in_background`

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self._fields[field(name, labels)] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram."""
        with self._lock:
            self._fields[field(name, labels, bucket(name, value))] += 1
            self._fields[field(name, labels, "sum")] += value

    def notification(self, notification_type: str, answer: str, cloud: str, origin: str = "unknown") -> None:
        self.count(
            "postupload_notifications", type=notification_type, answer=answer, cloud=cloud, origin=origin
        )
        minute = int(self.clock()) // 60
        with self._lock:
            self._recent[(keys.notifications_in_minute(minute), answer, keys.RECENT_MINUTES * 60)] += 1
            if origin != "unknown":
                self._recent[(keys.origins_in_minute(minute), origin, keys.RECENT_MINUTES * 60)] += 1

    def matched(self, rules: Iterable[str]) -> None:
        hour = int(self.clock()) // 3600
        for rule in rules:
            self.count("postupload_rule_matches", rule=rule)
            with self._lock:
                self._recent[(keys.matches_in_hour(hour), rule, (keys.RECENT_HOURS + 1) * 3600)] += 1

    def flush_in_background(self) -> Counts:
        """Flush what waits every `every` seconds from a thread of its own (a greenlet under gevent):
        counts that `flush_soon` left are added within that time even when no request follows."""

        def run() -> None:
            while not self.stopping.wait(self.every):
                if self._fields or self._recent:
                    self.flush()

        threading.Thread(target=run, name="metrics-flusher", daemon=True).start()
        return self

    def close(self) -> None:
        """As the process ends: the background flusher stops and what was counted goes to Redis."""
        self.stopping.set()
        self.flush()

    def flush_soon(self) -> None:
        """Flush if `every` seconds went by since the last flush."""
        if self.monotonic() - self._flushed_at >= self.every:
            self.flush()

    def flush(self) -> bool:
        """Add what was counted to Redis; False (and kept for the next flush) if Redis failed.
        A flush waits for one in flight (another thread's), so what was counted before it is in
        Redis when it returns."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            self._flushed_at = self.monotonic()
            fields, self._fields = self._fields, defaultdict(float)
            recent, self._recent = self._recent, defaultdict(int)
        if not fields and not recent:
            return True
        try:
            with self.connection.pipeline(transaction=True) as pipe:  # all or nothing: never twice
                for name, amount in fields.items():
                    if float(amount).is_integer():
                        pipe.hincrby(keys.METRICS, name, int(amount))
                    else:
                        pipe.hincrbyfloat(keys.METRICS, name, amount)
                for (key, name, ttl), amount in recent.items():
                    pipe.hincrby(key, name, amount)
                    pipe.expire(key, ttl)
                pipe.execute()
            return True
        except redis.RedisError as error:
            log.debug("metrics kept for the next flush: %s", error)
            with self._lock:
                for name, amount in fields.items():
                    self._fields[name] += amount
                for entry, amount in recent.items():
                    self._recent[entry] += amount
            return False

    def invalid_rule_set(self, version: str) -> None:
        """An invalid rule-set edit was kept out: counted once however many processes saw it."""
        try:
            if self.connection.set(keys.invalid_rule_set(version), 1, nx=True, ex=30 * keys.DAY):
                self.connection.hincrby(keys.METRICS, field("postupload_rule_load_errors", {}), 1)
        except redis.RedisError as error:
            log.debug("rule load error not counted: %s", error)


class StateCollector(Collector):
    """The stored counts, and the state of the queue, workers, budget and rule set at scrape time."""

    def __init__(self, connection: redis.Redis, cloud_names: list[str], rules: RuleSource) -> None:
        self.connection = connection
        self.cloud_names = cloud_names
        self.rules = rules

    def collect(self) -> Iterable[Metric]:
        yield from families(self.connection.hgetall(keys.METRICS))
        now = overview(self.connection, self.cloud_names)
        yield _gauge("postupload_queue_jobs", "Jobs waiting in the queue", now.queued, queue=now.queue)
        yield _gauge(
            "postupload_queue_oldest_job_age_seconds",
            "How long the oldest waiting job has waited (0 when none waits)",
            now.oldest_age or 0.0,
            queue=now.queue,
        )
        states = GaugeMetricFamily(
            "postupload_job_registry",
            "Jobs by state: started (being worked), retrying, deferred (to a budget reset), failed",
            labels=["state"],
        )
        for state, count in (
            ("started", now.started),
            ("retrying", now.retrying),
            ("deferred", now.deferred),
            ("failed", now.failed),
        ):
            states.add_metric([state], count)
        yield states
        yield _gauge("postupload_workers", "Workers alive (registered with RQ)", now.workers)
        yield _gauge("postupload_tag_batches_waiting", "Tag batches waiting to be sent", now.tag_batches)
        remaining = GaugeMetricFamily(
            "postupload_admin_budget_remaining",
            "Admin API calls left in this window, by product environment (absent: unknown)",
            labels=["cloud"],
        )
        reset = GaugeMetricFamily(
            "postupload_admin_budget_reset_timestamp_seconds",
            "When the Admin API window resets, by product environment",
            labels=["cloud"],
        )
        for cloud_name, budget in now.budgets.items():
            if budget.remaining is not None and budget.reset is not None:
                remaining.add_metric([cloud_name], budget.remaining)
                reset.add_metric([cloud_name], budget.reset)
        yield remaining
        yield reset
        yield from self._rules()

    def _rules(self) -> Iterable[Metric]:
        ruleset = self.rules.current()
        loaded = GaugeMetricFamily(
            "postupload_rules", "Rules in the running rule set, by its version", labels=["version"]
        )
        if ruleset is not None:
            loaded.add_metric([ruleset.version], len(ruleset.rules))
        yield loaded
        yield _gauge(
            "postupload_rules_valid",
            "1 when the rule files load; 0 when an invalid edit is kept out (the last good set runs)",
            0 if self.rules.error else 1,
        )


def _gauge(name: str, help: str, value: float, **labels: str) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, help, labels=list(labels))
    gauge.add_metric(list(labels.values()), value)
    return gauge

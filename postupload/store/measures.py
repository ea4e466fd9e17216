"""What postupload measures, and how a measurement is kept as one field of a Redis hash. Pure.

Every process (each gunicorn worker, each RQ worker, on any machine) adds its counts to the same
Redis hash, so the totals are the deployment's, never go backwards when a process restarts, and any
web process answers a scrape with all of them. This module names the metrics and encodes fields;
`metrics.py` does the Redis and Prometheus I/O.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


@dataclass(frozen=True)
class Measure:
    name: str  # without the _total a counter's samples get
    kind: str  # counter | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, +Inf implied


LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000)

MEASURES = {
    measure.name: measure
    for measure in (
        Measure(
            "postupload_notifications",
            "counter",
            "Notifications received, by notification_type (other when unknown), the answer given, "
            "the product environment (unknown when the path names none served) and who caused them "
            "(origin: own = this deployment's API key, other, untold, unknown before verification)",
            ("type", "answer", "cloud", "origin"),
        ),
        Measure("postupload_rule_matches", "counter", "Notifications each rule matched", ("rule",)),
        Measure(
            "postupload_actions",
            "counter",
            "Rule actions by kind, rule, outcome (ok, skipped, batched, deferred, capped, failed) and "
            "product environment",
            ("kind", "rule", "outcome", "cloud"),
        ),
        Measure(
            "postupload_jobs",
            "counter",
            "Jobs worked, by outcome: finished, retrying (failed, will run again), failed (for good)",
            ("outcome",),
        ),
        Measure(
            "postupload_retries",
            "counter",
            "Jobs sent back for another try, by the reason (an HTTP status, timeout, connection, ...)",
            ("reason",),
        ),
        Measure(
            "postupload_admin_budget_waits",
            "counter",
            "Notifications deferred to the Admin API budget's reset (budget spent, or a 420/429)",
            (),
        ),
        Measure(
            "postupload_rule_load_errors",
            "counter",
            "Invalid rule-set edits kept out (each distinct invalid content counted once)",
            (),
        ),
        Measure(
            "postupload_cloudinary_call_seconds",
            "histogram",
            "Cloudinary API calls: time to answer, by endpoint, HTTP status (timeout, connection) and "
            "product environment",
            ("endpoint", "status", "cloud"),
            LATENCY_BUCKETS,
        ),
        Measure(
            "postupload_tag_batch_size",
            "histogram",
            "Assets per tag batch call sent to Cloudinary",
            ("command",),
            BATCH_BUCKETS,
        ),
    )
}


def field(name: str, labels: Mapping[str, str], part: str = "") -> str:
    """The hash field of one counter (part "") or one histogram bucket ("3"), "sum" or "count"."""
    return _field(name, tuple(labels.items()), part)


@functools.lru_cache(maxsize=4096)  # a few label sets come again and again (one per notification)
def _field(name: str, label_items: tuple[tuple[str, str], ...], part: str) -> str:
    measure, labels = MEASURES[name], dict(label_items)
    if set(labels) != set(measure.labels):
        raise ValueError(f"{name} takes labels {measure.labels}, got {tuple(labels)}")
    return json.dumps([name, [str(labels[label]) for label in measure.labels], part], separators=(",", ":"))


def bucket(name: str, value: float) -> str:
    """The bucket (by index; len(buckets) is +Inf) a histogram observation falls in."""
    bounds = MEASURES[name].buckets
    for index, bound in enumerate(bounds):
        if value <= bound:
            return str(index)
    return str(len(bounds))


def families(stored: Mapping[str | bytes, str | bytes | float]) -> Iterable[Metric]:
    """Prometheus metric families from the stored fields; every measure appears, counted or not."""
    values: dict[str, dict[tuple[str, ...], dict[str, float]]] = {name: {} for name in MEASURES}
    for raw_field, raw_value in stored.items():
        try:
            name, label_values, part = json.loads(raw_field)
            amount = float(raw_value)
        except (ValueError, TypeError):
            continue  # not ours
        if name in values and len(label_values) == len(MEASURES[name].labels):
            values[name].setdefault(tuple(label_values), {})[part] = amount
    for name, series in values.items():
        measure = MEASURES[name]
        if measure.kind == "counter":
            counter = CounterMetricFamily(name, measure.help, labels=measure.labels)
            for label_values, parts in sorted(series.items()):
                counter.add_metric(list(label_values), parts.get("", 0.0))
            yield counter
        else:
            histogram = HistogramMetricFamily(name, measure.help, labels=measure.labels)
            for label_values, parts in sorted(series.items()):
                cumulative, buckets = 0.0, []
                for index, bound in enumerate((*measure.buckets, math.inf)):
                    cumulative += parts.get(str(index), 0.0)
                    buckets.append((_bound(bound), cumulative))
                histogram.add_metric(list(label_values), buckets, parts.get("sum", 0.0))
            yield histogram


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))

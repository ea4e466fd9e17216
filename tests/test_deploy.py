"""deploy/: the Grafana dashboard and the Prometheus alerts name only metrics and labels we export."""

from __future__ import annotations

import json
import re
from typing import Any

import redis
import yaml
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from postupload.config import Settings
from postupload.store.measures import MEASURES
from postupload.web.app import create_app
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target


def exported(client: FlaskClient) -> dict[str, set[str]]:
    """Every series name /metrics can show (with _total, _bucket, ...), and the labels each takes."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        labels = {label for sample in family.samples for label in sample.labels}
        labels |= set(MEASURES[family.name].labels) if family.name in MEASURES else set()
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel query and alert."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    alerts = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    found += [
        (f"alert {rule['alert']}", rule["expr"]) for group in alerts["groups"] for rule in group["rules"]
    ]
    return found


def test_every_metric_and_label_the_dashboard_and_alerts_name_is_exported(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    names = exported(create_app(settings, redis_conn).test_client())
    queries = expressions()
    assert len(queries) >= 25
    for where, expr in queries:
        metrics = set(re.findall(r"\b(postupload_[a-z_]+|up)\b", expr))
        assert metrics, (where, expr)
        for metric in metrics - PROMETHEUS_OWN:
            assert metric in names, f"{where} names {metric}, which /metrics does not export"
        allowed = set().union(*(names.get(metric, {"job"}) for metric in metrics))
        for selector in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in allowed, f"{where}: no metric there has a label {label!r}"
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in allowed, f"{where}: groups by {label!r}, which no metric there has"


def test_the_dashboard_and_the_alerts_are_complete_documents() -> None:
    dashboard: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "postupload"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
    alerts = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # What the issue asks to be alerted on: queue age, failure rate, budget, workers, rule edits.
    watched = " ".join(rule["expr"] for rule in rules)
    for metric in (
        "postupload_queue_oldest_job_age_seconds",
        'postupload_jobs_total{outcome="failed"}',
        "postupload_admin_budget_remaining",
        "postupload_workers",
        "postupload_rules_valid",
    ):
        assert metric in watched, metric
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["job_name"] == "postupload"  # the alerts' up{job=...}
    assert scrape["rule_files"] == ["prometheus-alerts.yml"]

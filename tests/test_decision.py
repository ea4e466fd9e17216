"""One decision: the worker, `rules explain`, `rules diff`, `rules test`, the console's Playground and
Preview and `backfill --dry-run` all find the same calls for the same envelope, including rules on
the verified cloud_name and on backfill (they previewed as never matching, and ran)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from postupload.backfill.events import AssetSource, Backfill, envelope
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.ruleset import RuleSet
from postupload.rules.explain import explain, explain_text
from postupload.rules.loading import load_ruleset
from postupload.rules.preview import diff
from postupload.rules.rule_tests import observed
from postupload.rules.source import RuleSource
from postupload.store.batches import TagBatches
from postupload.store.budget import AdminBudget
from postupload.store.queue import notification_queue
from postupload.web.console.views import _evaluate
from postupload.worker.executor import Executor
from tests.fakes import Clock, RecordingClient

RULES = """
rules:
  - name: blog-review
    match: {cloud_name: [blog-prod], resource_type: image}
    actions:
      - context: {set: {reviewed_in: "${cloud_name}"}}
  - name: live-only
    match: {resource_type: image, backfill: [{exists: false}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
  - name: backfill-only
    match: {resource_type: image, backfill: [true]}
    actions:
      - tags: {add: [backfilled]}
"""
UPLOAD = {
    "notification_type": "upload",
    "public_id": "same/picture",
    "asset_id": "a1",
    "version": 3,
    "resource_type": "image",
    "type": "upload",
}
ENVELOPES = [
    Envelope("n-blog", 0.0, "blog-prod", UPLOAD),
    Envelope("n-shop", 0.0, "shop-prod", UPLOAD),
    envelope(Backfill(AssetSource(prefix="same/")), {**UPLOAD, "tags": []}, 0.0, "blog-prod"),
    envelope(Backfill(AssetSource(prefix="same/"), rules=("blog-review",)), UPLOAD, 0.0, "blog-prod"),
]


def shown(call: Any) -> tuple[str, tuple[str, ...]]:
    """A call as every path can state it: endpoint and assets."""
    data = call if isinstance(call, dict) else call.as_dict()
    return data["endpoint"], tuple(data["public_ids"])


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    (tmp_path / "rules.yaml").write_text(RULES)
    return load_ruleset(tmp_path)


def worker_calls(
    connection: redis.Redis, ruleset: RuleSet, job: Envelope
) -> list[tuple[str, tuple[str, ...]]]:
    """What the worker sends for the envelope, through its own decision and executor, with a
    recording client (tag changes join their batch, sent here at once)."""
    client = RecordingClient()
    batches = TagBatches(connection, notification_queue(connection), clock=Clock())
    executor = Executor(
        connection, client, batches, AdminBudget(connection, job.cloud_name), lambda e, t: None
    )
    executor.execute(job, decide(ruleset, job))
    batches.drain(lambda cloud_name: client)
    return [
        (call["endpoint"], (call["public_id"],) if "public_id" in call else tuple(call["public_ids"]))
        for call in client.calls
    ]


@pytest.mark.parametrize("job", ENVELOPES, ids=["blog", "shop", "backfill", "backfill-one-rule"])
def test_every_path_finds_the_calls_the_worker_makes(
    job: Envelope, rules: RuleSet, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    made = sorted(worker_calls(redis_conn, rules, job))
    assert made  # every envelope here makes a call

    explained = explain(rules, job)
    planned = [call for asset in explained["plan"]["assets"] for call in asset["calls"]]
    assert sorted(map(shown, planned)) == made
    assert f"rules match in {job.cloud_name}." in explain_text(rules, job)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "rules.yaml").write_text("rules: []\n")
    report = diff(load_ruleset(empty), rules, [job])
    added = [(c.endpoint, tuple(c.examples[0]["public_ids"])) for c in report.calls if c.change == "added"]
    assert sorted(added) == made

    evaluated, problem = _evaluate(json.dumps(job.notification), RuleSource(tmp_path), job.cloud_name)
    assert problem is None and evaluated is not None
    if job.only_rules is None:  # pasted in the Playground or stated in a rule test: no --rule
        assert sorted(map(shown, evaluated["plan"].calls)) == made
        seen = observed(rules, {**job.notification, "cloud_name": job.cloud_name})
        assert sorted(map(shown, seen["calls"])) == made


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"triggered_by": {"source": "api", "id": "111222333444555"}}, "own"),
        ({"triggered_by": {"source": "api", "id": "999888777666555"}}, "other"),  # another key
        ({"triggered_by": {"source": "ui", "id": "111222333444555"}}, "other"),  # a user, not a key
        ({"triggered_by": {"source": "api"}}, "other"),
        ({"triggered_at": "2026-12-06T10:00:00Z"}, "untold"),
        ("api", "untold"),
        (None, "untold"),
    ],
)
def test_who_caused_a_notification_is_what_triggered_by_says(context: Any, expected: str) -> None:
    from postupload.core.notification import origin

    notification = {"notification_type": "resource_tags_changed"}
    if context is not None:
        notification["notification_context"] = context
    assert origin(notification, "111222333444555") == expected
    assert origin(notification, "") in ("other", "untold")  # no key of ours: nothing is ours

"""Every action kind, end to end: emulator upload → web → Redis → worker processes → emulator state."""

from __future__ import annotations

from typing import Any

from postupload import history
from tests.conftest import Stack, wait_until

EVERY_KIND = """
rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: ["c_scale,w_200"]}
      - addon: {background_removal: cloudinary_ai}
      - tags: {add: [processed, "sku-${context.custom.sku}"]}
      - context: {set: {alt: "Product ${public_id}", reviewed: false}, remove: [draft]}
      - metadata: {set: {season: [spring, summer], status: ready}}
  - name: crops
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_crop,g_north,h_200,w_360"}
  - name: approve
    match: {public_id: [{prefix: products/}]}
    actions:
      - moderation: {status: approved}
"""


def test_every_action_kind_takes_effect_with_one_shared_explicit_call(make_stack: Any) -> None:
    stack: Stack = make_stack(EVERY_KIND)
    stack.start_workers(1)
    stack.upload(public_id="products/shoe", context={"custom": {"sku": "S-1", "draft": "yes"}}, tags=["new"])

    def done() -> Any:
        asset = stack.assets()["products/shoe"]
        return asset if asset["moderation_status"] == "approved" and "processed" in asset["tags"] else None

    asset = wait_until(done, 20)
    assert asset, stack.processes.output()
    assert asset["derived"] == ["c_scale,w_200", "c_crop,g_north,h_200,w_360"]
    assert asset["addons"] == {"background_removal": ["cloudinary_ai"]}
    assert asset["tags"] == ["new", "processed", "sku-S-1"]
    assert asset["context"] == {"custom": {"sku": "S-1", "alt": "Product products/shoe", "reviewed": "false"}}
    assert asset["metadata"] == {"season": ["spring", "summer"], "status": "ready"}
    # Two rules' eager and the add-on share one explicit request; tags went as one tags call.
    (explicit,) = stack.calls("explicit")
    assert explicit["params"]["eager"] == "c_scale,w_200|c_crop,g_north,h_200,w_360"
    assert explicit["params"]["background_removal"] == "cloudinary_ai"
    assert [c["params"]["tag"] for c in stack.calls("tags")] == [["processed", "sku-S-1"]]
    assert len(stack.calls("context")) == len(stack.calls("metadata")) == len(stack.calls("update")) == 1
    assert all(call["resource_type"] == "image" for call in stack.calls())

    entries = history.read(stack.redis, "products/shoe")
    outcomes = {(e["rule"], e["action"]): e["status"] for e in entries if e["event"] == "action"}
    assert outcomes[("thumbs", "explicit")] == "ok" and outcomes[("approve", "moderation")] == "ok"
    assert outcomes[("thumbs", "tags")] == "ok"  # recorded when its batch was sent


TAG_EVERYTHING = """
rules:
  - name: tag-all
    match: {resource_type: image}
    actions:
      - tags: {add: [seen]}
"""


def test_a_thousand_tag_actions_make_at_most_two_tags_calls(make_stack: Any) -> None:
    stack: Stack = make_stack(TAG_EVERYTHING)
    for number in range(1000):  # a burst: queued before the workers start, as after a deploy
        stack.upload(public_id=f"burst/{number}")
    assert wait_until(lambda: stack.redis.llen("rq:queue:postupload") == 1000, 30), stack.redis.llen(
        "rq:queue:postupload"
    )
    stack.start_workers(4)
    assert wait_until(lambda: all("seen" in a["tags"] for a in stack.assets().values()), 60)
    calls = stack.calls("tags")
    assert 1 <= len(calls) <= 2, [len(c["params"]["public_ids"]) for c in calls]
    assert sum(len(c["params"]["public_ids"]) for c in calls) == 1000
    assert wait_until(stack.idle, 10) and not stack.failed()


def test_a_tag_batch_is_sent_within_two_seconds_of_its_first_asset(make_stack: Any) -> None:
    stack: Stack = make_stack(TAG_EVERYTHING)
    stack.start_workers(1)
    assert wait_until(lambda: stack.redis.exists("rq:workers"), 10)
    stack.upload(public_id="lonely")
    first = wait_until(
        lambda: stack.redis.llen("postupload:tag-batch:" + _batch_id("add", ["seen"])), 10, 0.01
    )
    assert first, stack.processes.output()
    import time

    queued_at = time.monotonic()
    assert wait_until(lambda: stack.calls("tags"), 5)
    assert time.monotonic() - queued_at <= 2.2


def _batch_id(command: str, tags: list[str]) -> str:
    from postupload.batches import Spec

    return Spec("image", "upload", command, tuple(tags)).id

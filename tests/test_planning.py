"""The calls a notification causes, as a value: planning is pure, so these run in milliseconds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from postupload.core.calls import Call, Plan
from postupload.core.notification import locate
from postupload.core.planning import plan
from postupload.core.ruleset import RuleSet
from postupload.rules.loading import load_ruleset

DATA = Path(__file__).parent / "data" / "notifications"


def ruleset_of(tmp_path: Path, text: str) -> RuleSet:
    (tmp_path / "rules.yaml").write_text(text)
    return load_ruleset(tmp_path)


def plan_for(ruleset: RuleSet, notification: dict[str, Any], notification_id: str = "n1") -> Plan:
    return plan(ruleset.match(notification), notification, notification_id)


def sample(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((DATA / name).read_bytes())
    return value


UPLOAD = {
    "notification_type": "upload",
    "public_id": "products/shoe",
    "asset_id": "a1",
    "version": 7,
    "resource_type": "image",
    "type": "upload",
    "context": {"custom": {"sku": "S-1"}},
}

EVERY_KIND = """
rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: ["c_scale,w_200"]}
      - addon: {background_removal: cloudinary_ai}
      - tags: {add: [processed, "sku-${context.custom.sku}"]}
      - context: {set: {alt: "Product ${public_id}"}}
      - metadata: {set: {status: ready}}
  - name: crops
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: {crop: crop, gravity: north, height: 200, width: 360}}
  - name: approve
    match: {public_id: [{prefix: products/}]}
    actions:
      - moderation: {status: approved}
"""


def test_every_kind_plans_one_shared_explicit_then_batched_tags_then_the_budgeted_admin_call(
    tmp_path: Path,
) -> None:
    planned = plan_for(ruleset_of(tmp_path, EVERY_KIND), UPLOAD)
    assert planned.rules == ("thumbs", "crops", "approve")
    calls = planned.calls
    assert [(c.api, c.endpoint, c.delivery) for c in calls] == [
        ("upload", "explicit", "now"),
        ("upload", "context", "now"),
        ("upload", "metadata", "now"),
        ("upload", "tags", "batch"),
        ("admin", "update", "budget"),
    ]
    explicit = calls[0]
    # Two rules' eager (one written as a map, serialised by the SDK at load) and the add-on: one request.
    assert explicit.params == {
        "eager": "c_scale,w_200|c_crop,g_north,h_200,w_360",
        "background_removal": "cloudinary_ai",
    }
    assert [(a.rule, a.action) for a in explicit.actions] == [
        ("thumbs", "explicit"),
        ("thumbs", "addon"),
        ("crops", "explicit"),
    ]
    # environment, asset, version, and a digest of what the call does
    assert re.fullmatch(r":a1:v7:[0-9a-f]{32}", explicit.key)
    assert calls[3].params == {"command": "add", "tags": ["processed", "sku-S-1"]}
    assert calls[4].params == {"moderation_status": "approved"}
    assert all(
        (c.resource_type, c.type, c.public_ids) == ("image", "upload", ("products/shoe",)) for c in calls
    )


def test_one_rules_request_settings_are_never_attached_to_another_rules_eager(tmp_path: Path) -> None:
    rules = """
rules:
  - name: notified
    match: {resource_type: image}
    actions:
      - explicit: {eager: "c_scale,w_100", eager_async: true, eager_notification_url: "https://hooks.example/a"}
  - name: plain
    match: {resource_type: image}
    actions:
      - explicit: {eager: "c_scale,w_200"}
  - name: cutout
    match: {resource_type: image}
    actions:
      - addon: {background_removal: cloudinary_ai}
"""
    calls = plan_for(ruleset_of(tmp_path, rules), UPLOAD).calls
    assert [call.params for call in calls] == [
        {"eager": "c_scale,w_100", "eager_async": True, "eager_notification_url": "https://hooks.example/a"},
        {"eager": "c_scale,w_200", "background_removal": "cloudinary_ai"},
    ]
    assert [call.rules for call in calls] == [["notified"], ["plain", "cutout"]]


def test_add_ons_with_different_values_stay_in_separate_requests(tmp_path: Path) -> None:
    rules = """
rules:
  - name: one
    match: {resource_type: image}
    actions: [{addon: {background_removal: cloudinary_ai}}]
  - name: two
    match: {resource_type: image}
    actions: [{addon: {background_removal: pixelz}}, {explicit: {notification_url: "https://hooks.example/b"}}]
"""
    calls = plan_for(ruleset_of(tmp_path, rules), UPLOAD).calls
    assert [call.params for call in calls] == [
        {"background_removal": "cloudinary_ai"},
        {"background_removal": "pixelz"},
        {"notification_url": "https://hooks.example/b"},
    ]


MODERATED = """
rules:
  - name: on-moderation
    match: {notification_type: [moderation, info, eager]}
    actions:
      - tags: {add: [reviewed]}
"""


@pytest.mark.parametrize(
    ("name", "resource_type", "delivery_type", "public_id"),
    [
        ("moderation-rejected.json", "video", "upload", "hot-tub"),
        ("moderation-approved.json", "image", "upload", "user_uploads/u_81723/avatar"),
        ("info-background-removal.json", "image", "upload", "catalog/shoes/rs-1045"),
        ("eager.json", "video", "upload", "dog"),
    ],
)
def test_bodies_without_resource_type_name_their_assets_by_url(
    tmp_path: Path, name: str, resource_type: str, delivery_type: str, public_id: str
) -> None:
    (call,) = plan_for(ruleset_of(tmp_path, MODERATED), sample(name)).calls
    assert (call.resource_type, call.type, call.public_ids) == (resource_type, delivery_type, (public_id,))


def test_resources_lists_and_maps_keep_each_assets_own_types() -> None:
    (context_target,) = locate(sample("resource_context_changed.json")).targets
    assert (context_target.public_id, context_target.type) == ("catalog/shoes/rs-1042", "private")
    assert context_target.asset_id == "0dc33ec778ae7748dcbe08b3ca5e7730"
    (deleted,) = locate(sample("delete.json")).targets
    assert (deleted.resource_type, deleted.type, deleted.public_id) == ("image", "upload", "PM/totem/aaaa")
    (renamed,) = locate(sample("rename.json")).targets
    assert renamed.public_id == "catalog/shoes/rs-1043-front"


def test_an_unknown_kind_is_recorded_not_guessed(tmp_path: Path) -> None:
    rules = MODERATED.replace("[moderation, info, eager]", "[publish]")
    planned = plan_for(ruleset_of(tmp_path, rules), {"notification_type": "publish", "public_id": "x"})
    assert planned.rules == ("on-moderation",) and planned.calls == []
    assert planned.problems == (
        "notification_type 'publish': where its assets are is not known; nothing done",
    )
    # A body that names all three is not a guess.
    told = {"notification_type": "publish", "public_id": "x", "resource_type": "video", "type": "private"}
    (call,) = plan_for(ruleset_of(tmp_path, rules), told).calls
    assert (call.resource_type, call.type) == ("video", "private")


def test_a_resources_item_without_its_types_is_passed_over_with_the_reason() -> None:
    located = locate({"notification_type": "delete", "resources": [{"public_id": "a"}, {"nope": 1}]})
    assert located.targets == []
    assert located.problems == [
        "a: the delete notification does not say its resource_type and type "
        "(or names ones that are not a Cloudinary resource type and delivery type)",
        "delete notification: an asset without a public_id was passed over",
    ]


def test_a_replace_goes_first_and_removes_and_adds_join_batches(tmp_path: Path) -> None:
    rules = """
rules:
  - name: mark
    match: {resource_type: image}
    actions: [{tags: {remove: [new], add: [seen]}}]
  - name: reset
    match: {resource_type: image}
    actions: [{tags: {replace: [fresh]}}]
"""
    calls = plan_for(ruleset_of(tmp_path, rules), UPLOAD).calls
    assert [(c.params["command"], c.delivery, c.rules) for c in calls] == [
        ("replace", "now", ["reset"]),
        ("remove", "batch", ["mark"]),
        ("add", "batch", ["mark"]),
    ]


def test_an_action_the_notification_cannot_fill_is_refused_and_makes_no_call(tmp_path: Path) -> None:
    rules = """
rules:
  - name: sku
    match: {resource_type: image}
    actions:
      - context: {set: {sku: "${context.custom.color}"}}
      - tags: {add: [seen]}
"""
    (asset,) = plan_for(ruleset_of(tmp_path, rules), UPLOAD).assets
    assert [call.endpoint for call in asset.calls] == ["tags"]
    (refusal,) = asset.refused
    assert refusal.action.rule == "sku" and refusal.action.index == 0
    assert (
        refusal.error == "placeholder ${context.custom.color}: the notification has no context.custom.color"
    )


def test_without_a_version_the_notification_itself_keys_its_actions(tmp_path: Path) -> None:
    notification = {k: v for k, v in UPLOAD.items() if k not in ("version", "asset_id")}
    (call, *_) = plan_for(ruleset_of(tmp_path, EVERY_KIND), notification, "abc").calls
    assert re.fullmatch(r":image/upload/products/shoe:nabc:[0-9a-f]{32}", call.key)


def test_a_thousand_uploads_plan_changes_that_share_one_batch(tmp_path: Path) -> None:
    """The coalescing claim on the planning level: every upload's tag change names the same batch
    (endpoint, command, tags, resource type, type), so they can go in one call of 1000 ids."""
    rules = ruleset_of(
        tmp_path,
        "rules:\n  - {name: tag-all, match: {resource_type: image}, actions: [{tags: {add: [seen]}}]}\n",
    )
    batches: set[tuple[Any, ...]] = set()
    for number in range(1000):
        notification = {**UPLOAD, "public_id": f"burst/{number}", "asset_id": f"id{number}"}
        (call,) = plan_for(rules, notification, f"n{number}").calls
        assert call.delivery == "batch"
        batches.add(_batch_of(call))
    assert batches == {("tags", "image", "upload", "add", ("seen",))}


def _batch_of(call: Call) -> tuple[Any, ...]:
    return (call.endpoint, call.resource_type, call.type, call.params["command"], tuple(call.params["tags"]))


def test_the_plan_is_a_json_value(tmp_path: Path) -> None:
    planned = plan_for(ruleset_of(tmp_path, EVERY_KIND), UPLOAD)
    data = json.loads(json.dumps(planned.as_dict()))
    assert data["rules"] == ["thumbs", "crops", "approve"]
    (asset,) = data["assets"]
    assert asset["asset"] == {
        "public_id": "products/shoe",
        "resource_type": "image",
        "type": "upload",
        "asset_id": "a1",
    }
    assert asset["calls"][0]["endpoint"] == "explicit" and asset["calls"][0]["public_ids"] == [
        "products/shoe"
    ]
    assert asset["calls"][0]["actions"][0] == {"rule": "thumbs", "index": 0, "action": "explicit"}
    assert asset["calls"][0]["key"] == planned.calls[0].key


APPROVE_ALL = """
rules:
  - {name: approve, match: {resource_type: image}, actions: [{moderation: {status: approved}}]}
"""


@pytest.mark.parametrize(
    "public_id",
    [
        "mod/../../victim",
        "mod/%2e%2e/%2E%2E/victim",
        "%3Fnot-a-query",
        "..",
        "a/./b",
        "mod/../../../../../../emulator/faults",
        "a\r\nb",
        "a\x00",
    ],
)
def test_a_public_id_that_would_steer_a_url_is_refused_with_the_reason(
    tmp_path: Path, public_id: str
) -> None:
    planned = plan_for(ruleset_of(tmp_path, APPROVE_ALL), {**UPLOAD, "public_id": public_id})
    assert planned.calls == []
    (problem,) = planned.problems
    assert problem.startswith(f"public_id {public_id!r} refused: ")


@pytest.mark.parametrize(
    "public_id", ["folder/sub/name", "a?b", "a#b", "50% off", "100%", "...", "a..b/c.", "café"]
)
def test_ordinary_public_ids_are_named_as_they_are(tmp_path: Path, public_id: str) -> None:
    (call,) = plan_for(ruleset_of(tmp_path, APPROVE_ALL), {**UPLOAD, "public_id": public_id}).calls
    assert call.public_ids == (public_id,)


@pytest.mark.parametrize(
    ("field", "value"),
    [("resource_type", "../emulator"), ("type", "upload/../../x"), ("resource_type", "image?x=1")],
)
def test_resource_and_delivery_types_must_be_names(field: str, value: str) -> None:
    located = locate({**UPLOAD, field: value})
    assert located.targets == [] and "does not say its resource_type and type" in located.problems[0]

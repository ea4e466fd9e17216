"""A notification's values fill a rule's parameters and never reshape its calls: the probes of an
attacker who controls what an upload carries (context, public id), as planned calls."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postupload.core.calls import AssetPlan
from postupload.core.planning import plan
from postupload.errors import RuleSetError
from postupload.rules.loading import load_ruleset

TEMPLATES = """
rules:
  - name: shaped
    match: {resource_type: image}
    actions:
      - explicit:
          eager: ["c_fill,g_${context.custom.gravity},w_300", "e_sepia:${context.custom.level}/f_webp"]
          eager_notification_url: "http://127.0.0.1:9/cb/${context.custom.ref}?asset=${public_id}"
      - context:
          set: {alt: "${context.custom.caption}", kept: "yes"}
          remove: ["${context.custom.drop}"]
      - tags: {add: ["sku-${context.custom.sku}"]}
      - metadata: {set: {note: "${context.custom.caption}"}}
"""
FIELDS = ("gravity", "level", "ref", "caption", "drop", "sku")


def plan_of(tmp_path: Path, custom: dict[str, str], public_id: str = "products/shoe") -> AssetPlan | None:
    """The asset's plan; None when the public id itself is refused (notification.locate)."""
    (tmp_path / "rules.yaml").write_text(TEMPLATES)
    ruleset = load_ruleset(tmp_path)
    notification = {
        "notification_type": "upload",
        "public_id": public_id,
        "asset_id": "a1",
        "version": 1,
        "resource_type": "image",
        "type": "upload",
        "context": {"custom": custom},
    }
    made = plan(ruleset.match(notification), notification, "n1")
    if not made.assets:
        assert made.problems
        return None
    (asset,) = made.assets
    return asset


def planned_asset(tmp_path: Path, custom: dict[str, str], public_id: str = "products/shoe") -> AssetPlan:
    asset = plan_of(tmp_path, custom, public_id)
    assert asset is not None
    return asset


HARMLESS = {"gravity": "north", "level": "40", "ref": "r-1", "caption": "A shoe", "drop": "old", "sku": "S1"}


def test_harmless_values_fill_every_slot(tmp_path: Path) -> None:
    asset = planned_asset(tmp_path, HARMLESS)
    assert not asset.refused
    calls = {call.endpoint: call.params for call in asset.calls}
    assert calls["explicit"]["eager"] == "c_fill,g_north,w_300|e_sepia:40/f_webp"
    assert calls["explicit"]["eager_notification_url"] == "http://127.0.0.1:9/cb/r-1?asset=products%2Fshoe"
    assert calls["context"] == {"context": {"alt": "A shoe", "kept": "yes", "old": ""}}
    assert calls["tags"]["tags"] == ["sku-S1"]
    assert calls["metadata"] == {"metadata": {"note": "A shoe"}}


def test_a_value_that_would_add_transformations_is_refused_naming_field_and_value(tmp_path: Path) -> None:
    """The probe: gravity `north|e_background_removal|c_scale,w_4000/e_blur:2000` made two rules'
    worth of transformations into five derived assets and ran an add-on."""
    asset = planned_asset(
        tmp_path, {**HARMLESS, "gravity": "north|e_background_removal|c_scale,w_4000/e_blur:2000"}
    )
    assert "explicit" not in [call.endpoint for call in asset.calls]
    (refusal,) = asset.refused
    assert refusal.action.rule == "shaped" and refusal.action.action == "explicit"
    assert refusal.error.startswith(
        "placeholder ${context.custom.gravity} in eager: its value 'north|e_background_removal|c_scale,"
        "w_4000/e_blur:2000' holds '|', which a transformation parameter's value may not hold"
    )
    for value in ("north,w_4000", "north/e_blur", "auto:faces", "north east"):
        (refusal,) = planned_asset(tmp_path, {**HARMLESS, "gravity": value}).refused
        assert "in eager: its value" in refusal.error, value


def test_url_parts_are_encoded_and_cannot_leave_the_written_path(tmp_path: Path) -> None:
    """The probe: ref `../../admin?x=1` and public id `inj/e2e&admin=1#frag` made Cloudinary POST
    to `/cb/../../admin?x=1?asset=inj/e2e&admin=1`; a CR/LF stayed in the URL."""
    asset = planned_asset(
        tmp_path, {**HARMLESS, "ref": "../../admin?x=1\r\nX: 1"}, public_id="inj/e2e&admin=1#frag"
    )
    (explicit,) = [call for call in asset.calls if call.endpoint == "explicit"]
    url = urlsplit(explicit.params["eager_notification_url"])
    assert (url.hostname, url.port) == ("127.0.0.1", 9)
    assert url.path == "/cb/..%2F..%2Fadmin%3Fx%3D1%0D%0AX%3A%201" and not url.fragment
    assert url.query == "asset=inj%2Fe2e%26admin%3D1%23frag"
    (refusal,) = planned_asset(tmp_path, {**HARMLESS, "ref": ".."}).refused
    assert "eager_notification_url: a filled value makes the path '/cb/..'" in refusal.error


def test_a_context_key_filled_with_separators_is_refused(tmp_path: Path) -> None:
    """The probe: `remove: ["${context.custom.drop}"]` with `role=admin|tmp` sent
    `context=role=admin|tmp=` and the asset ended up with role=admin."""
    (refusal,) = planned_asset(tmp_path, {**HARMLESS, "drop": "role=admin|tmp"}).refused
    assert refusal.action.action == "context"
    assert (
        "in remove: its value 'role=admin|tmp' holds '=', which a context key may not hold" in refusal.error
    )
    # A value's own '=' and '|' are escaped by the SDK; a trailing backslash would escape that escape.
    assert not planned_asset(tmp_path, {**HARMLESS, "caption": "a=b|c=d"}).refused
    refused = planned_asset(tmp_path, {**HARMLESS, "caption": "ends in \\"}).refused
    assert {r.action.action for r in refused} == {"context", "metadata"}


def test_a_tag_filled_with_a_comma_is_refused(tmp_path: Path) -> None:
    (refusal,) = planned_asset(tmp_path, {**HARMLESS, "sku": "a,admin"}).refused
    assert "holds ',', which a tag may not hold" in refusal.error


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            'explicit: {eager_notification_url: "http://${context.custom.hook}/eager"}',
            "stands in the URL's scheme or host",
        ),
        (
            'explicit: {notification_url: "https://hooks.example.com:${context.custom.port}/x"}',
            "stands in the URL's scheme or host",
        ),
        ('context: {remove: ["a|b=c"]}', "'a|b=c' is not valid"),
        ('context: {set: {"${context.custom.key}": "x"}}', "keys are written out, only values are filled"),
    ],
)
def test_rules_that_let_a_notification_choose_structure_are_refused_at_load(
    tmp_path: Path, action: str, message: str
) -> None:
    (tmp_path / "rules.yaml").write_text(
        f"rules:\n  - name: r\n    match: {{resource_type: image}}\n    actions:\n      - {action}\n"
    )
    with pytest.raises(RuleSetError) as raised:
        load_ruleset(tmp_path)
    assert message in str(raised.value)


def _eager_shape(eager: str) -> list[list[list[str]]]:
    """Transformations, their components and each component's parameter names."""
    return [
        [[part.split("_", 1)[0] for part in component.split(",")] for component in item.split("/")]
        for item in eager.split("|")
    ]


# Values that fit every slot half of the time (so each call is planned often), any text the rest,
# and the separators each slot must not let through.
VALUES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True),
    st.text(max_size=12),
    st.text(st.sampled_from("./?#&=|,:%\\ \r\n.aZ0_-"), max_size=8),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.fixed_dictionaries(dict.fromkeys(FIELDS, VALUES)),
    public_id=st.text(min_size=1, max_size=12),
)
def test_for_any_values_the_calls_keep_the_templates_structure(
    tmp_path: Path, values: dict[str, str], public_id: str
) -> None:
    asset = plan_of(tmp_path, values, public_id=public_id)
    if asset is None:
        return  # a public id no call may name (a control character, '%00'): refused before planning
    refused = {refusal.action.action for refusal in asset.refused}
    calls: dict[str, Any] = {call.endpoint: call.params for call in asset.calls}
    if "explicit" not in refused:
        params = calls["explicit"]
        assert _eager_shape(params["eager"]) == [[["c", "g", "w"]], [["e"], ["f"]]]
        assert params["eager"].count(":") == 1
        url = urlsplit(params["eager_notification_url"])
        assert (url.scheme, url.netloc, url.fragment) == ("http", "127.0.0.1:9", "")
        assert url.path.split("/")[:2] == ["", "cb"] and len(url.path.split("/")) == 3
        assert url.path.split("/")[2] not in (".", "..")
        assert unquote(url.path.split("/")[2]) == values["ref"]
        assert url.query.count("=") == 1 and "&" not in url.query and not re.search(r"[\s]", url.geturl())
    if "context" not in refused:
        context = calls["context"]["context"]
        assert set(context) == {"alt", "kept", values["drop"]}
        assert all("=" not in key and "|" not in key for key in context)
        assert not any(str(value).endswith("\\") for value in context.values())
    if "tags" not in refused and "tags" in calls:
        assert calls["tags"]["tags"] == [f"sku-{values['sku']}"] and "," not in values["sku"]

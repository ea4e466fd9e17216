"""Rule files read as YAML 1.2, `rules explain` rendering the plan, rule tests expecting calls, and
the rule-file schema assembled from the action kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import handlers
from handlers import ENDPOINTS, REGISTRY
from postupload.rules.loading import load_ruleset
from postupload.rules.schema import rules_schema
from tests.conftest import ROOT
from tests.test_rules_cli import run


def test_numbers_read_as_yaml_1_2_and_json_do(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(
        """rules:
  - name: big
    match:
      bytes: [{numeric: [">", 5e6]}]
      width: [{numeric: [">=", 1.5E+3]}]
      format: [on, no]          # YAML 1.1 would read these as true and false
    actions:
      - tags: {add: [big]}
"""
    )
    ruleset = load_ruleset(tmp_path)
    (rule,) = ruleset.rules
    assert rule.match["bytes"] == [{"numeric": [">", 5_000_000]}]
    assert rule.match["format"] == ["on", "no"]
    upload = {
        "notification_type": "upload",
        "public_id": "p",
        "bytes": 6_000_000,
        "width": 2000,
        "format": "on",
    }
    assert [r.name for r in ruleset.match(upload)] == ["big"]
    assert ruleset.match({**upload, "bytes": 4_000_000}) == []


def test_a_yes_that_yaml_1_1_took_for_true_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - name: a\n    enabled: yes\n    match: {format: [jpg]}\n"
        "    actions: [{tags: {add: [x]}}]\n"
    )
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1 and "rule a: enabled: 'yes' is not of type 'boolean'" in output


def test_a_placeholder_inside_a_transformation_map_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        """rules:
  - name: a
    match: {format: [jpg]}
    actions:
      - explicit: {eager: ["c_scale,w_${width}", {crop: scale, width: "${width}"}]}
"""
    )
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1
    (line,) = output.strip().splitlines()
    assert (
        "a.yaml:5:50: rule a: actions[0].explicit.eager[1]: a placeholder inside a transformation map" in line
    )
    assert "'c_scale,w_${width}'" in line and line.endswith("[E402]")


def test_a_transformation_cloudinary_would_refuse_or_the_sdk_would_drop_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """Checked against the SDK's own parameter tables: a parameter it does not have (with the nearest
    one it has), a value no parameter takes, a space, a map key the SDK would silently drop."""
    (tmp_path / "a.yaml").write_text(
        """rules:
  - name: a
    match: {format: [jpg]}
    actions:
      - explicit: {eager: ["c_scale,w_abc,zz_9", "c_scale w_200", {crpo: crop, width: 100}]}
"""
    )
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1
    assert [line.replace(f"{tmp_path}/", "") for line in output.strip().splitlines()] == [
        "a.yaml:5:28: rule a: actions[0].explicit.eager[0]: Cloudinary would refuse this transformation: "
        "'w_abc': w takes a number, an expression or a variable, not 'abc' [E403]",
        "a.yaml:5:28: rule a: actions[0].explicit.eager[0]: Cloudinary would refuse this transformation: "
        "'zz_9': 'zz' is not a transformation parameter; did you mean 'z'? [E403]",
        "a.yaml:5:50: rule a: actions[0].explicit.eager[1]: Cloudinary would refuse this transformation: "
        "'c_scale w_200': a transformation holds no spaces and is not empty [E403]",
        "a.yaml:5:67: rule a: actions[0].explicit.eager[2]: unknown transformation parameter 'crpo' "
        "(did you mean 'crop'?): the SDK would drop it [E403]",
    ]


@pytest.mark.parametrize(
    "eager",
    [
        '"c_fill,g_${context.custom.gravity},w_300"',
        '"c_scale,w_200|c_crop,g_north,h_200,w_360/webp"',
        '"c_scale,l_text:arial_20:hi,w_100"',
        '"sp_full_hd/mp4"',
        '"w_iw_div_2,h_auto,dpr_2.0"',
        '"if_w_gt_400,c_scale,w_400"',
        '"$w_200,c_scale,w_$w"',
        "{crop: lfill, width: 400, effect: sepia, format: png}",
    ],
)
def test_transformations_cloudinary_takes_are_not_refused(tmp_path: Path, eager: str) -> None:
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - name: a\n    match: {format: [jpg]}\n"
        f"    actions:\n      - explicit: {{eager: [{eager}]}}\n"
    )
    code, output = run("rules", "check", str(tmp_path))
    assert code == 0, output


NOTIFICATION = {
    "notification_type": "upload",
    "public_id": "products/a",
    "resource_type": "image",
    "type": "upload",
    "version": 3,
}
RULES = """rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_200"}
      - context: {set: {sku: "${context.custom.sku}"}}
      - tags: {add: [thumbed]}
"""


def test_explain_counts_the_calls_it_lists_and_the_actions_it_cannot_make(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "n.json").write_text(json.dumps(NOTIFICATION))
    code, output = run("rules", "explain", str(tmp_path / "tests" / "n.json"), "--rules", str(tmp_path))
    assert code == 0, output
    lines = output.splitlines()
    start = lines.index("2 API calls would be made:")
    assert lines[start + 1].startswith("  cloudinary.uploader.explicit('products/a'")
    assert lines[start + 2].startswith("  cloudinary.uploader.add_tag(['thumbed'], ['products/a', ...]")
    assert lines[start + 3] == "1 action cannot be made:"
    assert lines[start + 4] == (
        "  rule thumbs context: placeholder ${context.custom.sku}: the notification has no context.custom.sku"
    )
    assert len(lines) == start + 5


def test_explain_json_is_the_workers_plan(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "n.json").write_text(json.dumps(NOTIFICATION))
    code, output = run(
        "rules", "explain", str(tmp_path / "tests" / "n.json"), "--rules", str(tmp_path), "--format", "json"
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["decisions"] == [
        {
            "rule": "thumbs",
            "file": str(tmp_path / "rules.yaml"),
            "line": 2,
            "decision": "matched",
            "stop": False,
        }
    ]
    (asset,) = report["plan"]["assets"]
    assert [(c["endpoint"], c["delivery"]) for c in asset["calls"]] == [
        ("explicit", "now"),
        ("tags", "batch"),
    ]
    assert asset["calls"][0]["params"] == {"eager": "c_scale,w_200"}
    assert asset["refused"][0]["action"] == "context"


def test_explain_refuses_a_file_that_is_not_a_notification_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    code, output = run("rules", "explain", str(tmp_path / "deep.json"), "--rules", str(tmp_path))
    assert (
        code == 1
        and output.strip() == f"postupload: error: {tmp_path}/deep.json: body nests deeper than 32 levels"
    )


def write_test(tmp_path: Path, calls: str) -> None:
    (tmp_path / "rules.yaml").write_text(RULES.replace('"${context.custom.sku}"', "done"))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(
        f"""tests:
  - name: product gets a thumbnail and a tag
    notification: {json.dumps(NOTIFICATION)}
    expect:
      rules: [thumbs]
      calls:
{calls}"""
    )


def test_rule_tests_expect_calls_by_the_fields_they_name(tmp_path: Path) -> None:
    write_test(
        tmp_path,
        """        - {endpoint: explicit, params: {eager: "c_scale,w_200"}, rules: [thumbs]}
        - {endpoint: context, public_ids: [products/a], params: {context: {sku: done}}}
        - {endpoint: tags, delivery: batch, params: {command: add, tags: [thumbed]}}
""",
    )
    code, output = run("rules", "test", str(tmp_path))
    assert code == 0, output
    assert "1 passed, 0 failed" in output


def test_a_rule_test_expecting_other_calls_fails_side_by_side(tmp_path: Path) -> None:
    write_test(
        tmp_path,
        """        - {endpoint: explicit, params: {eager: "c_scale,w_300"}}
        - {endpoint: context}
""",
    )
    code, output = run("rules", "test", str(tmp_path))
    assert code == 1
    assert "  calls:" in output
    assert '≠ {"endpoint": "explicit", "params": {"eager": "c_scale,w_300"}}' in output
    assert '| {"endpoint": "explicit", "params": {"eager": "c_scale,w_200"}}' in output
    assert '"endpoint": "tags"' in output  # the call the test did not expect
    assert "0 passed, 1 failed" in output


def test_a_misspelt_call_field_is_a_malformed_test(tmp_path: Path) -> None:
    write_test(tmp_path, "        - {endpoit: explicit}\n")
    code, output = run("rules", "test", str(tmp_path))
    assert code == 1
    assert "expect.calls: unknown field 'endpoit'; a call has api, endpoint" in output and "[T003]" in output


def test_every_action_kind_is_one_module_in_the_registry_and_the_schema() -> None:
    modules = {path.stem for path in Path(handlers.__file__).parent.glob("*.py")} - {"__init__", "protocol"}
    assert set(REGISTRY) == modules
    schema = rules_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]["action"]["properties"]) == set(REGISTRY)
    assert schema["$defs"]["actions"] == {name: handler.schema for name, handler in REGISTRY.items()}
    assert set(ENDPOINTS) == {"explicit", "tags", "context", "metadata", "update"}


def test_the_schema_shipped_for_editors_is_the_assembled_one() -> None:
    shipped = json.loads((ROOT / "postupload" / "schemas" / "rules.schema.json").read_text())
    assert shipped == rules_schema(), "run: postupload rules schema > postupload/schemas/rules.schema.json"
    code, output = run("rules", "schema")
    assert code == 0 and json.loads(output) == shipped


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_kinds_planned_requests_go_to_a_known_endpoint(name: str, tmp_path: Path) -> None:
    examples: dict[str, dict[str, Any]] = {
        "explicit": {"eager": "c_scale,w_1"},
        "addon": {"ocr": "adv_ocr"},
        "tags": {"add": ["a"], "remove": ["b"]},
        "context": {"set": {"a": 1}},
        "metadata": {"set": {"a": "b"}},
        "moderation": {"status": "approved"},
    }
    handler = REGISTRY[name]
    jsonschema.validate(
        {"rules": [{"name": "x", "match": {}, "actions": [{name: examples[name]}]}]}, rules_schema()
    )
    for request in handler.requests(handler.plan(examples[name], {})):
        assert ENDPOINTS[request.endpoint].api == request.api


def test_a_load_leaves_the_garbage_collector_as_it_found_it() -> None:
    """The collector is paused while rules load (it only slows a load down), whatever the load gives."""
    import gc

    from postupload.errors import RuleSetError
    from postupload.rules.loading import load_sources

    good = "rules:\n  - {name: a, match: {resource_type: image}, actions: [{tags: {add: [x]}}]}\n"
    load_sources({"good.yaml": good})
    with pytest.raises(RuleSetError):
        load_sources({"bad.yaml": "rules: [{name: a}]\n"})
    assert gc.isenabled()
    gc.disable()  # a process that turned it off itself keeps it off
    try:
        load_sources({"good.yaml": good})
        assert not gc.isenabled()
    finally:
        gc.enable()

"""`rules check` catches mistakes early: did-you-mean, the key at fault, YAML advice, warnings."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
import yamlcore
from click.testing import CliRunner

from postupload.cli import main
from postupload.core.patterns import check_pattern, matches
from postupload.rules import yaml_source
from postupload.rules.field_checks import notification_schema
from postupload.rules.loading import load_ruleset


def check(tmp_path: Path, text: str, *options: str) -> tuple[int, list[str]]:
    (tmp_path / "rules.yaml").write_text(text)
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path), *options])
    return result.exit_code, result.output.strip().splitlines()


def test_mistakes_name_what_was_meant_and_point_at_the_key(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """rules:
  - name: Thumbs
    format: [jpg]
    match:
      public_id: [{prefx: products/}]
    actions:
      - tag: {add: [x]}
      - explicit: {eagr: "c_scale,w_200"}
""",
    )
    assert code == 1
    at = f"{tmp_path}/rules.yaml"
    assert lines == [
        f"{at}:2:11: rule Thumbs: name: 'Thumbs' is not a valid rule name: use lowercase letters, digits,"
        " '.', '_' and '-', starting with a letter or digit (e.g. product-thumbnails) [E100]",
        f"{at}:3:5: rule Thumbs: format: 'format' is a notification field: conditions go under match,"
        " as match: {format: ...} [E100]",
        f"{at}:5:20: rule Thumbs: match.public_id[0].prefx: unknown operator 'prefx' (did you mean"
        " 'prefix'?); use one of: prefix, suffix, equals-ignore-case, wildcard, cidr, anything-but, numeric,"
        " exists [E301]",
        f"{at}:7:9: rule Thumbs: actions[0].tag: unknown action 'tag' (did you mean 'tags'?); expected one"
        " of: explicit, addon, tags, context, metadata, moderation [E100]",
        f"{at}:8:20: rule Thumbs: actions[1].explicit.eagr: unknown parameter 'eagr' (did you mean"
        " 'eager'?); expected one of: eager, eager_async, eager_notification_url, notification_url,"
        " invalidate, overwrite, quality_analysis, accessibility_analysis [E100]",
    ]


def test_yaml_slips_say_what_to_do(tmp_path: Path) -> None:
    code, lines = check(tmp_path, "rules:\n  - name: a\n\tmatch: {}\n")
    assert code == 1 and "a tab: YAML is indented with spaces only; replace the tab with spaces" in lines[0]
    code, lines = check(tmp_path, "rules:\n  - name: a\n    match: {tags: [a, b}\n")
    assert "a list [...] is not closed: add the ']'" in lines[0] and ":3:" in lines[0]


def test_a_list_that_fits_no_alternative_names_its_failing_items(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """rules:
  - name: a
    match: {resource_type: [image]}
    actions:
      - explicit: {eager: [c_scale, 5, w_100, [x]]}
      - metadata: {set: {colors: [red, {b: 1}]}}
""",
    )
    at = f"{tmp_path}/rules.yaml"
    assert code == 1
    assert lines == [
        f"{at}:5:37: rule a: actions[0].explicit.eager[1]: 5 is not valid: A transformation string"
        " (c_scale,w_200) or map ({crop: scale, width: 200}), as the SDK takes them. [E100]",
        f"{at}:5:47: rule a: actions[0].explicit.eager[3]: ['x'] is not valid: A transformation string"
        " (c_scale,w_200) or map ({crop: scale, width: 200}), as the SDK takes them. [E100]",
        f"{at}:6:40: rule a: actions[1].metadata.set.colors[1]: {{'b': 1}} is not of type 'string' [E100]",
    ]


@pytest.mark.parametrize("parser", ["libyaml", "pure Python"])
@pytest.mark.parametrize(
    "text",
    [
        "rules:\n\t- name: a\n",  # libyaml: "found character that cannot start any token"
        "rules:\n  - name: a\n\tmatch: {}\n",  # libyaml: "found a tab character that violates indentation"
        "rules:\n  - name: a\n  \t- match: {}\n",
    ],
)
def test_a_tab_gets_its_hint_whichever_parser_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str, text: str
) -> None:
    if parser == "libyaml":
        assert yaml.__with_libyaml__, "PyYAML here was built without libyaml"
        monkeypatch.setattr(yaml_source, "LOADER", yamlcore.CCoreLoader)
    else:
        monkeypatch.setattr(yaml_source, "LOADER", yamlcore.CoreLoader)
    code, lines = check(tmp_path, text)
    assert code == 1 and "a tab: YAML is indented with spaces only; replace the tab with spaces" in lines[0]
    line = text[: text.index("\t")].count("\n") + 1
    assert f"rules.yaml:{line}:" in lines[0]


def test_conditions_that_cannot_match_are_warnings_and_strict_fails_on_them(tmp_path: Path) -> None:
    rules = """rules:
  - name: big
    match:
      widht: [{numeric: [">", 100]}]
      width: ">= 4000"
      format: [{numeric: [">", 2]}]
      bytes: [{prefix: "1"}]
      context: {custom: {sku: [{exists: true}]}}
    actions:
      - tags: {add: ["sku-${context.custom.sku}", "by-${context.custom.owner}"]}
"""
    code, lines = check(tmp_path, rules)
    assert code == 0
    text = "\n".join(lines)
    assert (
        "match.widht: 'widht' is not a field of upload notifications that postupload knows; did you"
        " mean 'width'?" in text
    )
    assert (
        "match.width: 'width' is a number: the string '>= 4000' never matches it; to compare, write"
        ' [{numeric: [">=", 4000]}] [W103]' in text
    )
    assert (
        "match.format[0]: 'format' is a string in upload notifications: numeric never matches it [W102]"
        in text
    )
    assert "match.bytes[0]: 'bytes' is a number in upload notifications: prefix matches strings only" in text
    assert "rules.yaml:4:7: rule big: match.widht:" in text  # on the key at fault
    assert (
        "${context.custom.owner} may be missing" in text
        and "context: {custom: {owner: [{exists: true}]}}" in text
    )
    assert "${context.custom.sku}" not in text  # the match requires it
    assert lines[-1].endswith("1 rules in 1 files, all valid, 5 warnings")
    code, _ = check(tmp_path, rules, "--strict")
    assert code == 1
    code, output = check(tmp_path, rules, "--format", "json", "--strict")
    report = json.loads("\n".join(output))
    assert code == 1 and not report["ok"] and len(report["warnings"]) == 5
    assert sorted(w["code"] for w in report["warnings"]) == ["W101", "W102", "W103", "W103", "W104"]


def test_rules_that_see_other_types_are_checked_against_those_types(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """rules:
  - name: approved
    match: {notification_type: moderation, moderation_status: [approved], width: [{numeric: [">", 1]}]}
    actions:
      - context: {set: {state: "${moderation_status}"}}
""",
    )
    assert code == 0
    assert any("'width' is not a field of moderation notifications" in line for line in lines), lines
    assert not any("moderation_status} may be missing" in line for line in lines)  # always there


def test_anything_but_a_list_of_prefixes_is_accepted_and_matched(tmp_path: Path) -> None:
    pattern = {"public_id": [{"anything-but": {"prefix": ["init", "error"]}}]}
    assert check_pattern(pattern) == []
    assert matches(pattern, {"public_id": "products/1"})
    assert not matches(pattern, {"public_id": "init/1"}) and not matches(pattern, {"public_id": "error-2"})
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - name: a\n    match: {public_id: [{anything-but: {suffix: [.tmp, .part]}}]}\n"
        "    actions:\n      - tags: {add: [x]}\n"
    )
    ruleset = load_ruleset(tmp_path)  # the compiled matcher agrees
    assert [r.name for r in ruleset.match({"notification_type": "upload", "public_id": "a.jpg"})] == ["a"]
    assert ruleset.match({"notification_type": "upload", "public_id": "a.part"}) == []


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"context": {}}, "an empty object matches nothing"),
        ({"public_id": [{"anything-but": {"prefix": ""}}]}, "an empty anything-but prefix would exclude"),
        ({"public_id": [{"anything-but": {"suffix": ["a", ""]}}]}, "an empty anything-but suffix"),
        ({"public_id": [{"anything-but": {"prefix": []}}]}, "anything-but takes"),
    ],
)
def test_patterns_eventbridge_rejects_are_rejected(pattern: dict[str, object], message: str) -> None:
    problems = check_pattern(pattern)
    assert problems and message in problems[0].message


def test_every_sample_notification_fits_the_shipped_notification_schema() -> None:
    schema = notification_schema()
    samples = sorted((Path(__file__).parent / "data" / "notifications").glob("*.json"))
    assert len(samples) >= 15
    for sample in samples:
        body = json.loads(sample.read_text())
        definition = {**schema["$defs"][body["notification_type"]], "$defs": schema["$defs"]}
        jsonschema.validate(body, definition)

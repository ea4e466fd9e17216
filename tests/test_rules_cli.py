"""Rule files as ops meet them: `rules check`, `rules test`, `rules explain`, `rules match`, reload."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from postupload.cli import main
from postupload.rules.loading import load_ruleset
from postupload.rules.source import RuleSource
from tests.conftest import ROOT, uploaded_in

GOOD = """rules:
  - name: thumbs
    match:
      public_id: [{prefix: products/}]
    actions:
      - explicit: {eager: "c_scale,w_200"}
"""


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.output


def test_shipped_rules_check_clean_and_their_tests_pass() -> None:
    code, output = run("rules", "check", str(ROOT / "rules"))
    assert code == 0, output
    code, output = run("rules", "test", str(ROOT / "rules"))
    assert code == 0, output
    assert " passed, 0 failed" in output


def test_check_reports_every_problem_with_file_line_column_rule_and_code(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        """rules:
  - name: one
    match:
      width: [{numeric: [">", "800"]}]
      format: [{prefixx: jp}]
    actions:
      - explicit: {eager: "c_scale,w_200", bogus: 1}
"""
    )
    (tmp_path / "b.yaml").write_text("rules:\n  - name: x\n    match: {a: [1\n")
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1
    lines = output.strip().splitlines()
    assert (
        f"{tmp_path}/a.yaml:4:25: rule one: match.width[0].numeric: numeric compares numbers only" in lines[0]
    )
    assert lines[0].endswith("[E304]")
    assert (
        f"{tmp_path}/a.yaml:5:17: rule one: match.format[0].prefixx: unknown operator 'prefixx'" in lines[1]
    )
    assert (
        lines[2].startswith(f"{tmp_path}/a.yaml:7:")
        and "unknown parameter 'bogus'; expected one of: eager," in lines[2]
    )
    assert lines[3].startswith(f"{tmp_path}/b.yaml:4:1: syntax:") and lines[3].endswith("[E003]")
    assert len(lines) == 4


def test_check_json_for_machines(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - name: Bad Name\n    match: {}\n    actions: []\n")
    code, output = run("rules", "check", str(tmp_path), "--format", "json")
    assert code == 1
    report = json.loads(output)
    assert report["ok"] is False
    assert {problem["code"] for problem in report["problems"]} == {"E100"}
    assert all(problem["line"] > 0 for problem in report["problems"])


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yml").write_text(GOOD)
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1
    assert f"{tmp_path}/b.yml:2:1: rule thumbs: name: name is already used at {tmp_path}/a.yaml:2" in output
    assert "[E200]" in output


def test_json_rule_files_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "rules": [
                    {"name": "j", "match": {"format": ["png"]}, "actions": [{"explicit": {"eager": "w_1"}}]}
                ]
            }
        )
    )
    assert [rule.name for rule in load_ruleset(tmp_path).rules] == ["j"]


def rule_dir_with_test(tmp_path: Path, expect: str) -> Path:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(
        f"""tests:
  - name: a product
    notification: {{notification_type: upload, public_id: products/a, resource_type: image, type: upload}}
    expect:
{expect}
"""
    )
    return tmp_path


def test_rule_test_failure_shows_expected_and_got(tmp_path: Path) -> None:
    directory = rule_dir_with_test(
        tmp_path, '      rules: [thumbs]\n      actions: [{rule: thumbs, explicit: {eager: "c_scale,w_300"}}]'
    )
    code, output = run("rules", "test", str(directory))
    assert code == 1
    assert f"FAIL {directory}/tests/t.yaml:2: a product" in output
    assert (
        '≠ {"explicit": {"eager": "c_scale,w_300"}, "rule": "thumbs"} | '
        '{"explicit": {"eager": "c_scale,w_200"}, "rule": "thumbs"}' in output
    )
    assert "0 passed, 1 failed" in output


def test_rule_test_pass(tmp_path: Path) -> None:
    directory = rule_dir_with_test(tmp_path, "      rules: [thumbs]")
    assert run("rules", "test", str(directory)) == (0, "1 passed, 0 failed\n")


def test_explain_names_the_first_failing_field_and_the_calls(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        GOOD
        + """  - name: videos
    match: {resource_type: video}
    actions:
      - explicit: {eager: "sp_hd/m3u8"}
"""
    )
    notification = tmp_path / "notifications" / "n.json"  # not in the rule directory itself
    notification.parent.mkdir()
    notification.write_text(
        json.dumps(
            {
                "notification_type": "upload",
                "public_id": "products/a",
                "resource_type": "image",
                "type": "upload",
            }
        )
    )
    code, output = run("rules", "explain", str(notification), "--rules", str(tmp_path))
    assert code == 0
    assert "✓ thumbs: matched" in output
    assert "✗ videos: resource_type: 'image' matches none of ['video']" in output
    assert (
        "cloudinary.uploader.explicit('products/a', resource_type='image', type='upload', "
        "eager='c_scale,w_200')" in output
    )


def test_match_reads_json_lines(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    lines = "\n".join(
        [
            json.dumps({"notification_type": "upload", "public_id": "products/a"}),
            json.dumps({"notification_type": "eager", "public_id": "products/a"}),
            "{not json",
        ]
    )
    code, output = run("rules", "match", str(tmp_path), stdin=lines)
    assert code == 1
    answers = [json.loads(line) for line in output.splitlines()]
    assert answers[:2] == [{"rules": ["thumbs"]}, {"rules": []}]
    assert "line 3" in answers[2]["error"]


def test_a_bad_edit_keeps_the_last_good_set_and_a_good_one_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(GOOD)
    source = RuleSource(tmp_path, check_every=0)
    first = source.current()
    assert first is not None and [rule.name for rule in first.rules] == ["thumbs"]
    path.write_text(GOOD.replace("prefix", "prefx"))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert source.current() is first
    assert source.error is not None and "unknown operator 'prefx'" in str(source.error)
    path.write_text(GOOD.replace("thumbs", "thumbnails"))
    current = source.current()
    assert current is not None and [rule.name for rule in current.rules] == ["thumbnails"]
    assert source.error is None


@pytest.mark.parametrize("command", ["check", "test", "explain", "match"])
def test_every_rules_command_has_help(command: str) -> None:
    code, output = run("rules", command, "--help")
    assert code == 0 and "Usage:" in output


def test_a_bad_cloudinary_url_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDINARY_URL", "https://key:secret@cloud")
    result = CliRunner().invoke(main, ["worker", "--burst"])
    assert result.exit_code == 1
    assert (
        "postupload: error: CLOUDINARY_URL: expected cloudinary://API_KEY:API_SECRET@CLOUD_NAME"
        in result.output
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_names_bad_actions_parameters_values_and_placeholders(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        """rules:
  - name: bad
    match: {resource_type: image}
    actions:
      - tags: {add: [x], frobnicate: 1}
      - addon: {background_removal: magic}
      - moderation: {status: maybe}
      - resize: {width: 2}
      - context: {set: {sku: "${context.custom.sku"}}
      - addon: {auto_tagging: 0.5}
      - tags: {add: ["a,b"]}
      - metadata: {set: {note: "${not a path}"}}
"""
    )
    code, output = run("rules", "check", str(tmp_path))
    assert code == 1
    expected = [
        "actions[0].tags.frobnicate: unknown parameter 'frobnicate'; expected one of: add, remove, replace",
        "actions[1].addon.background_removal: 'magic' is not valid: expected cloudinary_ai, "
        "cloudinary_ai:fine_edges or pixelz",
        "actions[2].moderation.status: 'maybe' is not one of ['approved', 'rejected']",
        "actions[3].resize: unknown action 'resize'; expected one of: "
        "explicit, addon, tags, context, metadata, moderation",
        "actions[4].context.set: placeholder in '${context.custom.sku' is not closed [E401]",
        "actions[5].addon: 'categorization' is a dependency of 'auto_tagging'",
        "actions[6].tags.add[0]: 'a,b' is not valid: a tag has no comma and 1 to 255 characters",
        "actions[7].metadata.set: placeholder '${not a path}': expected ${field.path}",
    ]
    for line in expected:
        assert f": rule bad: {line.split(' [E')[0]}" in output, line
    assert len(output.strip().splitlines()) == len(expected)


def test_placeholders_fill_from_the_notification() -> None:
    from postupload.core.placeholders import fill
    from postupload.errors import ActionError

    notification = {
        "public_id": "a/b",
        "width": 1200,
        "tags": ["x", "y"],
        "context": {"custom": {"sku": "S1"}},
    }
    assert fill("sku-${context.custom.sku}", notification) == "sku-S1"
    assert fill("${width}", notification) == 1200  # a whole-string placeholder keeps its type
    assert fill({"k": ["${tags.1}", "${public_id}/${width}"]}, notification) == {"k": ["y", "a/b/1200"]}
    with pytest.raises(ActionError, match=r"placeholder \$\{context.custom.ean\}: the notification has no"):
        fill("${context.custom.ean}", notification)


def test_explain_decides_for_the_environment_the_stack_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule on cloud_name previewed as never matching, and ran: explain now decides as for the
    configured environment (or the running stack's var/run.env), and says when it knows none."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "rules:\n  - {name: blog, match: {cloud_name: [blog-prod]}, actions: [{tags: {add: [blog]}}]}\n"
    )
    upload = tmp_path / "upload.json"
    upload.write_text(json.dumps({"notification_type": "upload", "public_id": "a", "resource_type": "image"}))
    runner = CliRunner()
    args = ["rules", "explain", str(upload), "--rules", str(rules)]
    monkeypatch.chdir(tmp_path)  # where a running stack's var/run.env would be
    environ = {"CLOUDINARY_URL": None, "POSTUPLOAD_ACCOUNTS": None}
    unknown = runner.invoke(main, args, env=environ).output
    assert "0 of 1 rules match (no product environment: give --cloud" in unknown
    assert "1 of 1 rules match in blog-prod." in runner.invoke(main, [*args, "--cloud", "blog-prod"]).output
    Path("var").mkdir()
    # a running stack's file (its PID alive: this process)
    Path("var/run.env").write_text(f"PID={os.getpid()}\nCLOUDINARY_URL=cloudinary://1:s@blog-prod\n")
    assert "1 of 1 rules match in blog-prod." in runner.invoke(main, args, env=environ).output


def test_history_asks_which_environment_when_several_know_the_asset(
    redis_conn: Any, redis_server: Any
) -> None:
    for cloud in ("shop-prod", "blog-prod"):
        uploaded_in(redis_conn, cloud, "look")
    environ = {
        "REDIS_URL": redis_server.url,
        "CLOUDINARY_URL": None,
        "POSTUPLOAD_ACCOUNTS": "cloudinary://1:a@shop-prod,cloudinary://2:b@blog-prod",
    }
    runner = CliRunner()
    both = runner.invoke(main, ["history", "look"], env=environ)
    assert (
        both.exit_code == 1
        and "'look' is known in shop-prod, blog-prod: say which with --cloud" in both.output
    )
    blog = runner.invoke(main, ["history", "look", "--cloud", "blog-prod"], env=environ)
    assert blog.exit_code == 0 and "n-blog-prod" in blog.output and "n-shop-prod" not in blog.output
    shorthand = runner.invoke(main, ["history", "blog-prod/look"], env=environ)
    assert shorthand.exit_code == 1 and "nothing recorded for 'blog-prod/look'" in shorthand.output


def test_github_format_puts_each_problem_warning_and_failed_test_on_its_line(tmp_path: Path) -> None:
    """`--format github`: GitHub Actions workflow commands, one per finding, at its file, line and
    column, titled with its code; a pull request shows each on its line. Exit codes stay."""
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    (rules / "a.yaml").write_text(
        "rules:\n  - name: one\n    match:\n      public_id: [{prefx: a}]\n    actions:\n"
        "      - tags: {add: [x]}\n"
    )
    result = CliRunner().invoke(main, ["rules", "check", str(rules), "--format", "github"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"::error file={rules}/a.yaml,line=4,col=20,title=E301::rule one: match.public_id[0].prefx:"
        " unknown operator 'prefx' (did you mean 'prefix'?); use one of: prefix, suffix,"
        " equals-ignore-case, wildcard, cidr, anything-but, numeric, exists"
    ]

    (rules / "a.yaml").write_text(
        "rules:\n  - name: one\n    match:\n      widht: [100]\n    actions:\n      - tags: {add: [x]}\n"
    )
    (rules / "tests" / "one.yaml").write_text(
        "tests:\n  - name: tagged\n    notification: {notification_type: upload, public_id: a, widht: 5}\n"
        "    expect:\n      rules: [one]\n"
    )
    result = CliRunner().invoke(main, ["rules", "check", str(rules), "--format", "github"])
    assert result.exit_code == 0  # a warning
    assert result.stdout.startswith(f"::warning file={rules}/a.yaml,line=4,col=7,title=W101::rule one:")
    strict = CliRunner().invoke(main, ["rules", "check", str(rules), "--format", "github", "--strict"])
    assert strict.exit_code == 1 and strict.stdout.startswith("::error ")

    result = CliRunner().invoke(main, ["rules", "test", str(rules), "--format", "github"])
    assert result.exit_code == 1
    assert result.stdout.startswith(
        f"::error file={rules}/tests/one.yaml,line=2,title=T100 rule test fails::tagged%0A"
    )  # the failing test's line; what differs follows, on more lines of the annotation
    assert len(result.stdout.splitlines()) == 1  # one annotation: its lines are escaped into it


def test_github_annotations_escape_what_would_end_them() -> None:
    from postupload.rules.annotations import command

    assert command("error", "50% off\nnow", "r/a,b:c.yaml", 3, 7, "E1") == (
        "::error file=r/a%2Cb%3Ac.yaml,line=3,col=7,title=E1::50%25 off%0Anow"
    )
    assert command("warning", "x: y, z") == "::warning::x: y, z"  # a message keeps : and ,
    assert command("notice", "m", "f.yaml", 0, 5) == "::notice file=f.yaml::m"  # no line: no column


COVERED = """rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_200"}
  - name: banners
    match: {public_id: [{prefix: banners/}]}
    actions:
      - tags: {add: [banner]}
  - name: mistyped
    match: {public_id: [{prefix: prodcts/}]}
    actions:
      - tags: {add: [x]}
  - name: old
    enabled: false
    match: {tags: [old]}
    actions:
      - tags: {add: [y]}
"""
COVERING_TESTS = """tests:
  - name: a product
    notification: {notification_type: upload, public_id: products/a, resource_type: image, type: upload}
    expect: {rules: [thumbs]}
  - name: a mistyped folder
    notification: {notification_type: upload, public_id: prodcts/a, resource_type: image, type: upload}
    expect: {rules: [mistyped]}
"""


def exported(tmp_path: Path, public_ids: list[str]) -> Path:
    """Notifications as `postupload notifications export` writes them."""
    from postupload.core.envelope import Envelope
    from postupload.store.kept_notifications import export_line

    lines = []
    for public_id in public_ids:
        body = {
            "notification_type": "upload",
            "public_id": public_id,
            "resource_type": "image",
            "type": "upload",
        }
        lines.append(export_line(Envelope.of(json.dumps(body).encode(), body, "test-cloud")))
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_coverage_counts_each_rules_matches_and_tests_and_holds_an_exact_threshold(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    (rules / "rules.yaml").write_text(COVERED)
    (rules / "tests" / "t.yaml").write_text(COVERING_TESTS)
    recorded = exported(tmp_path, ["products/1", "products/2", "banners/1", "other/1"])

    code, output = run("rules", "coverage", str(rules), "--notifications", str(recorded))
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "3 rules on, 4 recorded notifications"
    assert lines[1].split()[:4] == ["thumbs", "2", "50.0%", "tested"]
    assert lines[2].split()[:4] == ["banners", "1", "25.0%", "UNTESTED"]
    assert lines[3].split()[:4] == ["mistyped", "0", "0.0%", "tested"]
    assert "matched none of the 4 notifications: mistyped" in output  # dead, or mistyped
    assert "no rule test makes these match: banners" in output
    assert "switched off (enabled: false), not counted: old" in output
    assert output.rstrip().endswith("tests make 2 of 3 rules match: 66.6%")  # cut, not rounded up

    # 2 of 3 is 66.66...%: under 66.67, not under 66.66 (no rounding either way)
    assert (
        run("rules", "coverage", str(rules), "--notifications", str(recorded), "--fail-under", "66.67")[0]
        == 1
    )
    assert (
        run("rules", "coverage", str(rules), "--notifications", str(recorded), "--fail-under", "66.66")[0]
        == 0
    )

    code, output = run("rules", "coverage", str(rules), "--notifications", str(recorded), "--format", "json")
    report = json.loads(output)
    assert report["format_version"] == 1 and report["notifications"] == 4
    assert (report["dead"], report["untested"], report["off"]) == (["mistyped"], ["banners"], ["old"])
    assert report["rules"][0] == {
        "rule": "thumbs",
        "file": f"{rules}/rules.yaml",
        "line": 2,
        "matches": 2,
        "tested": True,
        "share": 0.5,
    }


def test_coverage_never_rounds_a_miss_away() -> None:
    from decimal import Decimal

    from postupload.rules.coverage import Coverage, RuleCoverage

    report = Coverage(0, [RuleCoverage(f"r{n}", "f", 1, 0, n != 0) for n in range(1000)])
    assert report.percent() == "99.9%"  # 999 of 1,000: never shown as 100%
    assert report.below(Decimal(100)) and not report.below(Decimal("99.9"))


def test_what_a_review_is_given_that_is_not_what_it_takes_is_a_clear_error(tmp_path: Path) -> None:
    """Tracebacks before: a --fail-under of nan, an export with bytes that are not UTF-8 or nested a
    thousand deep; Redis's refusal for a --recent past its range."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(COVERED)
    recorded = exported(tmp_path, ["products/1"])
    code, output = run(
        "rules", "coverage", str(rules), "--notifications", str(recorded), "--fail-under", "nan"
    )
    assert code == 2 and "not a number: give a percentage from 0 to 100" in output
    code, output = run("rules", "coverage", str(rules), "--recent", "9" * 20)
    assert code == 2 and "is not in the range 1<=x<=" in output
    broken = tmp_path / "broken.jsonl"
    for content, said in (
        (recorded.read_bytes() + b"\xff\xfe garbage\n", "broken.jsonl:2: not UTF-8 text"),
        (b"[" * 5000 + b"]" * 5000 + b"\n", "broken.jsonl:1: nested too deep to be a notification"),
    ):
        broken.write_bytes(content)
        for command in (["coverage", str(rules)], ["diff", str(rules)]):
            code, output = run("rules", *command, "--notifications", str(broken))
            assert code == 1 and said in output and "Traceback" not in output, output


def test_a_notification_as_deep_as_the_intake_takes_reads_back_from_an_export(tmp_path: Path) -> None:
    """Its envelope nests it one level deeper than the intake's limit: the export must still read."""
    from postupload.core.envelope import Envelope
    from postupload.core.notification import MAX_DEPTH, load_json
    from postupload.store.kept_notifications import export_line, read_exported

    value: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):
        value = {"x": value}
    body = {"notification_type": "upload", "public_id": "deep", "deep": value}
    raw = json.dumps(body).encode()
    load_json(raw)  # the intake takes it
    line = export_line(Envelope.of(raw, load_json(raw), "test-cloud")).encode()
    (found,) = read_exported([line], "export")
    assert found.notification == body


def test_a_rule_file_given_where_its_directory_is_wanted_is_told_so(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(COVERED)
    code, output = run("rules", "check", str(tmp_path / "rules.yaml"))
    assert code == 1 and "is a file, not a rule directory: give the directory" in output, output
    code, output = run("rules", "check", str(tmp_path / "nowhere"))
    assert code == 1 and "rule directory does not exist" in output, output

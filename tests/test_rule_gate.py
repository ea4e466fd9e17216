"""The test gate: a rule set goes live only when its rule tests pass; partial expectations."""

from __future__ import annotations

import os
import re
from pathlib import Path

import redis
from click.testing import CliRunner

from postupload.cli import main
from postupload.config import Settings
from postupload.rules.source import RuleSource
from postupload.web.app import create_app
from tests.conftest import ACCOUNT, wait_until

RULES = """rules:
  - name: thumbs
    match:
      public_id: [{prefix: products/}]
    actions:
      - explicit: {eager: "c_scale,w_200"}
"""
TESTS = """tests:
  - name: products get thumbnails
    notification: {notification_type: upload, public_id: products/1, resource_type: image, type: upload}
    expect:
      rules: [thumbs]
"""


def rules_with_tests(directory: Path) -> Path:
    (directory / "tests").mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(RULES)
    (directory / "tests" / "thumbs.yaml").write_text(TESTS)
    return directory


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks


def test_an_edit_whose_tests_fail_is_kept_out_and_says_which_test_and_why(tmp_path: Path) -> None:
    directory = rules_with_tests(tmp_path)
    source = RuleSource(directory, check_every=0)
    good = source.current()
    assert good is not None and source.error is None
    touch(directory / "rules.yaml", RULES.replace("products/", "items/"))
    assert source.current() is good  # the last good set keeps running
    assert source.error is not None
    (problem,) = source.error.problems
    assert problem.code == "T100" and problem.file.endswith("tests/thumbs.yaml") and problem.line == 2
    assert problem.message == (
        "rule test 'products get thumbnails' fails: rules: expected [\"thumbs\"], got []"
    )
    # Fixing the test (not the rule) is a change too: the edit goes live.
    touch(directory / "tests" / "thumbs.yaml", TESTS.replace("products/1", "items/1"))
    current = source.current()
    assert current is not None and current is not good and source.error is None


def test_without_the_gate_a_valid_edit_goes_live_whatever_its_tests_say(tmp_path: Path) -> None:
    directory = rules_with_tests(tmp_path)
    (directory / "rules.yaml").write_text(RULES.replace("products/", "items/"))
    assert RuleSource(directory, require_tests=False).current() is not None
    gated = RuleSource(directory)
    assert gated.current() is None and "rule test 'products get thumbnails' fails" in str(gated.error)


def test_readyz_shows_a_failing_test_and_a_process_started_after_it_runs_the_last_good_set(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    from dataclasses import replace

    directory = rules_with_tests(tmp_path / "gated")
    client = create_app(replace(settings, rules_dir=directory), redis_conn).test_client()
    good = client.get("/readyz").get_json()
    assert good["status"] == "ready"
    touch(directory / "rules.yaml", RULES.replace("products/", "items/"))
    answer = wait_until(lambda: (found := client.get("/readyz")).get_json().get("rules_error") and found, 5)
    body = answer.get_json()
    assert answer.status_code == 200 and body["rules"] == 1 and body["version"] == good["version"]
    assert body["rules_error"].startswith("invalid: T100 (1 problem); details: `postupload rules check`")
    # A process started now (a restart, a new machine) runs what its siblings run, and says why.
    late = create_app(replace(settings, rules_dir=directory), redis_conn).test_client().get("/readyz")
    assert late.status_code == 200 and late.get_json()["version"] == good["version"]
    assert late.get_json()["rules_error"].startswith("invalid: T100 (1 problem)")
    env = {
        "CLOUDINARY_URL": ACCOUNT.to_url(),
        "REDIS_URL": settings.redis_url or "",
        "POSTUPLOAD_RULES_DIR": str(directory),
    }
    result = CliRunner().invoke(main, ["worker", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    # With no good set ever loaded, a worker refuses to start, saying which test failed.
    redis_conn.flushall()
    result = CliRunner().invoke(main, ["worker", "--burst"], env=env)
    assert result.exit_code == 1 and "rule test 'products get thumbnails' fails" in result.output


def test_readyz_says_what_is_wrong_in_codes_never_quoting_the_rules(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    """The probe: after an invalid edit the unauthenticated /readyz quoted the offending value (a URL
    carrying a token) and the rules directory's absolute path."""
    from dataclasses import replace

    directory = rules_with_tests(tmp_path / "quiet")
    client = create_app(replace(settings, rules_dir=directory), redis_conn).test_client()
    secret = "hook-token-5f2a9c"
    touch(
        directory / "rules.yaml",
        RULES.replace('"c_scale,w_200"', f'"c_scale,w_200", notification_url: "ftp://h.example/?t={secret}"'),
    )
    answer = wait_until(lambda: (found := client.get("/readyz")).get_json().get("rules_error") and found, 5)
    text = answer.get_data(as_text=True)
    assert answer.get_json()["rules_error"].startswith("invalid: E100 (1 problem)")
    assert secret not in text and str(tmp_path) not in text and "rules.yaml" not in text
    redis_conn.flushall()  # a process that starts now has no good set to fall back on: a 503
    cold = create_app(replace(settings, rules_dir=directory), redis_conn).test_client().get("/readyz")
    assert cold.status_code == 503 and secret not in cold.get_data(as_text=True)
    assert "invalid: E100" in cold.get_data(as_text=True)


def test_a_web_process_loads_its_rules_when_it_starts(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    """Two processes started before a bad edit answer alike after it: both hold the good set."""
    from dataclasses import replace

    directory = rules_with_tests(tmp_path / "gated")
    first = create_app(replace(settings, rules_dir=directory), redis_conn).test_client()
    second = create_app(replace(settings, rules_dir=directory), redis_conn).test_client()
    touch(directory / "rules.yaml", RULES.replace("products/", "items/"))
    for client in (first, second):
        answer = wait_until(
            lambda c=client: (found := c.get("/readyz")).get_json().get("rules_error") and found, 5
        )
        assert answer.status_code == 200 and answer.get_json()["rules"] == 1


def test_includes_and_excludes_let_a_broad_new_rule_leave_other_tests_alone(tmp_path: Path) -> None:
    directory = rules_with_tests(tmp_path)
    (directory / "tests" / "partial.yaml").write_text(
        """tests:
  - name: products get thumbnails, whatever else matches
    notification: {notification_type: upload, public_id: products/2, resource_type: image, type: upload}
    expect:
      includes: [thumbs]
      excludes: [archive]
"""
    )
    broad = (
        RULES
        + """  - name: everything
    match: {resource_type: [image]}
    actions:
      - tags: {add: [seen]}
"""
    )
    (directory / "rules.yaml").write_text(broad)
    result = CliRunner().invoke(main, ["rules", "test", str(directory)])
    # The exact test now fails (a new rule matches too); the partial one still passes.
    assert result.exit_code == 1 and "1 passed, 1 failed" in result.output
    assert "FAIL" in result.output and "products get thumbnails, whatever" not in result.output
    # The failing test's rules line up by name: the new rule is a row of its own.
    lines = result.output.splitlines()
    assert "    thumbs   | thumbs" in lines
    assert any(re.fullmatch(r"  ≠ +\| everything", line) for line in lines), lines
    (directory / "rules.yaml").write_text(
        broad + "  - name: archive\n    match: {public_id: [{prefix: products/}]}\n"
        "    actions:\n      - tags: {add: [old]}\n"
    )
    result = CliRunner().invoke(main, ["rules", "test", str(directory)])
    assert "archive matched, and must not" in result.output


def test_a_watched_source_reloads_beside_the_jobs(tmp_path: Path) -> None:
    directory = rules_with_tests(tmp_path)
    source = RuleSource(directory, check_every=0.1).watch()
    try:
        first = source.current()
        assert first is not None and [rule.name for rule in first.rules] == ["thumbs"]
        touch(directory / "rules.yaml", RULES.replace("thumbs", "thumbnails"))
        touch(directory / "tests" / "thumbs.yaml", TESTS.replace("[thumbs]", "[thumbnails]"))
        # Nobody asked (no job ran): the watcher loaded it, and current() only hands it out.
        assert wait_until(lambda: source.ruleset is not first, 5)
        assert [rule.name for rule in source.current().rules] == ["thumbnails"]  # type: ignore[union-attr]
    finally:
        source.stop()


def test_a_warning_that_explains_a_failing_test_is_shown_beside_it(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    """A misspelt field makes a rule never match: its test fails, and /readyz, the log and the
    console's Rules page give the warning's did-you-mean beside the failure."""
    from dataclasses import replace

    token = "console-token-for-gate-tests-0123456789"
    directory = rules_with_tests(tmp_path / "gated")
    client = create_app(replace(settings, rules_dir=directory, console_token=token), redis_conn).test_client()
    assert client.get("/readyz").get_json()["status"] == "ready"
    touch(directory / "rules.yaml", RULES.replace("public_id:", "public_idd:"))
    answer = wait_until(lambda: (found := client.get("/readyz")).get_json().get("rules_error") and found, 5)
    assert answer.get_json()["rules_error"].startswith("invalid: T100 (1 problem)")
    page = client.get("/console/rules", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    failure, hint = page.index("rule test &#39;products get thumbnails&#39; fails"), page.index("rule-hints")
    assert failure < hint and "did you mean &#39;public_id&#39;?" in page[hint:]

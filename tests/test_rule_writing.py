"""Writing rule tests from what the rules do: `rules explain --format test`, `rules test --update`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from postupload.cli import main

RULES = """rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_200"}
      - tags: {add: [thumbed]}
"""
TESTS = """# Thumbnails for products: kept by the team that owns the catalog.
tests:
  - name: products get thumbnails   # the main case
    notification: {notification_type: upload, public_id: products/1, resource_type: image, type: upload}
    expect:
      rules: [thumbs]
      calls:
        - {endpoint: explicit, params: {eager: "c_scale,w_200"}}
        - {endpoint: tags, params: {command: add, tags: [thumbed]}}

  - name: other folders get nothing
    notification: {notification_type: upload, public_id: misc/1, resource_type: image, type: upload}
    expect:
      includes: []
      excludes: [thumbs]
"""


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_explain_writes_a_test_case_that_passes_as_written(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "samples").mkdir()
    notification = tmp_path / "samples" / "upload.json"
    notification.write_text(
        json.dumps(
            {
                "notification_type": "upload",
                "public_id": "products/9",
                "resource_type": "image",
                "type": "upload",
            }
        )
    )
    code, case = cli(
        "rules", "explain", str(notification), "--rules", str(tmp_path), "--format", "test", "--name", "nine"
    )
    assert code == 0, case
    assert case.startswith("  - name: nine\n") and "rules: [thumbs]" in case
    assert (
        "- {endpoint: explicit, public_ids: [products/9], params: {eager: 'c_scale,w_200'}, delivery: now"
        in case
    )
    (tmp_path / "tests" / "new.yaml").write_text("tests:\n" + case)
    code, output = cli("rules", "test", str(tmp_path))
    assert code == 0 and "1 passed, 0 failed" in output, output
    # ...and it pins the behaviour down: a changed transformation fails it.
    (tmp_path / "rules.yaml").write_text(RULES.replace("w_200", "w_300"))
    assert cli("rules", "test", str(tmp_path))[0] == 1


def test_update_rewrites_only_failing_expectations_and_keeps_comments(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules.yaml").write_text(RULES.replace("w_200", "w_300"))
    tests = tmp_path / "tests" / "thumbs.yaml"
    tests.write_text(TESTS)
    code, output = cli("rules", "test", str(tmp_path))
    assert code == 1 and "1 passed, 1 failed" in output
    code, output = cli("rules", "test", str(tmp_path), "--update")
    assert code == 0, output
    assert f"updated {tests}: products get thumbnails" in output and "2 passed, 0 failed" in output
    text = tests.read_text()
    assert text.startswith("# Thumbnails for products: kept by the team that owns the catalog.\n")
    assert "  - name: products get thumbnails   # the main case\n" in text
    # Each call keeps the fields it named, now with what the rules do.
    assert "- {endpoint: explicit, params: {eager: 'c_scale,w_300'}}" in text
    assert "- {endpoint: tags, params: {command: add, tags: [thumbed]}}" in text
    assert "      includes: []\n      excludes: [thumbs]\n" in text  # intent is left alone
    # Nothing else moved: the file is the same but for the one value replaced.
    assert text == TESTS.replace('params: {eager: "c_scale,w_200"}', "params: {eager: 'c_scale,w_300'}")


def test_an_action_that_cannot_be_made_fails_its_test_even_after_update(tmp_path: Path) -> None:
    """--update wrote an action's `error:` as its expectation, and the test then passed: a rule that
    cannot make its call passed its test and the gate."""
    (tmp_path / "tests").mkdir()
    broken = RULES.replace("{add: [thumbed]}", '{add: ["${context.custom.sku}"]}')
    (tmp_path / "rules.yaml").write_text(broken)
    tests = tmp_path / "tests" / "thumbs.yaml"
    tests.write_text(TESTS.replace("      rules: [thumbs]\n", "      rules: [thumbs]\n      actions: []\n"))
    code, output = cli("rules", "test", str(tmp_path), "--update")
    assert code == 1, output
    assert "rule thumbs tags cannot be made: placeholder ${context.custom.sku}" in output
    assert "error" not in tests.read_text()  # never written as what is expected

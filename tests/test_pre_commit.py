"""The pre-commit hooks postupload ships (.pre-commit-hooks.yaml), run by pre-commit itself on a
sample rules repository, as a rules team would: installed from this repository at its commit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_rules_cli import GOOD as RULES

TESTS = """tests:
  - name: a product gets its thumbnail
    notification: {notification_type: upload, public_id: products/shoe, resource_type: image, type: upload}
    expect:
      rules: [thumbs]
"""


def git(directory: Path, *args: str) -> str:
    identity = ["-c", "user.email=ops@example.com", "-c", "user.name=ops"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=directory, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_shipped_hooks_check_and_test_a_rules_repository_on_commit(tmp_path: Path) -> None:
    repository = tmp_path / "rules-repo"
    (repository / "rules" / "tests").mkdir(parents=True)
    (repository / "rules" / "thumbs.yaml").write_text(RULES)
    (repository / "rules" / "tests" / "thumbs.yaml").write_text(TESTS)
    revision = git(ROOT, "rev-parse", "HEAD")  # the hooks as committed here (a clean clone in CI)
    (repository / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {revision}\n    hooks:\n"
        "      - id: postupload-rules-check\n      - id: postupload-rules-test\n"
    )
    git(repository, "init", "-q")
    git(repository, "add", "-A")
    git(repository, "commit", "-qm", "rules")
    pre_commit = [str(Path(sys.executable).parent / "pre-commit"), "run", "--all-files"]
    environment = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            pre_commit, cwd=repository, env=environment, capture_output=True, text=True, timeout=600
        )

    passed = run()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "postupload rules check" in passed.stdout and "postupload rules test" in passed.stdout

    # A typo in a rule: the check fails at its line, and says what was meant.
    (repository / "rules" / "thumbs.yaml").write_text(RULES.replace("prefix", "prefx"))
    failed = run()
    assert failed.returncode == 1
    assert "rules/thumbs.yaml:4:" in failed.stdout and "did you mean 'prefix'?" in failed.stdout

    # A rule that no longer does what its test says: the test hook fails, naming the test.
    (repository / "rules" / "thumbs.yaml").write_text(RULES.replace("products/", "catalog/"))
    failed = run()
    assert failed.returncode == 1
    assert "FAIL rules/tests/thumbs.yaml:2: a product gets its thumbnail" in failed.stdout
    shutil.rmtree(tmp_path / "pre-commit-home", ignore_errors=True)

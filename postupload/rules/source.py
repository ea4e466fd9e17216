"""The rule set a process runs: the last good one of a directory, reloaded when its files change.

A set goes live only when every file is valid and, unless turned off, every rule test under
`tests/` passes (the test gate). Otherwise the last good set keeps running and the reason is kept
in `error`, for /readyz, the log, the metrics and the console.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from postupload.core.ruleset import RuleSet
from postupload.errors import RuleSetError
from postupload.rules.loading import files_version, load_ruleset, rule_files
from postupload.rules.rule_tests import failing_tests, rule_test_files

log = logging.getLogger(__name__)


class LastGoodStore(Protocol):
    """Where the last good set is kept for every process (last_good.LastGood: Redis)."""

    def remember(self, ruleset: RuleSet) -> None: ...

    def recall(self) -> RuleSet | None: ...


def load_gated(directory: Path, require_tests: bool = True) -> RuleSet:
    """The rule set of `directory`, if it is valid and (with `require_tests`) its tests pass."""
    ruleset = load_ruleset(directory)
    if require_tests:
        failing = failing_tests(directory, ruleset)
        if failing:
            raise RuleSetError(failing, hints=ruleset.warnings)
    return ruleset


class RuleSource:
    """The last good rule set of a directory, reloaded when its files change (all or nothing)."""

    def __init__(
        self,
        directory: Path,
        check_every: float = 1.0,
        on_invalid: Callable[[str], None] | None = None,
        require_tests: bool = True,
        last_good: LastGoodStore | None = None,
    ) -> None:
        self.directory = directory
        self.check_every = check_every
        self.on_invalid = on_invalid  # told the version of each invalid content met
        self.require_tests = require_tests
        self.last_good = last_good  # shared by every process: what a process starting now runs
        self.ruleset: RuleSet | None = None
        self.error: RuleSetError | None = None
        self._fingerprint: object = None
        self._checked_at = float("-inf")
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def watch(self) -> RuleSource:
        """Reload from a thread of its own from now on, so no job waits while a large set reloads."""
        if self._watcher is None:
            self.refresh()
            self._watcher = threading.Thread(target=self._watch, name="rule-watcher", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every):
            try:
                self.refresh()
            except Exception:  # keep watching whatever one reload did; the set in use stays
                log.exception("reloading the rule set")

    def current(self) -> RuleSet | None:
        """The last good rule set, after reloading if files changed since the last look (unless a
        watcher reloads it)."""
        if self._watcher is not None:
            return self.ruleset
        now = time.monotonic()
        if now - self._checked_at >= self.check_every:
            self._checked_at = now
            self.refresh()
        return self.ruleset

    def refresh(self) -> None:
        """Reload now if the directory's files (rules or their tests) changed."""
        fingerprint = self._fingerprint_now()
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        try:
            self.ruleset, self.error = load_gated(self.directory, self.require_tests), None
            log.info(
                "rule set %s loaded from %s: %d rules",
                self.ruleset.version,
                self.directory,
                len(self.ruleset.rules),
            )
            if self.last_good is not None:
                self.last_good.remember(self.ruleset)
        except RuleSetError as error:
            self.error = error
            if self.ruleset is None and self.last_good is not None:
                self.ruleset = self.last_good.recall()
            kept = (
                f"keeping the last good set ({self.ruleset.version})"
                if self.ruleset
                else "no rule set loaded"
            )
            log.error("rule set in %s is not taken, %s:", self.directory, kept)
            for problem in error.problems:
                log.error("  %s", problem)
            for hint in error.hints:
                log.error("  perhaps why: %s", hint)
            if self.on_invalid is not None:
                # no directory to tell a version of: the error says so already
                with contextlib.suppress(OSError):
                    self.on_invalid(files_version(self._files()))

    def _files(self) -> list[Path]:
        return rule_files(self.directory) + rule_test_files(self.directory)

    def _fingerprint_now(self) -> object:
        try:
            return [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in self._files()]
        except OSError as error:
            return str(error)

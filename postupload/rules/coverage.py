"""`rules coverage`: which rules the notifications received match, and which the rule tests make
match. Pure: the notifications and the tests' outcomes are given.

A rule no recorded notification matched is dead in that window (or mistyped); a rule no test makes
match is untested. The coverage a threshold is held to is the tests' (as OPA's): the share of rules
some test makes match, compared exactly, so that one untested rule in 1,000 fails a threshold of
100 (99.9%, never rounded up to 100%).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from postupload.core.decision import acting_rules
from postupload.core.envelope import Envelope
from postupload.core.ruleset import RuleSet


@dataclass
class RuleCoverage:
    rule: str
    file: str
    line: int
    matches: int  # recorded notifications it matched
    tested: bool  # some rule test makes it match


@dataclass
class Coverage:
    notifications: int
    rules: list[RuleCoverage] = field(default_factory=list)  # the enabled rules
    off: list[str] = field(default_factory=list)  # rules switched off (enabled: false): not counted

    @property
    def dead(self) -> list[str]:
        return [entry.rule for entry in self.rules if not entry.matches]

    @property
    def untested(self) -> list[str]:
        return [entry.rule for entry in self.rules if not entry.tested]

    @property
    def tested(self) -> int:
        return sum(entry.tested for entry in self.rules)

    def below(self, threshold: Decimal) -> bool:
        """The tests' coverage is under `threshold` percent, exactly (no rounding)."""
        return self.tested * 100 < threshold * len(self.rules)

    def percent(self) -> str:
        """The tests' coverage for people, cut (not rounded) to one decimal: 999 of 1,000 is 99.9%."""
        if not self.rules:
            return "100%"
        tenths = self.tested * 1000 // len(self.rules)
        return f"{tenths // 10}.{tenths % 10}%"

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "notifications": self.notifications,
            "rules": [
                {**entry.__dict__, "share": entry.matches / self.notifications if self.notifications else 0.0}
                for entry in self.rules
            ],
            "dead": self.dead,
            "off": self.off,
            "untested": self.untested,
            "tested": self.tested,
            "coverage_percent": self.percent(),
        }


def coverage(ruleset: RuleSet, envelopes: Iterable[Envelope], tested: Iterable[str]) -> Coverage:
    """Each rule's matches among `envelopes` (the rules that act, as the worker decides them), and
    whether it is among `tested` (the rules the tests' notifications matched)."""
    matches: Counter[str] = Counter()
    count = 0
    for envelope in envelopes:
        count += 1
        matches.update(rule.name for rule in acting_rules(ruleset, envelope))
    exercised = set(tested)
    return Coverage(
        count,
        [
            RuleCoverage(rule.name, rule.file, rule.line, matches[rule.name], rule.name in exercised)
            for rule in ruleset.rules
            if rule.enabled
        ],
        [rule.name for rule in ruleset.rules if not rule.enabled],
    )

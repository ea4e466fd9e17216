"""Rules and rule sets as values: what the decision takes. Loading them from files is `rules.loading`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from postupload.core.matcher import Matcher
from postupload.core.notification import Notification
from postupload.core.patterns import Pattern
from postupload.errors import Problem


@dataclass(frozen=True)
class Rule:
    name: str
    match: Pattern
    actions: list[dict[str, Any]]
    file: str
    description: str = ""
    enabled: bool = True
    stop: bool = False
    line: int = 0

    @property
    def effective_pattern(self) -> Pattern:
        """Our extension: a pattern that does not name notification_type matches only uploads."""
        if "notification_type" in self.match:
            return self.match
        return {"notification_type": ["upload"], **self.match}


@dataclass
class RuleSet:
    rules: list[Rule]
    files: list[str] = field(default_factory=list)
    version: str = ""  # of the files' names and contents: the same files, the same version
    warnings: list[Problem] = field(default_factory=list)  # what may not do what it seems (W codes)
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # path -> text it was loaded from

    def __post_init__(self) -> None:
        self._enabled = [rule for rule in self.rules if rule.enabled]
        self._matcher = Matcher([rule.effective_pattern for rule in self._enabled])

    def match(self, notification: Notification) -> list[Rule]:
        """The enabled rules that match, in order, up to and including the first with `stop`."""
        matched: list[Rule] = []
        for index in self._matcher.match(notification):
            matched.append(self._enabled[index])
            if self._enabled[index].stop:
                break
        return matched

"""What a rule edit would change: recorded notifications run through two rule sets, compared. Pure.

Each notification is matched and planned by both sets (the worker's own `plan`), and the calls are
compared whole. A call only the candidate makes is added, one only the live set makes is removed,
and a removed and an added call on the same endpoint and assets are one call changed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from postupload.core.calls import Call
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.rules.cost import ADMIN_BUDGET, Cost

if TYPE_CHECKING:  # the type only: loading rule files is not this module's business
    from postupload.core.ruleset import RuleSet

EXAMPLES = 3  # assets shown for each kind of change


class Change(StrEnum):
    """How a rule's matches, or a call, differ between the live set and the candidate."""

    SAME = "same"
    CHANGED = "changed"
    ADDED = "added"
    REMOVED = "removed"


@dataclass
class RuleCount:
    rule: str
    before: int = 0  # notifications it matched in the live set (0 if it is not there)
    after: int = 0  # in the candidate
    status: Change = Change.SAME


@dataclass
class CallChange:
    change: Change  # added, removed or changed
    endpoint: str
    rules: tuple[str, ...]  # whose actions the call carries (the candidate's, unless removed)
    notifications: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Diff:
    notifications: int = 0
    changed: int = 0  # notifications whose calls differ
    rules: list[RuleCount] = field(default_factory=list)
    calls: list[CallChange] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)

    @property
    def differs(self) -> bool:
        return bool(self.changed) or any(count.status != Change.SAME for count in self.rules)

    def as_dict(self) -> dict[str, Any]:
        return {
            "notifications": self.notifications,
            "changed_notifications": self.changed,
            "differs": self.differs,
            "rules": [asdict(count) for count in self.rules],
            "calls": [{**asdict(change), "rules": list(change.rules)} for change in self.calls],
        }


def diff(
    live: RuleSet, candidate: RuleSet, envelopes: Iterable[Envelope], admin_budget: int = ADMIN_BUDGET
) -> Diff:
    """Run recorded notifications through both sets, each decided as the worker would; what the
    candidate would do differently, and what that costs (against `admin_budget` an hour)."""
    report = Diff(cost=Cost(admin_budget))
    names = [rule.name for rule in live.rules]
    names += [rule.name for rule in candidate.rules if rule.name not in set(names)]
    counts = {name: RuleCount(name) for name in names}
    changes: dict[tuple[Change, str, tuple[str, ...]], CallChange] = {}
    for envelope in envelopes:
        report.notifications += 1
        before_plan, after_plan = decide(live, envelope), decide(candidate, envelope)
        report.cost.count(envelope, before_plan.calls, after_plan.calls)
        for name in before_plan.rules:
            counts[name].before += 1
        for name in after_plan.rules:
            counts[name].after += 1
        found = _compare(before_plan.calls, after_plan.calls)
        if found:
            report.changed += 1
        for change, call, old in found:
            key = (change, call.endpoint, tuple(call.rules))
            entry = changes.setdefault(key, CallChange(change, call.endpoint, tuple(call.rules)))
            entry.notifications += 1
            if len(entry.examples) < EXAMPLES:
                entry.examples.append(_example(change, call, old))
    live_names, candidate_names = {r.name for r in live.rules}, {r.name for r in candidate.rules}
    for count in counts.values():
        if count.rule not in live_names:
            count.status = Change.ADDED
        elif count.rule not in candidate_names:
            count.status = Change.REMOVED
        elif count.before != count.after:
            count.status = Change.CHANGED
    report.rules = list(counts.values())
    report.calls = sorted(changes.values(), key=lambda c: (-c.notifications, c.change, c.endpoint))
    return report


def _compare(before: list[Call], after: list[Call]) -> list[tuple[Change, Call, Call | None]]:
    """(added|removed|changed, the call, the call it replaces) for every call that differs."""
    old, new = Counter(map(_whole, before)), Counter(map(_whole, after))
    removed = [call for call in before if _take(old, new, call)]
    added = [call for call in after if _take(new, old, call)]
    found: list[tuple[Change, Call, Call | None]] = []
    for call in added:
        same_place = next((gone for gone in removed if _place(gone) == _place(call)), None)
        if same_place is not None:
            removed.remove(same_place)
            found.append((Change.CHANGED, call, same_place))
        else:
            found.append((Change.ADDED, call, None))
    found += [(Change.REMOVED, call, None) for call in removed]
    return found


def _take(mine: Counter[Any], theirs: Counter[Any], call: Call) -> bool:
    """True for each copy of `call` the other side does not have as well."""
    key = _whole(call)
    if theirs[key] > 0:
        theirs[key] -= 1
        return False
    return True


def _whole(call: Call) -> Any:
    return (_place(call), _frozen(call.params), call.delivery, tuple(call.rules))


def _place(call: Call) -> Any:
    return (call.api, call.endpoint, call.resource_type, call.type, call.public_ids)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _example(change: str, call: Call, old: Call | None) -> dict[str, Any]:
    example: dict[str, Any] = {"public_ids": list(call.public_ids)}
    if change == Change.CHANGED and old is not None:
        example["before"] = {"params": old.params, "rules": old.rules}
        example["after"] = {"params": call.params, "rules": call.rules}
    else:
        example["params"] = call.params
    return example


def render(report: Diff) -> list[str]:
    """The report for people: rules whose matches change, then the calls that change."""
    lines = [f"{report.notifications} recorded notifications; {report.changed} would cause different calls."]
    moved = [count for count in report.rules if count.status != Change.SAME]
    width = max([len(count.rule) for count in moved] + [4])
    if moved:
        lines.append("Rules (notifications matched: live -> candidate):")
        marks = {"changed": "~", "added": "+", "removed": "-"}
        for count in moved:
            note = f"  ({count.status})" if count.status != Change.CHANGED else ""
            lines.append(
                f"  {marks[count.status]} {count.rule.ljust(width)}  {count.before} -> {count.after}{note}"
            )
    unchanged = len(report.rules) - len(moved)
    if unchanged:
        rules = "1 rule matches" if unchanged == 1 else f"{unchanged} rules match"
        lines.append(f"  {rules} the same notifications.")
    if report.calls:
        lines.append("Calls:")
        for change in report.calls:
            rules = ", ".join(change.rules) or "no rule"
            many = f"{change.notifications} notification{'s' if change.notifications != 1 else ''}"
            lines.append(f"  {change.change} in {many}: {change.endpoint} (rule {rules})")
            for example in change.examples:
                ids = ", ".join(example["public_ids"])
                if change.change == "changed":
                    before, after = _params(example["before"]["params"]), _params(example["after"]["params"])
                    lines.append(f"      {ids}: {before} -> {after}")
                else:
                    lines.append(f"      {ids}: {_params(example['params'])}")
    if not report.differs:
        lines.append("Nothing would change.")
    return lines


def _params(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, ensure_ascii=False)

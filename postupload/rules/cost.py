"""What a rule change costs in API use, at the rate notifications were received. Pure.

`rules.preview.diff` decides each recorded notification by both rule sets, as the worker decides
it, and counts the calls here by what they spend, per product environment:

- Upload API calls made at once (explicit, context, metadata, a tag replace): not rate limited;
- tag changes joined into batches (one call carries up to 1,000 assets): counted as changes;
- Admin API calls (moderation status): against the environment's hourly budget (Cloudinary: 500
  on free plans, 2,000 on paid, per product environment);
- eager transformations and add-on uses, which Cloudinary bills per use.

The hourly rate is the count over the recorded notifications' time span (at least a minute).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from postupload.core.calls import Call
from postupload.core.envelope import Envelope

# Add-on parameters of an explicit call, and how many billed uses each value is.
ADDONS = {
    "background_removal": lambda value: 1,
    "categorization": lambda value: len(str(value).split(",")),
    "ocr": lambda value: 1,
    "detection": lambda value: 1,
    "raw_convert": lambda value: 1,
    "moderation": lambda value: sum(1 for kind in str(value).split("|") if kind != "manual"),
}
ADMIN_BUDGET = 2000  # Admin API calls an hour, per product environment, on Cloudinary's paid plans
SHORTEST_SPAN = 60.0  # seconds: a shorter span of recorded notifications gives no hourly rate


@dataclass
class Spend:
    upload: int = 0  # Upload API calls made at once
    batched: int = 0  # tag changes joined into batches
    admin: int = 0  # Admin API calls
    eager: int = 0  # eager transformations
    addons: int = 0  # add-on uses

    def add(self, call: Call) -> None:
        if call.api == "admin":
            self.admin += 1
        elif call.delivery == "batch":
            self.batched += len(call.public_ids)
        else:
            self.upload += 1
        eager = call.params.get("eager")
        if isinstance(eager, str) and eager:
            self.eager += len(eager.split("|"))
        for name, uses in ADDONS.items():
            if call.params.get(name):
                self.addons += uses(call.params[name])


@dataclass
class EnvironmentCost:
    cloud: str
    before: Spend = field(default_factory=Spend)
    after: Spend = field(default_factory=Spend)


@dataclass
class Cost:
    """Counted as `rules.preview.diff` decides each notification by both sets (once: the diff and
    its cost come from the same decisions)."""

    budget: int = ADMIN_BUDGET  # Admin API calls an hour, per environment
    notifications: int = 0
    earliest: float = math.inf  # when the first and last recorded notification came
    latest: float = -math.inf
    by_cloud: dict[str, EnvironmentCost] = field(default_factory=dict)

    def count(self, envelope: Envelope, before: Iterable[Call], after: Iterable[Call]) -> None:
        """One notification's calls under the live set and under the candidate."""
        self.notifications += 1
        self.earliest = min(self.earliest, envelope.received_at)
        self.latest = max(self.latest, envelope.received_at)
        entry = self.by_cloud.setdefault(envelope.cloud_name, EnvironmentCost(envelope.cloud_name))
        for call in before:
            entry.before.add(call)
        for call in after:
            entry.after.add(call)

    @property
    def environments(self) -> list[EnvironmentCost]:
        return sorted(self.by_cloud.values(), key=lambda entry: entry.cloud)

    @property
    def span(self) -> float:
        """Seconds between the first and last recorded notification."""
        return self.latest - self.earliest if self.notifications else 0.0

    @property
    def per_hour(self) -> float | None:
        """What one counted call is an hour at the recorded rate; None when the span is too short."""
        return 3600 / self.span if self.span >= SHORTEST_SPAN else None

    def over_budget(self) -> list[str]:
        """The environments whose candidate would spend more Admin API calls an hour than the budget."""
        rate = self.per_hour
        return [e.cloud for e in self.environments if rate is not None and e.after.admin * rate > self.budget]

    def as_dict(self) -> dict[str, Any]:
        return {
            "notifications": self.notifications,
            "span_seconds": self.span,
            "per_hour": self.per_hour,
            "admin_budget_per_hour": self.budget,
            "environments": [
                {"cloud": e.cloud, "before": asdict(e.before), "after": asdict(e.after)}
                for e in self.environments
            ],
            "over_budget": self.over_budget(),
        }


LABELS = {
    "upload": "Upload API calls",
    "batched": "tag changes (batched, up to 1,000 assets a call)",
    "admin": "Admin API calls",
    "eager": "eager transformations (billed)",
    "addons": "add-on uses (billed)",
}


def render(report: Cost) -> list[str]:
    """The change in what is spent, per environment: an hour at the recorded rate, or over the
    notifications themselves when their span is under a minute."""
    rate = report.per_hour
    if rate is None:
        lines = [
            f"Cost over these {report.notifications} notifications (under a minute apart: no hourly rate):"
        ]
    else:
        lines = [
            f"Cost at the recorded rate ({report.notifications} notifications in {report.span / 3600:.1f} h):"
        ]
    for entry in report.environments:
        before, after = asdict(entry.before), asdict(entry.after)
        changes = []
        for name, label in LABELS.items():
            if before[name] == after[name]:
                continue
            delta, now = after[name] - before[name], after[name]
            if rate is None:
                changes.append(f"{delta:+,} {label} ({before[name]:,} -> {now:,})")
                continue
            text = f"{round(delta * rate):+,} {label} an hour"
            if name == "admin":
                text += f": {abs(delta) * rate / report.budget:.0%} of the {report.budget:,} budget"
            changes.append(text)
        lines.append(f"  {entry.cloud}: " + ("; ".join(changes) if changes else "no change"))
    for cloud in report.over_budget():
        entry = next(e for e in report.environments if e.cloud == cloud)
        spent = round(entry.after.admin * (rate or 0))
        lines.append(
            f"warning: {cloud}: the candidate would spend {spent:,} Admin API calls an hour, over its"
            f" budget of {report.budget:,}: moderation calls would wait for the next hour"
        )
    return lines

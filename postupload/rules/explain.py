"""`rules explain`: each rule's decision for one notification, and the plan's calls, rendered. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handlers import ENDPOINTS
from postupload.core.calls import Call, Plan
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.patterns import first_mismatch
from postupload.core.ruleset import RuleSet

HOW = {
    "now": "",
    "batch": "batched with other assets, up to 1000 a call",
    "budget": "Admin API, within the shared rate-limit budget",
}


def decisions(ruleset: RuleSet, envelope: Envelope, acting: Sequence[str]) -> list[dict[str, Any]]:
    """Each rule, in order: matched, disabled, left out by a backfill's --rule, stopped by an earlier
    rule, or the first field that failed (on the event the worker sees)."""
    event = envelope.event
    matched = ruleset.match(event)
    matched_names = {rule.name for rule in matched}
    stopper = matched[-1].name if matched and matched[-1].stop else None
    found = []
    for rule in ruleset.rules:
        decision: dict[str, Any] = {"rule": rule.name, "file": rule.file, "line": rule.line}
        if not rule.enabled:
            decision["decision"] = "disabled"
        elif rule.name in matched_names and rule.name not in acting:
            decision.update(decision="left out", reason="not among the backfill's --rule")
        elif rule.name in matched_names:
            decision.update(decision="matched", stop=rule.stop)
        else:
            reason = first_mismatch(rule.effective_pattern, event)
            if reason is None:
                decision.update(decision="stopped", reason=f"{stopper} stopped the run")
            else:
                decision.update(decision="no match", reason=reason)
        found.append(decision)
    return found


def explain(ruleset: RuleSet, envelope: Envelope) -> dict[str, Any]:
    """The report as a value: rule decisions and the plan (what `--format json` prints)."""
    planned = decide(ruleset, envelope)
    return {"decisions": decisions(ruleset, envelope, planned.rules), "plan": planned.as_dict()}


def explain_text(ruleset: RuleSet, envelope: Envelope) -> str:
    """The report for people: one line per rule, then every call, in the order it would be made."""
    planned = decide(ruleset, envelope)
    lines = []
    for item in decisions(ruleset, envelope, planned.rules):
        where = f"({item['file']}:{item['line']})"
        if item["decision"] == "disabled":
            lines.append(f"  - {item['rule']}: disabled {where}")
        elif item["decision"] == "matched":
            stop = " (stop: no later rule runs)" if item["stop"] else ""
            lines.append(f"  ✓ {item['rule']}: matched{stop} {where}")
        elif item["decision"] in ("stopped", "left out"):
            lines.append(f"  - {item['rule']}: would match, but {item['reason']} {where}")
        else:
            lines.append(f"  ✗ {item['rule']}: {item['reason']} {where}")
    within = (
        f" in {envelope.cloud_name}"
        if envelope.cloud_name
        else " (no product environment: give --cloud; a rule on cloud_name matches nothing)"
    )
    lines.append(f"{len(planned.rules)} of {len(ruleset.rules)} rules match{within}.")
    return "\n".join(lines + render_plan(planned))


def render_plan(planned: Plan) -> list[str]:
    """The calls as SDK code, grouped as the worker makes them, and every action that cannot be made."""
    calls = planned.calls
    refused = [refusal for asset in planned.assets for refusal in asset.refused]
    lines = [f"{_count(len(calls), 'API call')} would be made{':' if calls else '.'}"]
    lines += [f"  {describe(call)}" for call in calls]
    if refused:
        lines.append(f"{_count(len(refused), 'action')} cannot be made:")
        lines += [f"  rule {r.action.rule} {r.action.action}: {r.error}" for r in refused]
    if planned.problems:
        lines.append("Not done:")
        lines += [f"  {problem}" for problem in planned.problems]
    return lines


def describe(call: Call) -> str:
    """One call as SDK code, with the rules it serves and how it is sent."""
    how = f"; {HOW[call.delivery]}" if HOW[call.delivery] else ""
    return f"{ENDPOINTS[call.endpoint].describe(call)}  # rule {', '.join(call.rules)}{how}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"

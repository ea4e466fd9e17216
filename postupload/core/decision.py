"""The one decision: which rules act on a notification and what calls they make. The worker, `rules
explain`, `rules diff`, `rules test`, the console's Playground and Preview and `backfill --dry-run`
all call `decide`, so what they show is what the worker does. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postupload.core.calls import Plan
from postupload.core.envelope import Envelope
from postupload.core.planning import plan

if TYPE_CHECKING:  # the type only: loading rule files is not this module's business
    from postupload.core.ruleset import Rule, RuleSet


def acting_rules(ruleset: RuleSet, envelope: Envelope) -> list[Rule]:
    """The rules that act, in order: those matching the event the worker sees (the notification
    with its verified cloud_name), less those a backfill's --rule leaves out."""
    matched = ruleset.match(envelope.event)
    if envelope.only_rules is not None:
        matched = [rule for rule in matched if rule.name in envelope.only_rules]
    return matched


def decide(ruleset: RuleSet, envelope: Envelope) -> Plan:
    """Everything the notification causes: the acting rules, and every asset's exact calls."""
    return plan(acting_rules(ruleset, envelope), envelope.event, envelope.id, envelope.cloud_name)

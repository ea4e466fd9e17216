"""`--format github`: what `rules check`, `rules test` and `rules diff` find, as GitHub Actions
workflow commands (`::error file=F,line=L,col=C,title=T::message`), so that a pull request shows
each problem on its line. Pure.

Escaping is GitHub's (docs.github.com, "Workflow commands for GitHub Actions", and @actions/core's
`escapeData` / `escapeProperty`): `%`, CR and LF in a message; those and `:` and `,` in a property.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from postupload.errors import Problem

if TYPE_CHECKING:  # types only
    from postupload.core.ruleset import RuleSet
    from postupload.rules.preview import Diff
    from postupload.rules.rule_tests import Outcome


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def command(
    kind: str, message: str, file: str | None = None, line: int = 0, col: int = 0, title: str | None = None
) -> str:
    """One workflow command: kind is error, warning or notice. A line or column of 0 is left out
    (unknown), and so is a column without a line."""
    properties = []
    if file:
        properties.append(f"file={_property(file)}")
        if line:
            properties.append(f"line={line}")
            if col:
                properties.append(f"col={col}")
    if title:
        properties.append(f"title={_property(title)}")
    return (
        f"::{kind} {','.join(properties)}::{_data(message)}" if properties else f"::{kind}::{_data(message)}"
    )


def problems(found: Iterable[Problem], kind: str = "error") -> Iterator[str]:
    """Rule-file problems (E codes, T codes) or warnings (W codes), each on its line."""
    for problem in found:
        rule = f"rule {problem.rule}: " if problem.rule else ""
        path = f"{problem.path}: " if problem.path else ""
        yield command(
            kind, f"{rule}{path}{problem.message}", problem.file, problem.line, problem.column, problem.code
        )


def failed_tests(outcomes: Iterable[Outcome]) -> Iterator[str]:
    """A failing rule test, at its line: what differs, expected against got."""
    for outcome in outcomes:
        if not outcome.passed:
            what = "\n".join(outcome.summary or outcome.differences)
            yield command(
                "error", f"{outcome.name}\n{what}", outcome.file, outcome.line, title="T100 rule test fails"
            )


def diff(report: Diff, candidate: RuleSet) -> Iterator[str]:
    """Each rule whose matches or calls change, at its line in the candidate (a rule the candidate
    removes has no line there: its annotation names no file). A warning: a change is for review,
    not an error."""
    where = {rule.name: rule for rule in candidate.rules}
    calls: dict[str, list[str]] = {}
    for change in report.calls:
        for name in change.rules:
            calls.setdefault(name, []).append(
                f"{change.endpoint} call {change.change} for {change.notifications} notification"
                f"{'s' if change.notifications != 1 else ''}"
            )
    for count in report.rules:
        told = calls.get(count.rule, [])
        if count.status == "same" and not told:
            continue
        lines = [
            f"rule {count.rule} ({count.status}): matches {count.before} -> {count.after} of"
            f" {report.notifications} recorded notifications",
            *told,
        ]
        rule = where.get(count.rule)
        yield command(
            "warning",
            "\n".join(lines),
            rule.file if rule else None,
            rule.line if rule else 0,
            title="rules diff",
        )


def cost(lines: list[str]) -> Iterator[str]:
    """The cost of a change (rules.cost.render's lines): a notice for each environment whose spend
    changes, and a warning for a budget the candidate would spend."""
    for line in lines[1:]:
        if line.startswith("warning: "):
            yield command("warning", line.removeprefix("warning: "), title="rules diff cost")
        elif not line.endswith(": no change"):
            yield command("notice", f"{lines[0]}\n{line.strip()}", title="rules diff cost")

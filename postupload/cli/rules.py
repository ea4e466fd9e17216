"""`postupload rules`: check, test, explain, match, diff and the schema of rule files."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from postupload.cli.main import RECENT, main, pass_local_settings, pass_settings, redis_connection
from postupload.config import Settings
from postupload.errors import BadNotification, PostuploadError, RuleSetError


@main.group()
def rules() -> None:
    """Check, test and explain rule files."""


# `rules diff --format json`: its version, raised when a field changes meaning or goes (docs/cli.md)
DIFF_FORMAT_VERSION = 1


def recorded_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--recent and --notifications: which notifications received a command runs on (_recorded)."""
    command = click.option(
        "--notifications",
        "exported",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Notifications from `postupload notifications export` (JSON lines) instead of this Redis's.",
    )(command)
    return click.option("--recent", type=RECENT, help="Only the latest N recorded notifications.")(command)


def output_format(*formats: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--format, as `output`; github: GitHub Actions annotations, each finding on its line."""
    help_text = (
        "github: GitHub Actions annotations, each on its line in a pull request."
        if "github" in formats
        else None
    )
    return click.option(
        "--format", "output", type=click.Choice(formats), default="text", show_default=True, help=help_text
    )


@rules.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@output_format("text", "json", "github")
@click.option("--strict", is_flag=True, help="Warnings (W codes) fail too.")
@pass_settings
def check(settings: Settings, directory: Path | None, output: str, strict: bool) -> None:
    """Validate every rule file of DIRECTORY (default POSTUPLOAD_RULES_DIR); exit 1 on any problem.
    Warnings (conditions no notification can meet, placeholders the match does not guarantee) are
    shown and fail only with --strict."""
    from postupload.rules import annotations
    from postupload.rules.loading import load_ruleset

    directory = directory or settings.rules_dir
    try:
        ruleset = load_ruleset(directory)
    except RuleSetError as error:
        if output == "json":
            click.echo(json.dumps({"ok": False, "problems": [asdict(p) for p in error.problems]}, indent=2))
            raise SystemExit(1) from None
        if output == "github":
            _echo_lines(annotations.problems(error.problems))
            _echo_lines(annotations.problems(error.hints, "notice"))
            click.echo(f"{directory}: {len(error.problems)} problems", err=True)
            raise SystemExit(1) from None
        raise
    warned = [asdict(problem) for problem in ruleset.warnings]
    if output == "github":
        _echo_lines(annotations.problems(ruleset.warnings, "error" if strict else "warning"))
        click.echo(f"{directory}: {len(ruleset.rules)} rules, all valid, {len(warned)} warnings", err=True)
    elif output == "json":
        summary = {"ok": not (strict and warned), "rules": len(ruleset.rules), "files": ruleset.files}
        click.echo(json.dumps({**summary, "warnings": warned}, indent=2))
    else:
        for problem in ruleset.warnings:
            click.echo(f"warning: {problem}")
        notes = f", {len(warned)} warning{'s' if len(warned) != 1 else ''}" if warned else ""
        click.echo(f"{directory}: {len(ruleset.rules)} rules in {len(ruleset.files)} files, all valid{notes}")
    if strict and warned:
        raise SystemExit(1)


@rules.command("test")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option(
    "--update",
    is_flag=True,
    help="Rewrite the failing tests' rules, actions and calls to what the rules do now (review the diff).",
)
@output_format("text", "github")
@pass_settings
def test_rules(settings: Settings, directory: Path | None, update: bool, output: str) -> None:
    """Run the rule tests in DIRECTORY/tests against DIRECTORY's rules; exit 1 on any failure."""
    from postupload.rules import annotations
    from postupload.rules.loading import load_ruleset
    from postupload.rules.rule_tests import rule_test_files, run_file, update_file

    directory = directory or settings.rules_dir
    try:
        ruleset = load_ruleset(directory)
    except RuleSetError as error:
        if output != "github":
            raise
        _echo_lines(annotations.problems(error.problems))
        raise SystemExit(1) from None
    files = rule_test_files(directory)
    if not files:
        raise PostuploadError(f"no rule tests in {directory / 'tests'}; add *.yaml files with `tests:`")
    if update:
        for path in files:
            try:
                names = update_file(path, ruleset)
            except ValueError as error:
                raise PostuploadError(f"{path}: not updated: {error}") from None
            for name in names:
                click.echo(f"updated {path}: {name}")
    passed = failed = 0
    for path in files:
        outcomes, problems = run_file(path, ruleset)
        if output == "github":
            _echo_lines(annotations.problems(problems))
            _echo_lines(annotations.failed_tests(outcomes))
        for problem in problems if output == "text" else []:
            click.echo(str(problem), err=True)
        failed += len(problems)
        for outcome in outcomes:
            if outcome.passed:
                passed += 1
                continue
            failed += 1
            if output == "text":
                click.echo(f"FAIL {outcome.file}:{outcome.line}: {outcome.name}")
                click.echo("\n".join(outcome.differences))
    click.echo(f"{passed} passed, {failed} failed", err=output == "github")
    if failed:
        raise SystemExit(1)


@rules.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="Rule directory (default: env).")
@output_format("text", "json", "test")
@click.option("--name", help="--format test: the test's name (default: the file's name).")
@click.option(
    "--cloud",
    help="The product environment it comes from [default: the one configured, or the running stack's].",
)
@pass_local_settings
def explain(
    settings: Settings, file: Path, directory: Path | None, output: str, name: str | None, cloud: str | None
) -> None:
    """For the notification in FILE, as delivered for the product environment: each rule, matched
    or not and why, and the exact calls it would cause (the worker's own decision); makes no call.
    --format test writes it as a rule test to add under `tests:` in a file of DIR/tests."""
    from postupload.core.envelope import Envelope
    from postupload.rules.explain import explain, explain_text
    from postupload.rules.loading import load_ruleset
    from postupload.rules.rule_tests import case_text, new_case

    body = file.read_bytes()
    notification = _notification(body, str(file))
    ruleset = load_ruleset(directory or settings.rules_dir)
    envelope = Envelope.of(body, notification, cloud if cloud is not None else settings.default_cloud_name())
    if output == "test":
        click.echo(
            case_text(new_case(ruleset, notification, name or file.stem, envelope.cloud_name)), nl=False
        )
    elif output == "json":
        click.echo(json.dumps(explain(ruleset, envelope), indent=2))
    else:
        click.echo(explain_text(ruleset, envelope))


def _notification(text: str | bytes, where: str) -> dict[str, Any]:
    """A notification read from a file or a line: a JSON object, or PostuploadError saying why not."""
    from postupload.core.notification import load_json

    try:
        value = load_json(text)
    except BadNotification as error:
        raise PostuploadError(f"{where}: {error.message}") from None
    if not isinstance(value, dict):
        raise PostuploadError(f"{where}: a notification is a JSON object")
    return value


@rules.command("match")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@pass_settings
def match_rules(settings: Settings, directory: Path | None) -> None:
    """Read notifications as JSON lines on stdin; write {"rules": [...]} (or {"error": ...}) for each."""
    from postupload.rules.loading import load_ruleset

    ruleset = load_ruleset(directory or settings.rules_dir)
    errors = 0
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            notification = _notification(line, f"line {number}")
        except PostuploadError as error:
            errors += 1
            click.echo(json.dumps({"error": str(error)}))
            continue
        click.echo(json.dumps({"rules": [rule.name for rule in ruleset.match(notification)]}))
    if errors:
        raise SystemExit(1)


@rules.command("diff")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option(
    "--against", type=click.Path(path_type=Path), help="The live rules (default: POSTUPLOAD_RULES_DIR)."
)
@recorded_options
@click.option(
    "--admin-budget",
    type=click.IntRange(min=1),
    default=2000,  # rules.cost.ADMIN_BUDGET (the CLI loads its modules only when a command runs)
    show_default=True,
    help="Admin API calls an hour per product environment (Cloudinary: 500 on free plans, 2,000 on paid).",
)
@output_format("text", "json", "github")
@pass_local_settings
def diff_rules(
    settings: Settings,
    candidate: Path,
    against: Path | None,
    recent: int | None,
    exported: Path | None,
    admin_budget: int,
    output: str,
) -> None:
    """What the rules in CANDIDATE would do differently from the live rules, on the notifications
    recorded lately (or exported from production: --notifications): matches per rule, and calls
    added, removed or changed (with examples). Exit 0 when nothing changes, 2 when something does,
    1 when a rule set is invalid."""
    from postupload.rules.cost import render as render_cost
    from postupload.rules.loading import load_ruleset
    from postupload.rules.preview import diff, render

    live = load_ruleset(against or settings.rules_dir)
    proposed = load_ruleset(candidate)
    envelopes = _recorded(settings, exported, recent)
    if not envelopes:
        click.echo(
            "no notifications are recorded yet: the web keeps the latest POSTUPLOAD_PREVIEW_KEEP it receives",
            err=True,
        )
    report = diff(live, proposed, envelopes, admin_budget)
    spent = report.cost
    if output == "github":
        from postupload.rules import annotations

        _echo_lines(annotations.diff(report, proposed))
        _echo_lines(annotations.cost(render_cost(spent)))
        click.echo("\n".join([*render(report), *render_cost(spent)]), err=True)
    elif output == "json":
        answer = {"format_version": DIFF_FORMAT_VERSION, **report.as_dict(), "cost": spent.as_dict()}
        click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join([*render(report), *render_cost(spent)]))
    raise SystemExit(2 if report.differs else 0)


@rules.command("coverage")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@recorded_options
@click.option(
    "--fail-under",
    type=click.FloatRange(0, 100),
    callback=lambda ctx, param, value: _a_number(value, param),
    help="Exit 1 when the tests make fewer than PCT% of the rules match (compared exactly).",
)
@output_format("text", "json")
@pass_local_settings
def coverage_of_rules(
    settings: Settings,
    directory: Path | None,
    recent: int | None,
    exported: Path | None,
    fail_under: float | None,
    output: str,
) -> None:
    """Each rule of DIRECTORY: how many of the notifications received it matched (rules that
    matched none are dead, or mistyped), and whether a rule test makes it match."""
    from decimal import Decimal

    from postupload.rules.coverage import coverage
    from postupload.rules.loading import load_ruleset
    from postupload.rules.rule_tests import rules_tested

    directory = directory or settings.rules_dir
    ruleset = load_ruleset(directory)
    report = coverage(ruleset, _recorded(settings, exported, recent), rules_tested(directory, ruleset))
    if output == "json":
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        total = report.notifications
        click.echo(f"{len(report.rules)} rules on, {total} recorded notifications")
        width = max((len(entry.rule) for entry in report.rules), default=4)
        for entry in report.rules:
            share = f"{entry.matches / total:7.1%}" if total else "      -"
            mark = "tested" if entry.tested else "UNTESTED"
            where = f"{entry.file}:{entry.line}"
            click.echo(f"  {entry.rule:<{width}}  {entry.matches:>7} {share}  {mark:<8}  {where}")
        if report.dead and total:
            click.echo(f"matched none of the {total} notifications: {', '.join(report.dead)}")
        if report.untested:
            click.echo(f"no rule test makes these match: {', '.join(report.untested)}")
        if report.off:
            click.echo(f"switched off (enabled: false), not counted: {', '.join(report.off)}")
        click.echo(f"tests make {report.tested} of {len(report.rules)} rules match: {report.percent()}")
    if fail_under is not None and report.below(Decimal(str(fail_under))):
        click.echo(f"coverage {report.percent()} is under --fail-under {fail_under:g}%", err=True)
        raise SystemExit(1)


def _a_number(value: float | None, param: Any) -> float | None:
    """click's FloatRange takes "nan" (every comparison with it is false): refuse it."""
    if value is not None and math.isnan(value):
        raise click.BadParameter("not a number: give a percentage from 0 to 100", param=param)
    return value


def _recorded(settings: Settings, exported: Path | None, recent: int | None) -> list[Any]:
    """The notifications received: an export's, or those this deployment's Redis keeps."""
    from postupload.store.kept_notifications import latest, read_exported

    if exported is not None:
        with exported.open("rb") as lines:  # decoded a line at a time: a bad one is named
            return read_exported(lines, str(exported))[:recent]
    return latest(redis_connection(settings), recent)


@rules.command()
def schema() -> None:
    """Print the rule-file JSON Schema (for editors), assembled from the action kinds."""
    from postupload.rules.schema import rules_schema

    click.echo(json.dumps(rules_schema(), indent=2, ensure_ascii=False))


def _echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)

"""The console's pages: overview, rules, playground, preview, backfills, an asset's history, jobs."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from postupload.backfill.replay import Replay, utc
from postupload.backfill.runner import Replayer, recent_backfills
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.notification import load_json
from postupload.errors import BadNotification, RuleSetError
from postupload.rules.cost import ADMIN_BUDGET
from postupload.rules.cost import render as render_cost
from postupload.rules.explain import decisions
from postupload.rules.loading import load_ruleset
from postupload.rules.preview import diff
from postupload.rules.source import RuleSource
from postupload.store import history
from postupload.store.failures import failed_job_ids, failed_jobs, replay, waiting_jobs
from postupload.store.kept_notifications import latest
from postupload.store.state import matches_last_day, notifications_per_minute, origins_recent, overview
from postupload.web.console.blueprint import console, message
from postupload.web.state import web

PLAYGROUND_RECENT = 20  # the latest kept notifications the playground offers
PREVIEW_RECENT = 1000  # recorded notifications a console preview runs through, unless asked otherwise
PLAYGROUND_LIMIT = 262_144  # bytes of a pasted notification
SHOWN = 200  # failed and waiting jobs listed on a page (the counts are of all)
REPLAY_SINCE = {
    "1h": "the last hour",
    "6h": "the last 6 hours",
    "24h": "the last day",
    "7d": "the last 7 days",
}


@console.get("/")
def home() -> str:
    connection = web().parts.connection
    rules = web().parts.rules
    cloud_names = list(web().parts.accounts)
    now = time.time()
    per_minute = notifications_per_minute(connection, now)
    counts = [sum(answers.values()) for _, answers in per_minute]
    return render_template(
        "overview.html",
        state=overview(connection, cloud_names, now),
        ruleset=rules.current(),
        rules_error=rules.error,
        failures=failed_jobs(connection, latest=5)[::-1],
        per_minute=[(stamp, count) for (stamp, _), count in zip(per_minute, counts, strict=True)],
        peak=max(counts) or 1,
        last_hour=sum(counts),
        origins=origins_recent(connection, now),
        now=now,
    )


@console.get("/rules")
def rule_list() -> str:
    """Each rule as written in its file, with its matches in the last day and among the notifications
    kept for previews (`rules coverage`), and whether a rule test makes it match."""
    from postupload.rules.coverage import coverage
    from postupload.rules.rule_tests import rules_tested
    from postupload.rules.yaml_source import rule_texts
    from postupload.store.kept_notifications import latest

    connection = web().parts.connection
    rules = web().parts.rules
    ruleset = rules.current()
    covered = None
    if ruleset is not None:
        covered = coverage(ruleset, latest(connection), rules_tested(rules.directory, ruleset))
    return render_template(
        "rules.html",
        ruleset=ruleset,
        rules_error=rules.error,
        matches=matches_last_day(connection),
        written=rule_texts(ruleset) if ruleset is not None else {},
        coverage=covered,
        coverage_of={entry.rule: entry for entry in covered.rules} if covered else {},
    )


@console.route("/playground", methods=["GET", "POST"])
def playground() -> tuple[str, int]:
    connection = web().parts.connection
    rules = web().parts.rules
    settings = web().parts.settings
    cloud_names = list(web().parts.accounts)
    recent = latest(connection, PLAYGROUND_RECENT)
    text = request.form.get("notification", "")
    cloud = request.form.get("cloud", settings.default_cloud_name())
    report, problem, status = None, None, 200
    if request.method == "GET" and request.args.get("notification"):
        picked = next((item for item in recent if item.id == request.args["notification"]), None)
        text = json.dumps(picked.notification, indent=2) if picked else ""
        cloud = picked.cloud_name if picked else cloud
        if picked is None:
            problem = (
                f"notification {request.args['notification']!r} is not among the "
                f"{PLAYGROUND_RECENT} latest kept; paste it instead"
            )
            status = 404
    if text.strip() and problem is None:
        report, problem = _evaluate(text, rules, cloud)
        status = 400 if problem else 200
    return render_template(
        "playground.html",
        recent=recent,
        text=text,
        report=report,
        problem=problem,
        clouds=cloud_names,
        cloud=cloud,
    ), status


@console.get("/preview")
def preview() -> str:
    """What the rules on disk would change, against the running set, on recorded notifications."""
    connection = web().parts.connection
    rules = web().parts.rules
    settings = web().parts.settings
    running = rules.current()
    recent = request.args.get("recent", PREVIEW_RECENT, type=int) or PREVIEW_RECENT
    try:
        on_disk, problems = load_ruleset(rules.directory), []
    except RuleSetError as error:
        on_disk, problems = None, error.problems
    report, spent, replayed, problem = None, None, None, None
    if running is not None and on_disk is not None:
        envelopes = latest(connection, max(1, min(recent, settings.preview_keep or 1)))
        budget = request.args.get("admin_budget", ADMIN_BUDGET, type=int) or ADMIN_BUDGET
        budget = budget if budget > 0 else ADMIN_BUDGET  # a budget of none or fewer: the default
        report = diff(running, on_disk, envelopes, budget)
        spent = render_cost(report.cost)
        if on_disk.version == running.version and request.args.get("replay") == "dry-run":
            try:
                replayed = Replayer(connection, web().parts.queue).dry_run(
                    _asked_replay(request.args), running
                )
            except ValueError as error:
                problem = str(error)
    return render_template(
        "preview.html",
        running=running,
        on_disk=on_disk,
        problems=problems,
        gate=rules.error if on_disk is not None else None,
        report=report,
        cost=spent,
        recent=recent,
        replay_since=REPLAY_SINCE,
        asked=request.args,
        replayed=replayed,
        replay_problem=problem,
        utc=utc,
    )


@console.post("/replay")
def start_replay() -> BaseResponse | tuple[str, int]:
    """Queue the recorded notifications of a window again under the running rules (`postupload
    replay`); the Backfills page follows it."""
    parts = web().parts
    try:
        asked = _asked_replay(request.form)
        replayer = Replayer(parts.connection, parts.queue, parts.settings.retries, parts.counts)
        bound, progress = replayer.bind(asked)
    except ValueError as error:
        return message("Not replayed", str(error), 400)
    replayer.run(bound, progress)
    return redirect(url_for("console.backfills"), code=303)


def _asked_replay(values: Any) -> Replay:
    """The replay a form asks for; ValueError when it is not one."""
    since = values.get("since", "24h")
    if since not in REPLAY_SINCE:
        raise ValueError(f"since {since!r}: choose one of {', '.join(REPLAY_SINCE)}")
    rules = web().parts.rules.current()
    names = tuple(values.getlist("rule"))
    unknown = set(names) - {rule.name for rule in rules.rules} if rules else set(names)
    if unknown:
        raise ValueError(f"no rule named {', '.join(sorted(unknown))} is running")
    return Replay(since, rules=names, types=("upload",) if values.get("uploads") else ())


@console.get("/backfills")
def backfills() -> str:
    connection = web().parts.connection
    return render_template("backfills.html", backfills=recent_backfills(connection))


@console.get("/assets")
def assets() -> str:
    connection = web().parts.connection
    cloud_names = list(web().parts.accounts)
    query = request.args.get("q", "").strip()
    chosen = request.args.get("cloud", "")
    found = (
        history.find(connection, query, [chosen] if chosen in cloud_names else cloud_names) if query else []
    )
    cloud, key = found[0] if found else (chosen, "")
    entries = history.entries(connection, key) if key else []
    return render_template(
        "asset.html",
        query=query,
        entries=entries,
        clouds=cloud_names,
        cloud=cloud,
        also=[name for name, _ in found[1:]],
    )


@console.get("/jobs")
def jobs() -> str:
    connection = web().parts.connection
    cloud_names = list(web().parts.accounts)
    state = overview(connection, cloud_names)
    return render_template(
        "jobs.html",
        failed=failed_jobs(connection, latest=SHOWN)[::-1],
        failed_count=state.failed,
        waiting=waiting_jobs(connection, soonest=SHOWN),
        waiting_count=state.retrying + state.deferred,
        replayed=request.args.get("replayed", type=int),
        several=len(cloud_names) > 1,
    )


@console.post("/jobs/replay")
def replay_jobs() -> BaseResponse | tuple[str, int]:
    connection = web().parts.connection
    settings = web().parts.settings
    chosen = request.form.getlist("job")
    if request.form.get("all"):
        chosen = failed_job_ids(connection)
    try:
        replayed = replay(connection, chosen, settings.retries)
    except KeyError as error:
        return message("Not replayed", f"Not a failed job (any more): {error.args[0]}", 404)
    return redirect(url_for("console.jobs", replayed=len(replayed)), code=303)


def _evaluate(text: str, rules: RuleSource, cloud_name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Each rule's decision and the plan (the very calls a worker would make) for a pasted
    notification delivered for `cloud_name`, or what is wrong with it."""
    body = text.encode()
    if len(body) > PLAYGROUND_LIMIT:
        return None, f"the notification is larger than {PLAYGROUND_LIMIT} bytes"
    try:
        notification = load_json(body)
    except BadNotification as error:
        return None, f"not JSON: {error.message}"
    if not isinstance(notification, dict):
        return None, "a notification is a JSON object"
    ruleset = rules.current()
    if ruleset is None:
        return None, "no valid rule set is loaded"
    envelope = Envelope.of(body, notification, cloud_name)
    planned = decide(ruleset, envelope)
    return {"decisions": decisions(ruleset, envelope, planned.rules), "plan": planned}, None

"""Operations on a deployment: `notify` (send a signed notification), `backfill` and `replay`."""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from postupload.cli.main import main, pass_local_settings
from postupload.config import Settings
from postupload.errors import PostuploadError


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url", help="Where to POST [default: the webhook of the running `postupload run`, else port 8000's]"
)
@click.option("--algorithm", type=click.Choice(["sha1", "sha256"]), default="sha1", show_default=True)
@click.option("--cloud", help="Sign as this product environment and send to its path (POSTUPLOAD_ACCOUNTS).")
@pass_local_settings
def notify(settings: Settings, file: Path, url: str | None, algorithm: str, cloud: str | None) -> None:
    """POST FILE's exact bytes as a notification signed with CLOUDINARY_URL's api_secret (or, with
    --cloud, that product environment's)."""
    import urllib.error
    import urllib.request

    from postupload.core.signature import sign_notification
    from postupload.local import run_env

    web = run_env.read().get("POSTUPLOAD_WEB_URL", "http://127.0.0.1:8000")
    url = url or f"{web}/webhooks/cloudinary" + (f"/{cloud}" if cloud else "")

    body = file.read_bytes()
    secret = settings.require_account(cloud).api_secret
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Cld-Timestamp": timestamp,
        "X-Cld-Signature": sign_notification(body, timestamp, secret, algorithm),
    }
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as answer:
            click.echo(f"{answer.status} {answer.read().decode(errors='replace')}")
    except urllib.error.HTTPError as answer:
        click.echo(f"{answer.code} {answer.read().decode(errors='replace')}", err=True)
        raise SystemExit(1) from None
    except OSError as error:
        raise PostuploadError(f"cannot reach {url}: {error}") from None


@main.command()
@click.option("--prefix", help="Assets whose public_id starts with this.")
@click.option("--tag", help="Assets with this tag.")
@click.option(
    "--expression", help="Assets a Search API expression selects, e.g. 'tags:sale AND width>=2000'."
)
@click.option(
    "--resource-type", type=click.Choice(["image", "video", "raw"]), default="image", show_default=True
)
@click.option("--type", "delivery_type", default="upload", show_default=True, help="Delivery type.")
@click.option("--rule", "rule_names", multiple=True, help="Apply only this rule (repeatable; default: all).")
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="Rule directory (default: env).")
@click.option("--since", help="Only assets created on or after this date (YYYY-MM-DD).")
@click.option("--max", "limit", type=click.IntRange(1), help="Stop after queueing this many assets.")
@click.option("--dry-run", is_flag=True, help="Show what would be called; queue nothing.")
@click.option(
    "--page-size",
    type=click.IntRange(1, 500),
    default=500,
    show_default=True,
    help="Assets a page: smaller pages are checkpointed more often, for more Admin API calls.",
)
@click.option("--restart", is_flag=True, help="Start again from the first page, not from the checkpoint.")
@click.option("--no-wait", is_flag=True, help="Return once everything is queued; workers go on.")
@click.option("--cloud", help="The product environment, when POSTUPLOAD_ACCOUNTS names several.")
@pass_local_settings
def backfill(
    settings: Settings,
    prefix: str | None,
    tag: str | None,
    expression: str | None,
    resource_type: str,
    delivery_type: str,
    rule_names: tuple[str, ...],
    directory: Path | None,
    since: str | None,
    limit: int | None,
    dry_run: bool,
    page_size: int,
    restart: bool,
    no_wait: bool,
    cloud: str | None,
) -> None:
    """Apply the rules to assets that already exist: list them (Admin or Search API, 500 a page unless
    told, within the shared Admin budget), queue each as an upload notification marked `backfill: true`,
    and wait for the workers. Resumable: run the same command again after a stop."""
    from postupload.backfill.events import AssetSource, Backfill
    from postupload.backfill.runner import Runner
    from postupload.parts import Parts
    from postupload.rules.loading import load_ruleset

    if sum(value is not None for value in (prefix, tag, expression)) != 1:
        raise click.UsageError("give one of --prefix, --tag or --expression: which assets to backfill")
    if since is not None:
        try:
            since = datetime.date.fromisoformat(since).isoformat()
        except ValueError:
            raise click.BadParameter("expected a date, YYYY-MM-DD", param_hint="--since") from None
    ruleset = load_ruleset(directory or settings.rules_dir)
    _known_rules(ruleset, rule_names)
    source = AssetSource(prefix, tag, expression, resource_type, delivery_type)
    account = settings.require_account(cloud)
    several = len(settings.all_accounts()) > 1
    job = Backfill(source, tuple(rule_names), since, limit, account.cloud_name if several else "")
    parts = Parts(settings, metrics_every=0.0)  # a command: its counts go to Redis as they come
    runner = Runner(
        parts.connection,
        parts.queue,
        parts.client(account),
        parts.budget(account.cloud_name),
        account.cloud_name,
        settings.retries,
        parts.counts,
        _progress_reporter(),
        page_size=page_size,
    )
    click.echo(f"backfill {job.key}: {job.describe()}")
    if dry_run:
        report = runner.dry_run(job, ruleset)
        click.echo(f"{report['listed']} assets listed, {report['wanted']} wanted; nothing queued (dry run).")
        _tally_lines(report, "assets")
        return
    _carry_out(
        lambda: runner.run(job, restart=restart),
        lambda: runner.wait(job),
        no_wait,
        "assets",
        lambda progress: f"{progress.listed} listed, {progress.queued} queued, {progress.skipped} skipped",
    )


@main.command()
@click.option(
    "--since",
    required=True,
    metavar="TIME",
    help="Notifications recorded from this time: a time ago (24h, 90m, 7d) or ISO 8601 (2026-12-05T14:00Z).",
)
@click.option("--until", metavar="TIME", help="...up to this time, included (same forms) [default: now].")
@click.option("--rule", "rule_names", multiple=True, help="Only this rule acts (repeatable; default: all).")
@click.option(
    "--type", "types", multiple=True, help="Only notifications of this notification_type (repeatable)."
)
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="Rule directory (default: env).")
@click.option("--dry-run", is_flag=True, help="Show what would be called; queue nothing.")
@click.option("--restart", is_flag=True, help="Start again from the window's start, not from the checkpoint.")
@click.option("--no-wait", is_flag=True, help="Return once everything is queued; workers go on.")
@click.option("--cloud", help="Only notifications of this product environment (POSTUPLOAD_ACCOUNTS).")
@pass_local_settings
def replay(
    settings: Settings,
    since: str,
    until: str | None,
    rule_names: tuple[str, ...],
    types: tuple[str, ...],
    directory: Path | None,
    dry_run: bool,
    restart: bool,
    no_wait: bool,
    cloud: str | None,
) -> None:
    """Run the notifications recorded in a window again, through the current rules, as the workers
    would: a call already made for the same asset occurrence is not made again, so a notification
    already fully applied makes none. Reads the notifications kept for previews (no Admin API
    listing); skips those about an asset since overwritten, deleted or renamed. Resumable: run the
    same command again after a stop."""
    from postupload.backfill.replay import Replay, moment, utc
    from postupload.backfill.runner import REPLAYABLE, Replayer, replayable_from
    from postupload.errors import RuleSetError
    from postupload.parts import Parts
    from postupload.rules.source import load_gated

    now = time.time()
    for name, value in (("--since", since), ("--until", until)):
        try:
            if value is not None:
                moment(value, now)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=name) from None
    try:  # the gate the workers apply: what they would run, or nothing
        ruleset = load_gated(directory or settings.rules_dir, settings.rules_require_tests)
    except RuleSetError as error:
        raise PostuploadError(
            f"the workers keep these rule files out ({error}): a replay would run under the last good"
            " set, not these; fix them first (`postupload rules check`, `postupload rules test`)"
        ) from None
    _known_rules(ruleset, rule_names)
    cloud_name = settings.require_account(cloud).cloud_name if cloud else ""
    asked = Replay(since, until, tuple(rule_names), tuple(types), cloud_name)
    parts = Parts(settings, metrics_every=0.0)
    replayer = Replayer(
        parts.connection,
        parts.queue,
        settings.retries,
        parts.counts,
        _progress_reporter(unit="notifications"),
    )
    try:  # an empty window, once cut to what can be replayed: say so, not "0 read"
        window = asked.window(now, replayable_from(now))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if moment(since, now) < window.since:
        click.echo(
            f"note: notifications recorded before {utc(window.since)} are left out: the marks"
            f" that keep each of their calls single last {REPLAYABLE // 3600} hours, and are gone",
            err=True,
        )
    note = _unkept(parts.connection, settings, window.since, now)
    if note:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        report = replayer.dry_run(asked, ruleset)
        click.echo(f"replay from {utc(report['window'].since)} to {utc(report['window'].until)} (dry run)")
        superseded = ", ".join(f"{count} {fate}" for fate, count in sorted(report["superseded"].items()))
        click.echo(
            f"{report['read']} recorded notifications read, {report['wanted']} wanted"
            f"{f' ({superseded} since: left out)' if superseded else ''}; nothing queued (dry run)."
        )
        _tally_lines(report, "notifications")
        return
    bound, progress = replayer.bind(asked, restart)
    click.echo(f"{bound.key}: {bound.describe()}")
    _carry_out(
        lambda: replayer.run(bound, progress),
        lambda: replayer.wait(bound),
        no_wait,
        "notifications",
        lambda progress: (
            f"{progress.listed} read, {progress.queued} queued, {progress.skipped} not wanted,"
            f" {progress.superseded} superseded"
        ),
    )


def _carry_out(
    queue: Callable[[], Any], wait: Callable[[], Any], no_wait: bool, unit: str, counts: Callable[[Any], str]
) -> None:
    """Queue (and unless `no_wait`, wait for the workers), then say what became of it all; exit 130
    when stopped, 1 when anything failed."""
    try:
        progress = queue()
        if not no_wait:
            progress = wait()
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped: run the same command again to go on from here (queued {unit} are still worked)"
        )
        raise SystemExit(130) from None
    click.echo(
        f"\n{counts(progress)}, {progress.done} done, {progress.failed} failed"
        + (" (workers go on)" if no_wait and not progress.finished else "")
    )
    if progress.failed:
        click.echo("see `postupload failed list` for what failed, and `postupload failed replay --all`")
        raise SystemExit(1)


def _unkept(connection: Any, settings: Settings, since: float, now: float) -> str | None:
    """What a replay from `since` cannot take because it is no longer kept, if anything may be."""
    from postupload.backfill.replay import utc
    from postupload.store import keys
    from postupload.store.kept_notifications import oldest

    if settings.preview_keep <= 0:
        return "POSTUPLOAD_PREVIEW_KEEP is 0: no notification is kept, so none can be replayed"
    kept_from = oldest(connection)
    trimmed = since < now - settings.preview_days * keys.DAY or (
        connection.xlen(keys.RECORDED) >= settings.preview_keep
    )
    if kept_from is None or kept_from <= since or not trimmed:
        return None
    return (
        f"the oldest notification kept is from {utc(kept_from)}: none older can be replayed (the latest"
        f" {settings.preview_keep} within {settings.preview_days:g} days and"
        f" {settings.preview_megabytes:g} MiB are kept: POSTUPLOAD_PREVIEW_KEEP, _DAYS, _MB)"
    )


def _known_rules(ruleset: Any, rule_names: tuple[str, ...]) -> None:
    unknown = sorted(set(rule_names) - {rule.name for rule in ruleset.rules})
    if unknown:
        known = ", ".join(rule.name for rule in ruleset.rules)
        raise PostuploadError(f"no rule named {', '.join(unknown)}; the rules are: {known}")


def _tally_lines(report: dict[str, Any], unit: str) -> None:
    """A dry run's count (`runner.Tally`), by rule and by call."""
    for name, count in sorted(report["rules"].items()):
        click.echo(f"  rule {name}: would act on {count} {unit}")
    for name, entry in sorted(report["calls"].items()):
        made = f" ({entry['made']} more made already: skipped)" if entry["made"] else ""
        click.echo(f"  {entry['calls']} {name} calls{made}{', e.g.' if entry['examples'] else ''}")
        for example in entry["examples"]:
            click.echo(f"      {', '.join(example['public_ids'])}: {json.dumps(example['params'])}")


def _progress_reporter(
    stream: Any = None, clock: Callable[[], float] = time.monotonic, unit: str = "assets"
) -> Callable[[Any], None]:
    """tqdm's bar on a terminal; off one (a log, CI), a plain line a page or every 5 s, made by
    tqdm's own format_meter."""
    from tqdm import tqdm

    stream = stream or sys.stdout
    terminal = stream.isatty()
    started = clock()
    said: dict[str, Any] = {"at": 0.0, "line": "", "worked": None, "bar": None}

    def report(progress: Any) -> None:
        worked = progress.done + progress.failed
        if said["worked"] is None:  # a resumed backfill: the rate is of what is worked from now on
            said["worked"] = worked
        if terminal:
            bar = said["bar"] or tqdm(file=stream, initial=worked, unit=f" {unit}", dynamic_ncols=True)
            said["bar"] = bar
            bar.total = progress.queued if progress.state != "listing" else None
            bar.n = worked
            bar.set_description_str(_counts(progress, unit), refresh=False)
            bar.refresh()
            if progress.state == "done":
                bar.close()
            return
        line = progress_line(progress, clock() - started, said["worked"], unit)
        if line != said["line"] and (clock() - said["at"] >= 5 or progress.state != "queued"):
            stream.write(line + "\n")
            stream.flush()
            said["at"] = clock()
        said["line"] = line

    return report


def _counts(progress: Any, unit: str = "assets") -> str:
    listed = "read" if unit == "notifications" else "listed"  # a replay reads what was recorded
    done, failed = progress.done, progress.failed
    return f"{listed} {progress.listed}  queued {progress.queued}  done {done}  failed {failed}"


def progress_line(progress: Any, elapsed: float, worked_before: int, unit: str = "assets") -> str:
    """A backfill's progress as a plain line: where it is, the rate the workers go at since we
    started watching, and when they should be through. While pages are still being listed the total
    is not known, so the time is for what is queued so far: at least that long."""
    from tqdm import tqdm

    worked = progress.done + progress.failed
    rate = (worked - worked_before) / max(elapsed, 1e-6)
    if progress.state == "listing":
        where, eta = f"page {progress.pages}", "ETA at least {remaining} (more pages to list)"
    else:
        where, eta = "[{bar:20}] {percentage:3.0f}%", "ETA {remaining}"
    return tqdm.format_meter(
        worked,
        max(progress.queued, worked),
        elapsed,
        rate=rate or None,
        ascii=".#",
        unit=f" {unit}",
        bar_format=f"{where}  {_counts(progress, unit)}  {{rate_fmt}}  {eta}",
    )

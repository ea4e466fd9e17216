"""What happened: `history` of an asset, `jobs` in hand, `failed` jobs (list, replay), and the
notifications received (`notifications export`)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from postupload import logs
from postupload.cli.main import RECENT, main, pass_local_settings, redis_connection
from postupload.config import Settings


@main.command()
@click.argument("asset")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--cloud", help="The asset's product environment [default: the one configured that knows it].")
@pass_local_settings
def history(settings: Settings, asset: str, output: str, cloud: str | None) -> None:
    """What happened to an asset (by asset_id or public_id): notifications, rules, actions, outcomes."""
    from postupload.store.history import entries as story
    from postupload.store.history import find

    connection = redis_connection(settings)
    clouds = [cloud] if cloud else list(settings.all_accounts())
    found = find(connection, asset, clouds)
    if len(found) > 1:
        where = ", ".join(cloud_name for cloud_name, _ in found)
        raise click.ClickException(f"{asset!r} is known in {where}: say which with --cloud")
    entries = story(connection, found[0][1]) if found else []
    if output == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        within = f" in {cloud}" if cloud else ""
        raise click.ClickException(
            f"nothing recorded for {asset!r}{within} (give an asset_id or a public_id, and --cloud for "
            "another product environment; kept 30 days)"
        )
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["time"]))
        if entry["event"] == "notification":
            rules = ", ".join(entry["rules"]) or "no rule matched"
            kind = f"{entry['notification_type']} notification" + (
                " (backfill)" if entry.get("backfill") else " (replay)" if entry.get("replay") else ""
            )
            if entry.get("origin") == "own":
                kind += " caused by our API key"
            where = f" in {entry['cloud_name']}" if len(settings.all_accounts()) > 1 else ""
            click.echo(f"{when}  {kind}{where} {entry['notification']}: {rules}")
            continue
        what = f"rule {entry['rule']} {entry['action']}: {entry['status']}"
        extra = entry.get("error") or entry.get("detail") or entry.get("until") or ""
        relied_on = entry.get("relied_on")
        if relied_on:
            extra += f", made by job {relied_on.get('job')} at {relied_on.get('at')}"
        call = (
            json.dumps(entry["call"], separators=(",", ":"), ensure_ascii=False) if entry.get("call") else ""
        )
        call = call if len(call) <= 160 else call[:157] + "..."
        click.echo(f"{when}    {what}{f' ({extra})' if extra else ''}{f'  {call}' if call else ''}")


@main.command()
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_local_settings
def jobs(settings: Settings, output: str) -> None:
    """Jobs waiting for a retry or for the Admin API budget's reset: tries made and left, next run,
    and the last error with Cloudinary's HTTP status."""
    from postupload.store.failures import waiting_jobs

    waiting = waiting_jobs(redis_connection(settings))
    if output == "json":
        click.echo(json.dumps([job.as_dict() for job in waiting], indent=2))
        return
    now = time.time()
    for job in waiting:
        when = job.next_run.strftime("%Y-%m-%d %H:%M:%S")
        wait = max(0, round(job.next_run.timestamp() - now))
        what = "retry" if job.waiting_for == "retry" else "budget reset"
        click.echo(f"{job.id}  {logs.printable(job.description)}  {what} at {when} (in {wait} s)")
        if job.waiting_for == "retry":
            times = f"{job.attempts} time{'s' if job.attempts != 1 else ''}"
            click.echo(
                f"    failed {times}, {job.attempts_left} more tries allowed;"
                f" last error ({logs.printable(job.last_reason)}): {logs.printable(job.last_error)}"
            )
        else:
            click.echo(f"    {logs.printable(job.last_error)}")
    click.echo(f"{len(waiting)} job{'s' if len(waiting) != 1 else ''} waiting")


@main.group()
def failed() -> None:
    """The dead letters: jobs that failed for good, with the reason."""


@failed.command("list")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_local_settings
def failed_list(settings: Settings, output: str) -> None:
    """Failed jobs, oldest first: id, when, what, and why."""
    from postupload.store.failures import failed_jobs

    jobs = failed_jobs(redis_connection(settings))
    if output == "json":
        rows = [
            {**asdict(job), "failed_at": job.failed_at.isoformat() if job.failed_at else None} for job in jobs
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for job in jobs:
        when = job.failed_at.strftime("%Y-%m-%d %H:%M:%S") if job.failed_at else "?"
        tries = f"after {job.attempts} tr{'ies' if job.attempts != 1 else 'y'}"
        where = f" in {job.cloud_name}" if job.cloud_name and len(settings.all_accounts()) > 1 else ""
        click.echo(f"{job.id}  {when}  {logs.printable(job.description + where)}  {tries}")
        click.echo(f"    {logs.printable(job.reason)}")
    click.echo(f"{len(jobs)} failed job{'s' if len(jobs) != 1 else ''}")


@failed.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every failed job.")
@pass_local_settings
def failed_replay(settings: Settings, ids: tuple[str, ...], replay_all: bool) -> None:
    """Send failed jobs through again; actions that had succeeded are skipped."""
    from postupload.store.failures import failed_job_ids, replay

    connection = redis_connection(settings)
    if replay_all == bool(ids):
        raise click.UsageError("name the jobs to replay (see `postupload failed list`), or give --all")
    chosen = failed_job_ids(connection) if replay_all else list(ids)
    try:
        replay(connection, chosen, settings.retries)
    except KeyError as error:
        raise click.ClickException(
            f"not a failed job: {error.args[0]} (see `postupload failed list`)"
        ) from None
    click.echo(f"{len(chosen)} job{'s' if len(chosen) != 1 else ''} queued again")


@main.group()
def notifications() -> None:
    """The notifications kept for previews (the latest POSTUPLOAD_PREVIEW_KEEP received)."""


@notifications.command("export")
@click.option("--recent", type=RECENT, help="Only the latest N.")
@pass_local_settings
def export_notifications(settings: Settings, recent: int | None) -> None:
    """Print the kept notifications as JSON lines, newest first: for `rules diff --notifications`
    where this Redis cannot be reached (a rules repository's CI, against production's traffic).
    They are the bodies Cloudinary sent, as received: keep the file as you keep those."""
    from postupload.store.kept_notifications import export_line, latest

    for envelope in latest(redis_connection(settings), recent):
        click.echo(export_line(envelope))

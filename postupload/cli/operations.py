"""Operations on a deployment: `notify` (send a signed notification) and `backfill`."""

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
    unknown = sorted(set(rule_names) - {rule.name for rule in ruleset.rules})
    if unknown:
        known = ", ".join(rule.name for rule in ruleset.rules)
        raise PostuploadError(f"no rule named {', '.join(unknown)}; the rules are: {known}")
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
        for name, count in sorted(report["rules"].items()):
            click.echo(f"  rule {name}: would act on {count} assets")
        for name, entry in sorted(report["calls"].items()):
            made = f" ({entry['made']} more made already: skipped)" if entry["made"] else ""
            click.echo(f"  {entry['calls']} {name} calls{made}{', e.g.' if entry['examples'] else ''}")
            for example in entry["examples"]:
                click.echo(f"      {', '.join(example['public_ids'])}: {json.dumps(example['params'])}")
        return
    try:
        progress = runner.run(job, restart=restart)
        if not no_wait:
            progress = runner.wait(job)
    except KeyboardInterrupt:
        click.echo(
            "\nstopped: run the same command again to go on from here (queued assets are still worked)"
        )
        raise SystemExit(130) from None
    click.echo(
        f"\n{progress.listed} listed, {progress.queued} queued, {progress.skipped} skipped,"
        f" {progress.done} done, {progress.failed} failed"
        + (" (workers go on)" if no_wait and not progress.finished else "")
    )
    if progress.failed:
        click.echo("see `postupload failed list` for what failed, and `postupload failed replay --all`")
        raise SystemExit(1)


def _progress_reporter(
    stream: Any = None, clock: Callable[[], float] = time.monotonic
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
            bar = said["bar"] or tqdm(file=stream, initial=worked, unit=" assets", dynamic_ncols=True)
            said["bar"] = bar
            bar.total = progress.queued if progress.state != "listing" else None
            bar.n = worked
            bar.set_description_str(_counts(progress), refresh=False)
            bar.refresh()
            if progress.state == "done":
                bar.close()
            return
        line = progress_line(progress, clock() - started, said["worked"])
        if line != said["line"] and (clock() - said["at"] >= 5 or progress.state != "queued"):
            stream.write(line + "\n")
            stream.flush()
            said["at"] = clock()
        said["line"] = line

    return report


def _counts(progress: Any) -> str:
    return (
        f"listed {progress.listed}  queued {progress.queued}  done {progress.done}  failed {progress.failed}"
    )


def progress_line(progress: Any, elapsed: float, worked_before: int) -> str:
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
        unit=" assets",
        bar_format=f"{where}  {_counts(progress)}  {{rate_fmt}}  {eta}",
    )

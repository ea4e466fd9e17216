"""The `postupload` command. Each command is a thin shell over the modules it names."""

from __future__ import annotations

import datetime
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import redis
from click.decorators import FC

from postupload import logs
from postupload.config import DEV_ACCOUNT, Settings
from postupload.errors import BadNotification, PostuploadError, RuleSetError
from postupload.store import keys

pass_settings = click.make_pass_decorator(Settings)


def pass_local_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Like pass_settings, for the commands one runs beside `postupload run`: what the environment
    does not say is taken from the running stack's var/run.env."""

    @functools.wraps(command)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        from postupload.local import run_env

        return command(Settings.from_env({**run_env.read(), **os.environ}), *args, **kwargs)

    return with_settings


class Group(click.Group):
    """Turns our own errors into one clear line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RuleSetError as error:
            for problem in error.problems:
                click.echo(str(problem), err=True)
            raise SystemExit(1) from None
        except PostuploadError as error:
            click.echo(f"postupload: error: {error}", err=True)
            raise SystemExit(1) from None
        except redis.RedisError as error:  # a command that reads Redis (history, failed, ...)
            click.echo(f"postupload: error: Redis (REDIS_URL) does not answer: {error}", err=True)
            raise SystemExit(1) from None


@click.group(cls=Group)
@click.pass_context
def main(ctx: click.Context) -> None:
    """postupload: Cloudinary notifications in, rule-driven follow-up work out."""
    logs.configure()
    # The environment is read once, here, and checked before anything imports the cloudinary SDK,
    # which parses CLOUDINARY_URL at import time and raises a bare ValueError on a bad one.
    ctx.obj = Settings.from_env()


# --- processes ------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--worker-class",
    type=click.Choice(["gevent", "gthread"]),
    default="gevent",
    show_default=True,
    help="gevent: slow and idle clients cost a greenlet; gthread (4 threads a worker) only for comparison.",
)
@pass_settings
def web(settings: Settings, host: str, port: int, workers: int, worker_class: str) -> None:
    """The web process: receives, verifies and queues notifications (gunicorn, postupload/web/serving.py)."""
    from gunicorn.app.base import BaseApplication

    from postupload.web import create_app, serving

    class Server(BaseApplication):
        def load_config(self) -> None:
            chosen = {"bind": f"{host}:{port}", "workers": workers, "worker_class": worker_class}
            if worker_class == "gthread":
                chosen["threads"] = 4
            for name, value in {**serving.SETTINGS, **chosen}.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            return create_app(settings)  # in each worker, after gevent has patched the standard library

    Server().run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
@click.option(
    "--queues",
    default=keys.QUEUE,
    show_default=True,
    help="Comma-separated queue names, the first first (from one queue RQ dequeues crash-safely).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    help="Jobs run at once, each in a thread [default: POSTUPLOAD_WORKER_CONCURRENCY, else 48].",
)
@pass_settings
def worker(settings: Settings, burst: bool, queues: str, concurrency: int | None) -> None:
    """The worker process: matches notifications against the rules and runs their actions."""
    from postupload.store.queue import connect
    from postupload.worker.jobs import run_worker

    names = [name.strip() for name in queues.split(",") if name.strip()]
    jobs_at_once = concurrency or settings.worker_concurrency
    run_worker(settings, connect(settings.require_redis_url()), names, burst, jobs_at_once)


def _knob(name: str, default: float, kind: click.ParamType, text: str) -> Callable[[FC], FC]:
    """A numeric emulator option, named as its field in `Faults` (and in POST /emulator/faults)."""
    return click.option(
        f"--{name.replace('_', '-')}", name, type=kind, default=default, show_default=True, help=text
    )


SHARE, SECONDS, COUNT = click.FloatRange(0, 1), click.FloatRange(0), click.IntRange(0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--notify-url", help="Where to POST the notifications Cloudinary would send.")
@click.option(
    "--asset",
    "assets",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Preload the asset that this notification file describes (repeatable).",
)
@click.option(
    "--assets",
    "preload",
    type=click.IntRange(0),
    default=0,
    help="Preload this many assets, products/000000 ... (every third also tagged sale), for backfills.",
)
@_knob("admin_budget", 500, click.IntRange(1), "Admin API calls allowed per window.")
@_knob("admin_window", 3600, click.IntRange(1), "Length of the Admin API window, seconds.")
@_knob("latency", 0.0, SECONDS, "Seconds added to every API call.")
@_knob("latency_jitter", 0.0, SECONDS, "Plus a random 0..this many seconds.")
@_knob(
    "error_rate", 0.0, SHARE, "Share of API calls answered 500, 502 (an HTML page) or 503, without effect."
)
@_knob("timeout_rate", 0.0, SHARE, "Share of API calls that take effect but never answer.")
@_knob("hang", 30.0, SECONDS, "Seconds such an unanswered call holds the connection.")
@_knob("rate_limit_burst", 0, COUNT, "The next N Admin API calls answer 420.")
@_knob("drop_rate", 0.0, SHARE, "Share of notifications never sent.")
@_knob("duplicate_rate", 0.0, SHARE, "Share of notifications sent twice.")
@click.option("--seed", type=int, help="Seed for every random choice, for reproducible runs.")
@click.option(
    "--retry-delays",
    default="180,360,540",
    show_default=True,
    help="Seconds between redeliveries of a notification not answered 200 (Cloudinary: about 3, 6, 9 min).",
)
@click.option(
    "--signature-algorithm",
    type=click.Choice(["sha1", "sha256"]),
    default="sha1",
    show_default=True,
    help="Digest of the notification signatures (an account setting on Cloudinary).",
)
@pass_settings
def emulator(
    settings: Settings,
    host: str,
    port: int,
    notify_url: str | None,
    assets: tuple[Path, ...],
    preload: int,
    admin_budget: int,
    admin_window: int,
    retry_delays: str,
    signature_algorithm: str,
    **faults: Any,
) -> None:
    """The Cloudinary API emulator, for the account of CLOUDINARY_URL (else the development account).

    Faults and latency can also be changed while it runs: POST a JSON object with any of the fault
    options (error_rate, timeout_rate, hang, latency, latency_jitter, rate_limit_burst, drop_rate,
    duplicate_rate, seed) to /emulator/faults. GET /emulator/state, /emulator/calls and
    /emulator/notifications show what happened.
    """
    from postupload.emulator import Emulator, Faults, serve

    try:
        delays = [float(item) for item in retry_delays.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(
            "expected seconds separated by commas, e.g. 180,360,540", param_hint="--retry-delays"
        ) from None
    # Several product environments (POSTUPLOAD_ACCOUNTS) each send to <notify-url>/<cloud_name>.
    accounts = list(settings.all_accounts().values()) or [DEV_ACCOUNT]
    services = [
        Emulator(
            account,
            f"{notify_url.rstrip('/')}/{account.cloud_name}"
            if notify_url and len(accounts) > 1
            else notify_url,
            faults=Faults(**faults),
            admin_budget=admin_budget,
            admin_window=admin_window,
            retry_delays=delays,
            signature_algorithm=signature_algorithm,
        )
        for account in accounts
    ]
    for service in services:
        for path in assets:
            service.add_asset(json.loads(path.read_bytes()))
        service.preload(preload)
    server = serve(services, host, port)
    clouds = ", ".join(account.cloud_name for account in accounts)
    click.echo(f"Cloudinary emulator for cloud {clouds} on http://{host}:{server.server_port}")
    server.serve_forever()


@main.command()
@click.option("--port", default=8000, show_default=True, help="Port of the web process.")
@pass_settings
def run(settings: Settings, port: int) -> None:
    """Everything for local use: embedded Redis, web, worker; the emulator when CLOUDINARY_URL is unset."""
    from postupload.local.supervisor import run_local

    run_local(settings, port)


# --- trials ---------------------------------------------------------------------------------------


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
    from postupload.cloudinary_api import CloudinaryClient
    from postupload.rules.loading import load_ruleset
    from postupload.store.budget import AdminBudget
    from postupload.store.metrics import Recorder
    from postupload.store.queue import notification_queue

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
    connection = _redis(settings)
    recorder = Recorder(connection)
    runner = Runner(
        connection,
        notification_queue(connection),
        CloudinaryClient(account, settings.api_timeout, recorder),
        AdminBudget(connection, account.cloud_name, settings.api_timeout),
        account.cloud_name,
        settings.retries,
        recorder,
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
    """A line that rewrites itself on a terminal; a line a page (or every 5 s) otherwise."""
    stream = stream or sys.stdout
    terminal = stream.isatty()
    started = clock()
    said: dict[str, Any] = {"at": 0.0, "line": "", "worked": None}

    def report(progress: Any) -> None:
        worked = progress.done + progress.failed
        if said["worked"] is None:  # a resumed backfill: the rate is of what is worked from now on
            said["worked"] = worked
        line = progress_line(progress, clock() - started, said["worked"])
        if terminal:
            stream.write("\r" + line.ljust(len(said["line"])))
            stream.flush()
        elif line != said["line"] and (clock() - said["at"] >= 5 or progress.state != "queued"):
            stream.write(line + "\n")
            stream.flush()
            said["at"] = clock()
        said["line"] = line

    return report


def progress_line(progress: Any, elapsed: float, worked_before: int) -> str:
    """A backfill's progress: where it is, the rate the workers go at since we started watching,
    and when they should be through. While pages are still being listed the total is not known, so
    the time is for what is queued so far: at least that long."""
    worked = progress.done + progress.failed
    rate = (worked - worked_before) / max(elapsed, 1e-6)
    left = progress.queued - worked
    if not rate or left <= 0:
        eta = "0 s" if left <= 0 and progress.state != "listing" else "?"
    elif progress.state == "listing":
        eta = f"at least {left / rate:.0f} s (more pages to list)"
    else:
        eta = f"{left / rate:.0f} s"
    if progress.state == "listing":
        bar = f"page {progress.pages}"
    else:
        share = worked / progress.queued if progress.queued else 1.0
        bar = "[" + "#" * int(share * 20) + "." * (20 - int(share * 20)) + f"] {share:4.0%}"
    return (
        f"{bar}  listed {progress.listed}  queued {progress.queued}  done {progress.done}"
        f"  failed {progress.failed}  {rate:.1f}/s  ETA {eta}"
    )


# --- rules ----------------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Check, test and explain rule files."""


@rules.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Warnings (W codes) fail too.")
@pass_settings
def check(settings: Settings, directory: Path | None, output: str, strict: bool) -> None:
    """Validate every rule file of DIRECTORY (default POSTUPLOAD_RULES_DIR); exit 1 on any problem.
    Warnings (conditions no notification can meet, placeholders the match does not guarantee) are
    shown and fail only with --strict."""
    from postupload.rules.loading import load_ruleset

    directory = directory or settings.rules_dir
    try:
        ruleset = load_ruleset(directory)
    except RuleSetError as error:
        if output == "json":
            click.echo(json.dumps({"ok": False, "problems": [p.__dict__ for p in error.problems]}, indent=2))
            raise SystemExit(1) from None
        raise
    warned = [problem.__dict__ for problem in ruleset.warnings]
    if output == "json":
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
@pass_settings
def test_rules(settings: Settings, directory: Path | None, update: bool) -> None:
    """Run the rule tests in DIRECTORY/tests against DIRECTORY's rules; exit 1 on any failure."""
    from postupload.rules.loading import load_ruleset
    from postupload.rules.rule_tests import rule_test_files, run_file, update_file

    directory = directory or settings.rules_dir
    ruleset = load_ruleset(directory)
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
        for problem in problems:
            click.echo(str(problem), err=True)
        failed += len(problems)
        for outcome in outcomes:
            if outcome.passed:
                passed += 1
                continue
            failed += 1
            click.echo(f"FAIL {outcome.file}:{outcome.line}: {outcome.name}")
            click.echo("\n".join(outcome.differences))
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)


@rules.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="Rule directory (default: env).")
@click.option(
    "--format", "output", type=click.Choice(["text", "json", "test"]), default="text", show_default=True
)
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
@click.option("--recent", type=click.IntRange(min=1), help="Only the latest N recorded notifications.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_local_settings
def diff_rules(
    settings: Settings, candidate: Path, against: Path | None, recent: int | None, output: str
) -> None:
    """What the rules in CANDIDATE would do differently from the live rules, on the notifications
    recorded lately: matches per rule, and calls added, removed or changed (with examples). Exit 0
    when nothing changes, 2 when something does, 1 when a rule set is invalid."""
    from postupload.rules.loading import load_ruleset
    from postupload.rules.preview import diff, render
    from postupload.store.kept_notifications import latest

    live = load_ruleset(against or settings.rules_dir)
    proposed = load_ruleset(candidate)
    envelopes = latest(_redis(settings), recent)
    if not envelopes:
        click.echo(
            "no notifications are recorded yet: the web keeps the latest POSTUPLOAD_PREVIEW_KEEP it receives",
            err=True,
        )
    report = diff(live, proposed, envelopes)
    if output == "json":
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(render(report)))
    raise SystemExit(2 if report.differs else 0)


@rules.command()
def schema() -> None:
    """Print the rule-file JSON Schema (for editors), assembled from the action kinds."""
    from postupload.rules.loading import rules_schema

    click.echo(json.dumps(rules_schema(), indent=2, ensure_ascii=False))


# --- what happened --------------------------------------------------------------------------------


def _redis(settings: Settings) -> Any:
    from postupload.store.queue import connect

    return connect(settings.require_redis_url())


@main.command()
@click.argument("asset")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--cloud", help="The asset's product environment [default: the one configured that knows it].")
@pass_local_settings
def history(settings: Settings, asset: str, output: str, cloud: str | None) -> None:
    """What happened to an asset (by asset_id or public_id): notifications, rules, actions, outcomes."""
    from postupload.store.history import entries as story
    from postupload.store.history import find

    connection = _redis(settings)
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
                " (backfill)" if entry.get("backfill") else ""
            )
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

    waiting = waiting_jobs(_redis(settings))
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

    jobs = failed_jobs(_redis(settings))
    if output == "json":
        rows = [
            {**job.__dict__, "failed_at": job.failed_at.isoformat() if job.failed_at else None}
            for job in jobs
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

    connection = _redis(settings)
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

"""The processes: `web`, `worker`, `emulator`, and `run`, which starts them all locally."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.decorators import FC

from postupload.cli.main import main, pass_settings
from postupload.config import DEV_ACCOUNT, Settings
from postupload.store import keys


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

    from postupload.web import serving

    class Server(BaseApplication):
        def load_config(self) -> None:
            chosen = {"bind": f"{host}:{port}", "workers": workers, "worker_class": worker_class}
            if worker_class == "gthread":
                chosen["threads"] = 4
            for name, value in {**serving.SETTINGS, **chosen}.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            from postupload.web.app import create_app  # in each worker, once gevent has patched ssl

            return create_app(settings)

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
    from postupload.store.connection import connect
    from postupload.worker.loop import run_worker

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

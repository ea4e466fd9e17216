"""The `postupload` group: our errors as one line and exit status 1, and the settings each command takes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from postupload import logs
from postupload.config import Settings, environment
from postupload.errors import PostuploadError, RuleSetError

pass_settings = click.make_pass_decorator(Settings)


def pass_local_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Like pass_settings, for the commands one runs beside `postupload run`: what the environment
    does not say is taken from the running stack's var/run.env."""

    @functools.wraps(command)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        from postupload.local import run_env

        return command(Settings.from_env(environment(run_env.read())), *args, **kwargs)

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
        except Exception as error:
            # redis imported here, not at the top: `postupload web` must import nothing that imports
            # ssl before gunicorn's gevent worker patches it (a MonkeyPatchWarning on every start).
            import redis

            if not isinstance(error, redis.RedisError):
                raise
            # a command that reads Redis (history, failed, ...)
            if isinstance(error, redis.ResponseError):  # it answered: with a refusal, not silence
                click.echo(f"postupload: error: Redis (REDIS_URL) refused a command: {error}", err=True)
            else:
                click.echo(f"postupload: error: Redis (REDIS_URL) does not answer: {error}", err=True)
            raise SystemExit(1) from None


@click.group(cls=Group)
@click.pass_context
def main(ctx: click.Context) -> None:
    """postupload: Cloudinary notifications in, rule-driven follow-up work out."""
    # The environment is read once, here, and checked before anything imports the cloudinary SDK,
    # which parses CLOUDINARY_URL at import time and raises a bare ValueError on a bad one.
    try:
        ctx.obj = Settings.from_env()
    finally:  # configured as the settings say, or as by default when they cannot be read
        settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
        logs.configure(settings.log_level, settings.log_format)


def redis_connection(settings: Settings) -> Any:
    from postupload.store.connection import connect

    return connect(settings.require_redis_url())


# How many recorded notifications a command takes: any count Redis can be asked for (COUNT is a
# signed 64-bit number; a larger one was Redis's refusal, not ours).
RECENT = click.IntRange(min=1, max=2**62)

"""`var/run.env`: where the stack `postupload run` started can be found, for the local commands
(`history`, `failed`, `jobs`, `rules diff`, `notify`), so nobody copies values from the banner."""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

RUN_ENV = Path("var/run.env")


def write(values: dict[str, str], path: Path = RUN_ENV) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# written by `postupload run` (pid {os.getpid()}); removed when it stops",
        f"PID={os.getpid()}",
    ]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]  # a shell can `.` it
    # It may hold REDIS_URL's password and the development account: created 0600 (never readable by
    # others, even for a moment), then moved into place whole.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read(path: Path = RUN_ENV) -> dict[str, str]:
    """The values of a running `postupload run`; nothing when the file is missing or its run is gone."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            name, raw = line.split("=", 1)
            values[name] = "".join(shlex.split(raw))
    pid = values.pop("PID", "")
    if not pid.isdigit() or not _alive(int(pid)):
        return {}
    return values


def remove(path: Path = RUN_ENV) -> None:
    """Remove the file this process wrote (a second run that could not start leaves the first's)."""
    with contextlib.suppress(OSError):
        if f"PID={os.getpid()}\n" in path.read_text(encoding="utf-8"):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

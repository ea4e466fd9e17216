"""Child processes that do not outlive the process that started them, and stops asked for by signals."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


class StopFlag:
    """A stop asked for by a signal handler, and waited for. A handler runs between two bytecodes of
    the main thread, whatever it was doing: a threading.Event's `set` there waited forever for the
    lock its own `wait`, interrupted, held (a worker's scheduler was left so, orphaned and alive for
    good). This one is set with no lock, and waited for on a pipe the setter writes a byte to."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(OSError):  # the pipe is full: it wakes a waiter already
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set or `timeout` s; whether it is set."""
        if not self._set:
            select.select([self._read], [], [], timeout)
        return self._set


def die_with_parent() -> None:
    """In a child, before exec: the kernel sends it SIGTERM when its parent dies, however it dies
    (Linux's PR_SET_PDEATHSIG; elsewhere nothing is done). The kernel ties it to the thread that
    started the child: start such children from a thread that outlives them (the main one)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM (let it finish what it holds), then SIGKILL if it has not gone within `timeout`."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

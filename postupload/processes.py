"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


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

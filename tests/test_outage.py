"""Processes that outlive trouble: workers ride out a Redis outage, `postupload run` keeps its
children running and stops them all on any stop signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from rq import Worker as RqWorker

from postupload.local.redis_server import RedisServer
from tests.conftest import ROOT, Processes, Stack, free_port, quick_timings, wait_until
from tests.test_actions import _faults

RULES = (
    "rules:\n  - {name: seen, match: {resource_type: image}, actions: [{context: {set: {seen: 'yes'}}}]}\n"
)


@pytest.fixture
def outage_stack(processes: Processes, own_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    rules = tmp_path / "outage-rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    stack = Stack(processes, own_redis, rules, {}, faults=_faults(latency=0.8))
    yield stack
    processes.stop()
    stack.stop()


def seen(stack: Stack, names: list[str]) -> bool:
    assets = stack.assets()
    return all(assets.get(name, {}).get("context") == {"custom": {"seen": "yes"}} for name in names)


def test_a_busy_worker_rides_out_a_redis_restart(outage_stack: Stack, own_redis: RedisServer) -> None:
    stack = outage_stack
    stack.start_workers(1)
    names = [f"outage/{number}" for number in range(3)]
    for name in names:
        stack.upload(public_id=name)
    # Redis goes away while the worker is in the middle of a job (each call takes 0.8 s).
    assert wait_until(lambda: any(w.get_current_job_id() for w in RqWorker.all(connection=stack.redis)), 15)
    own_redis.stop()
    time.sleep(2)
    own_redis.start()
    assert wait_until(lambda: seen(stack, names), 40), stack.processes.output()[-3000:]
    assert stack.workers[0].poll() is None  # the same process, still working
    output = stack.processes.output()
    assert "Exception in thread" not in output, output[-3000:]  # no job's thread died on the outage
    assert "Redis went away while it ran" in output and "it runs again once Redis is back" in output
    per_asset = [call["params"]["public_ids"][0] for call in stack.calls("context") if call["status"] == 200]
    assert sorted(set(per_asset)) == names
    # A call in flight at the outage is made again (its done mark could not be written); once at most.
    # Every job the worker held then is such a call: one, or all three when it took them together.
    assert all(per_asset.count(name) <= 2 for name in names), per_asset


def test_a_worker_started_while_redis_is_down_waits_for_it(
    outage_stack: Stack, own_redis: RedisServer
) -> None:
    stack = outage_stack
    own_redis.stop()
    stack.start_workers(1)
    # Redis comes back only once the worker has met it away (a loaded machine may take seconds to
    # start a worker: a fixed sleep let Redis come back first, and the test saw no wait).
    assert wait_until(lambda: "waiting for it" in stack.processes.output(), 60), stack.processes.output()
    time.sleep(1)  # and tried again while it is still away
    assert stack.workers[0].poll() is None, stack.processes.output()
    own_redis.start()
    stack.upload(public_id="late-redis")
    assert wait_until(lambda: seen(stack, ["late-redis"]), 20), stack.processes.output()[-3000:]
    waited = [line for line in stack.processes.output().splitlines() if "waiting for it" in line]
    assert len(waited) == 1  # said once, not once a retry


def test_readiness_tells_when_no_worker_is_alive(outage_stack: Stack) -> None:
    stack = outage_stack
    ready = f"http://127.0.0.1:{stack.web.server_port}/readyz"
    assert requests.get(ready, timeout=5).json()["workers"] == 0
    stack.start_workers(1)
    assert wait_until(lambda: requests.get(ready, timeout=5).json()["workers"] == 1, 15)
    stack.workers[0].terminate()
    stack.workers[0].wait(15)
    answer = requests.get(ready, timeout=5)
    assert answer.status_code == 200 and answer.json()["workers_error"].startswith("no worker is alive")


def test_a_worker_stopped_as_it_starts_stops(outage_stack: Stack) -> None:
    """A stop that comes as the worker forks its scheduler reaches the scheduler too, and the worker
    exits (it waited for its scheduler forever: the scheduler had lost the signal). Exits measured
    within 1.1 s."""
    stack = outage_stack
    for _ in range(4):
        stack.start_workers(1)
        worker = stack.workers[-1]
        assert wait_until(lambda: RqWorker.count(connection=stack.redis) >= 1, 15, 0.005)
        worker.terminate()
        worker.wait(10)
        stack.redis.delete(*stack.redis.keys("rq:worker*") or ["none"])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def workers_of(pid: int) -> list[int]:
    return [child for child in children_of(pid) if command_of(child).endswith(" worker ")]


def command_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """`postupload run` in an empty directory (its own Redis under var/), stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CLOUDINARY_URL")}
        log = tmp_path / f"run-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "postupload", "run", *args],
            cwd=tmp_path,
            env={**environ, "POSTUPLOAD_RULES_DIR": str(ROOT / "rules"), **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        process.log = log  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_run_restarts_a_child_that_dies_and_a_hangup_stops_everything(run: Any) -> None:
    port = free_port()
    supervisor = run("--port", str(port))
    ready = f"http://127.0.0.1:{port}/readyz"
    assert wait_until(lambda: _json(ready).get("workers") == 1, 40)
    assert wait_until(lambda: "postupload is running" in supervisor.log.read_text(), 20)
    # The console is on, at the address and with the token the banner gives.
    found = re.search(r"Console: (\S+)\n +token: (\S+)", supervisor.log.read_text())
    assert found, supervisor.log.read_text()
    console, token = found.groups()
    assert requests.get(console, timeout=5).status_code == 401
    assert requests.get(console, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
    # The local commands find the stack through var/run.env: no value copied from the banner.
    here = supervisor.log.parent
    bare = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CLOUDINARY_URL")}
    sent = subprocess.run(
        [sys.executable, "-m", "postupload", "notify", str(ROOT / "examples" / "upload.json")],
        cwd=here,
        env=bare,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0 and '"status":"queued"' in sent.stdout.replace(" ", ""), sent.stderr

    def told() -> str:
        history = [sys.executable, "-m", "postupload", "history", "products/shoe"]
        return subprocess.run(history, cwd=here, env=bare, capture_output=True, text=True, timeout=30).stdout

    assert wait_until(lambda: "rule product-thumbnails explicit: " in told(), 20), told()
    # A normal start warns of nothing: no gevent MonkeyPatchWarning (ssl imported before gevent
    # patched it: two on every start before), no Python warning of any kind.
    started = supervisor.log.read_text()
    assert "MonkeyPatchWarning" not in started and "Warning:" not in started, started
    (worker,) = workers_of(supervisor.pid)
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: workers_of(supervisor.pid) not in ([], [worker]), 10), (
        supervisor.log.read_text()[-3000:]
    )
    assert wait_until(lambda: _json(ready).get("workers", 0) >= 1, 40)
    everything = children_of(supervisor.pid)
    supervisor.send_signal(signal.SIGHUP)  # the terminal closed
    assert supervisor.wait(30) == 0
    assert not [pid for pid in everything if Path(f"/proc/{pid}").exists() and command_of(pid)]
    assert "worker stopped with -9; starting it again" in supervisor.log.read_text()
    assert not (here / "var" / "run.env").exists()  # removed when it stopped


def _json(url: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = requests.get(url, timeout=2).json()
        return answer
    except (requests.RequestException, ValueError):
        return {}


def test_run_refuses_a_port_in_use_and_a_redis_that_does_not_answer(run: Any) -> None:
    with socket_on() as port:
        busy = run("--port", str(port))
        assert busy.wait(30) == 1
        assert f"port {port} is in use" in busy.log.read_text()
    unreachable = run("--port", str(free_port()), REDIS_URL=f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert unreachable.wait(30) == 1
    said = unreachable.log.read_text()
    assert "does not answer" in said and "secret" not in said and "Traceback" not in said


class socket_on:
    """A port something else listens on."""

    def __enter__(self) -> int:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        return int(self.listener.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


def test_scheduled_retries_go_on_when_the_worker_holding_the_scheduler_is_killed(make_stack: Any) -> None:
    stack: Stack = make_stack(RULES, env={"POSTUPLOAD_RETRIES": "4"}, faults=_faults(error_rate=1.0))
    stack.start_workers(2, prelude=quick_timings())  # the scheduler's lock looked for every 3 s
    stack.upload(public_id="retry-me")
    scheduled = lambda: stack.redis.zcard("rq:scheduled:postupload")  # noqa: E731
    assert wait_until(scheduled, 20), stack.processes.output()[-3000:]  # a retry waits for its time
    holders = [(w, kids) for w in stack.workers if (kids := children_of(w.pid))]
    assert len(holders) == 1  # one worker runs the scheduler, in a child process
    (holder, (scheduler,)) = holders[0]
    holder.kill()
    holder.wait()
    requests.post(f"{stack.emulator.url}/emulator/faults", json={"error_rate": 0}, timeout=5)
    killed_at = time.monotonic()
    assert wait_until(lambda: seen(stack, ["retry-me"]), 40), stack.processes.output()[-3000:]
    # Its scheduler stopped with it and let go of the lock: the other worker's took over. The claim
    # is one maintenance round (IDLE_WAIT, here 3 s) plus the retry's own interval (up to 12 s at
    # the fourth retry); 30 s leaves a margin of 2x.
    assert time.monotonic() - killed_at < 30
    assert wait_until(lambda: not Path(f"/proc/{scheduler}").exists() or not command_of(scheduler), 10)


def test_run_killed_outright_takes_its_children_with_it_and_shows_no_secret(run: Any) -> None:
    port = free_port()
    supervisor = run("--port", str(port), CLOUDINARY_URL="cloudinary://123:top-secret-value@real-cloud")
    assert wait_until(lambda: "postupload is running" in supervisor.log.read_text(), 40)
    assert "top-secret-value" not in supervisor.log.read_text()
    children = children_of(supervisor.pid)
    assert len(children) == 3  # redis-server, web, worker (no emulator for a real account)
    supervisor.kill()
    supervisor.wait()
    gone = lambda: not any(command_of(pid) for pid in children)  # noqa: E731
    assert wait_until(gone, 20), [command_of(pid) for pid in children]


def test_two_redis_servers_cannot_share_a_data_directory(tmp_path: Path) -> None:
    from postupload.errors import PostuploadError

    with RedisServer(tmp_path / "data"), pytest.raises(PostuploadError, match="another redis-server uses"):
        RedisServer(tmp_path / "data").start()


def test_a_port_left_with_only_closed_connections_is_free_again() -> None:
    """`postupload run` right after a stop: the port holds connections in TIME-WAIT only (for about a
    minute), and its check refused it then."""
    import socket

    from postupload.errors import PostuploadError
    from postupload.local.supervisor import check_port

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PostuploadError, match=f"port {port} is in use"):
            check_port(port)  # something listens: refused
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server's side closes first: its end of port waits in TIME-WAIT
        client.close()
    time.sleep(0.1)
    states = Path("/proc/net/tcp").read_text()
    assert f":{port:04X} " in states  # the TIME-WAIT connection is there
    check_port(port)  # and the port is free

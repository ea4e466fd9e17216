"""Redis that fails over, on loopback ports: a primary, its replica and three Redis Sentinels (the
redis-server the project installs, in sentinel mode), set up as docs/deployment.md asks. For the
tests and `bench/chaos.py --failover`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from postupload import processes
from postupload.local.redis_server import RedisServer, free_port, redis_server_binary
from postupload.processes import die_with_parent

SERVICE = "postupload"
# As docs/deployment.md asks of a Redis that fails over: a primary that has lost its replica (to a
# failover the sentinels have not finished) takes no writes, so none is made where it will be lost.
SAFE_PRIMARY = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")


class Sentinels:
    """A primary, its replica, and three sentinels that fail over after 1 s without the primary."""

    def __init__(self, directory: Path, port: Callable[[], int] = free_port) -> None:
        """`port` gives a free loopback port (the tests give each pytest process a range of its own)."""
        self.directory = directory
        self.primary = RedisServer(directory / "a", port(), SAFE_PRIMARY)
        replica_of = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica = RedisServer(directory / "b", port(), (*SAFE_PRIMARY, *replica_of))
        self.ports = [port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + f"/{SERVICE}"

    def start(self) -> Sentinels:
        self.primary.start()
        self.replica.start()
        for number, port in enumerate(self.ports):
            home = self.directory / f"sentinel-{number}"
            home.mkdir()
            config = home / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [redis_server_binary(), str(config), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            )
        deadline = time.monotonic() + 30
        while not self.ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sentinels did not see the replica and each other within 30 s")
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        try:
            for port in self.ports:
                state: Any = redis.Redis(port=port, decode_responses=True).sentinel_master(SERVICE)
                if int(state["num-slaves"]) != 1 or int(state["num-other-sentinels"]) != 2:
                    return False
            replication = redis.Redis(port=self.primary.port).info("replication")
            return bool(replication.get("slave0", {}).get("state") == "online")
        except redis.RedisError:
            return False

    def primary_port(self) -> int:
        address: Any = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def fail_over(self) -> None:
        """The sentinels promote the replica (as when the primary's host is retired): the old
        primary goes on running, and becomes the new one's replica."""
        redis.Redis(port=self.ports[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            processes.stop(sentinel, 5)
        self.replica.stop()
        self.primary.stop()

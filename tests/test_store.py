"""Nothing acknowledged is lost: a notification is answered 200 only once it is stored, whatever
happens to the Redis connection between WATCH and EXEC or while Redis restarts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from postupload.config import Settings
from postupload.local.redis_server import RedisServer
from postupload.store.queue import notification_queue
from postupload.web.app import create_app
from tests.conftest import free_port, signed_headers


class CuttingProxy:
    """A TCP proxy to Redis that can cut a connection at the moment the client sends the command
    that stores a notification (EVALSHA)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.cut_next_exec = False
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self.cut_next_exec and b"EVALSHA\r\n" in data:
                    self.cut_next_exec = False
                    self.cuts += 1
                    break  # the transaction never reaches Redis
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def close(self) -> None:
        self.listener.close()


BODY = b'{"notification_type":"upload","public_id":"cut","resource_type":"image"}'


def test_a_connection_cut_as_the_notification_is_stored_is_a_503_not_a_duplicate(
    settings: Settings, redis_server: RedisServer, redis_conn: redis.Redis
) -> None:
    proxy = CuttingProxy(redis_server.port)
    try:
        # No retry by redis-py: the cut itself is what is tried (with retries, the retry stores it).
        through_proxy = redis.Redis(port=proxy.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        client = create_app(settings, through_proxy).test_client()
        proxy.cut_next_exec = True
        cut = client.post("/webhooks/cloudinary", data=BODY, headers=signed_headers(BODY))
        assert proxy.cuts == 1
        assert cut.status_code == 503, cut.json  # it was not stored: Cloudinary must deliver it again
        assert notification_queue(redis_conn).count == 0
        again = client.post("/webhooks/cloudinary", data=BODY, headers=signed_headers(BODY))
        assert again.status_code == 200 and again.json is not None and again.json["status"] == "queued"
        assert notification_queue(redis_conn).count == 1
    finally:
        proxy.close()


def test_notifications_sent_while_redis_restarts_on_a_large_file_are_all_stored(
    settings: Settings, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "restarting", free_port()).start()
    try:
        filler = redis.Redis.from_url(server.url)
        filler.execute_command("DEBUG", "POPULATE", 400_000, "filler", 64)
        filler.bgrewriteaof()
        assert _wait(lambda: filler.info("persistence")["aof_rewrite_in_progress"] == 0, 30)
        connection = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=1)
        client = create_app(settings, connection).test_client()
        answers: dict[int, list[int]] = {}
        sending = threading.Event()
        sending.set()

        def send(number: int) -> int:
            body = BODY.replace(b'"cut"', f'"restart/{number}"'.encode())
            status = client.post("/webhooks/cloudinary", data=body, headers=signed_headers(body)).status_code
            answers.setdefault(number, []).append(status)
            return status

        def keep_sending() -> None:
            number = 0
            while sending.is_set():
                send(number)
                number += 1

        sender = threading.Thread(target=keep_sending)
        sender.start()
        time.sleep(0.3)
        server.stop()  # down, then loading 400,000 keys while notifications keep arriving
        server.start(timeout=60)
        time.sleep(0.3)
        sending.clear()
        sender.join()
        for number, statuses in answers.items():  # Cloudinary delivers again what was not answered 200
            while statuses[-1] != 200:
                send(number)
        assert any(503 in statuses for statuses in answers.values())  # the outage did happen
        stored = {job_id for job_id in notification_queue(redis.Redis.from_url(server.url)).job_ids}
        assert len(stored) == len(answers)  # every notification answered 200 is there: none lost
    finally:
        server.stop()


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False

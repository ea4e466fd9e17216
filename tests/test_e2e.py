"""End to end, as deployed: emulator, web (gunicorn) and worker as real processes, Redis, real HTTP."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from postupload.config import Account
from postupload.emulator import UNSIGNED_PARAMS, string_to_sign
from postupload.local.redis_server import RedisServer
from postupload.store.queue import quiet
from tests.conftest import ACCOUNT, ROOT, Processes, free_port, wait_until


def test_sample_upload_becomes_one_signed_explicit_call(
    processes: Processes, redis_server: RedisServer, redis_conn: Any, rules_dir: Path, samples: Path
) -> None:
    sample = samples / "notifications/upload-image.json"
    emulator_port, web_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    account = Account(ACCOUNT.cloud_name, ACCOUNT.api_key, ACCOUNT.api_secret, emulator_url)
    processes.env.update(
        CLOUDINARY_URL=account.to_url(), REDIS_URL=redis_server.url, POSTUPLOAD_RULES_DIR=str(rules_dir)
    )
    processes.start("emulator", "--port", str(emulator_port), "--asset", str(sample))
    processes.start("web", "--port", str(web_port), "--workers", "1")
    processes.start("worker")
    webhook = f"http://127.0.0.1:{web_port}/webhooks/cloudinary"
    assert wait_until(lambda: _answers(f"http://127.0.0.1:{web_port}/readyz"), 20), processes.output()
    assert wait_until(lambda: _answers(f"{emulator_url}/emulator/calls"), 20), processes.output()

    sent = subprocess.run(
        [sys.executable, "-m", "postupload", "notify", str(sample), "--url", webhook],
        env=processes.env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    assert '"status":"queued"' in sent.stdout.replace(" ", "")

    def made() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(f"{emulator_url}/emulator/calls", timeout=5).json()[
            "calls"
        ]
        return found

    assert wait_until(made, 15), processes.output()
    assert wait_until(lambda: quiet(redis_conn), 15)  # the job ended: a second call would be there now
    calls = made()
    assert len(calls) == 1, processes.output()
    (call,) = calls
    assert (call["endpoint"], call["resource_type"], call["status"], call["auth"]) == (
        "explicit",
        "image",
        200,
        "signature",
    )
    params = call["params"]
    assert params["public_id"] == "sample" and params["type"] == "upload"
    assert params["eager"] == "c_scale,w_200|c_crop,g_north,h_200,w_360"
    # The signature the emulator accepted is the one Cloudinary computes over these parameters.
    signed = {key: value for key, value in params.items() if key not in UNSIGNED_PARAMS}
    expected = hashlib.sha1((string_to_sign(signed) + ACCOUNT.api_secret).encode()).hexdigest()
    assert params["signature"] == expected
    state = requests.get(f"{emulator_url}/emulator/state", timeout=5).json()["assets"]
    assert state[0]["derived"] == ["c_scale,w_200", "c_crop,g_north,h_200,w_360"]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False

"""Several product environments in one deployment: each at its own webhook path, verified with its
own secret, worked with its own credentials and Admin budget, and matchable by `cloud_name`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from werkzeug.serving import make_server

from postupload.config import Account, Settings
from postupload.core.signature import sign_notification
from postupload.emulator import Emulator, serve
from postupload.errors import ConfigError
from postupload.local.redis_server import RedisServer
from postupload.store import history, keys
from tests.conftest import Processes, metric_samples, sample, wait_until

SHOP = Account("shop-prod", "111111111111111", "shop-secret")
BLOG = Account("blog-prod", "222222222222222", "blog-secret")
RULES = """
rules:
  - name: thumbnails
    match: {resource_type: image}
    actions:
      - explicit: {eager: "c_scale,w_300"}
  - name: blog-review
    match: {resource_type: image, cloud_name: [blog-prod]}
    actions:
      - context: {set: {reviewed_in: "${cloud_name}"}}
      - moderation: {status: approved}
"""


class Deployment:
    """One emulator serving both environments, our web in this process, a worker process."""

    def __init__(self, processes: Processes, redis_server: RedisServer, rules_dir: Path) -> None:
        from postupload.web.app import create_app

        self.emulators = [Emulator(account, None, retry_delays=(0.5,)) for account in (SHOP, BLOG)]
        self.emulator = serve(self.emulators, "127.0.0.1", 0)
        threading.Thread(target=self.emulator.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{self.emulator.server_port}"
        accounts = [Account(a.cloud_name, a.api_key, a.api_secret, url) for a in (SHOP, BLOG)]
        env = {
            "POSTUPLOAD_ACCOUNTS": ",".join(account.to_url() for account in accounts),
            "REDIS_URL": redis_server.url,
            "POSTUPLOAD_RULES_DIR": str(rules_dir),
            "POSTUPLOAD_API_TIMEOUT": "2",
        }
        processes.env.pop("CLOUDINARY_URL", None)
        processes.env.update(env)
        self.env = dict(processes.env)
        self.web = make_server("127.0.0.1", 0, create_app(Settings.from_env(processes.env)), threaded=True)
        threading.Thread(target=self.web.serve_forever, args=(0.05,), daemon=True).start()
        self.webhook = f"http://127.0.0.1:{self.web.server_port}/webhooks/cloudinary"
        for emulator in self.emulators:
            emulator.notifier.url = f"{self.webhook}/{emulator.account.cloud_name}"
        self.url = url
        processes.start("worker")

    def upload(self, cloud_name: str, public_id: str) -> None:
        answer = requests.post(
            f"{self.url}/emulator/{cloud_name}/upload", json={"public_id": public_id}, timeout=10
        )
        answer.raise_for_status()

    def asset(self, cloud_name: str, public_id: str) -> dict[str, Any]:
        state = requests.get(f"{self.url}/emulator/{cloud_name}/state", timeout=10).json()
        return next(asset for asset in state["assets"] if asset["public_id"] == public_id)

    def calls(self, cloud_name: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = requests.get(
            f"{self.url}/emulator/{cloud_name}/calls", timeout=10
        ).json()["calls"]
        return calls

    def stop(self) -> None:
        self.web.shutdown()
        self.emulator.shutdown()


@pytest.fixture
def deployment(
    processes: Processes, redis_server: RedisServer, redis_conn: redis.Redis, tmp_path: Path
) -> Iterator[Deployment]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(RULES)
    running = Deployment(processes, redis_server, rules_dir)
    yield running
    processes.stop()
    running.stop()


def test_each_environment_is_worked_with_its_own_credentials_budget_and_rules(
    deployment: Deployment, redis_conn: redis.Redis
) -> None:
    # The same public_id in both: nothing of one may land on, or be skipped because of, the other.
    deployment.upload("shop-prod", "same/picture")
    deployment.upload("blog-prod", "same/picture")

    def both_done() -> bool:
        shop, blog = (deployment.asset(cloud, "same/picture") for cloud in ("shop-prod", "blog-prod"))
        return bool(shop["derived"] and blog["derived"] and blog["moderation_status"] == "approved")

    assert wait_until(both_done, 30)
    shop, blog = (deployment.asset(cloud, "same/picture") for cloud in ("shop-prod", "blog-prod"))
    assert shop["derived"] == blog["derived"] == ["c_scale,w_300"]
    # Only the blog's rule matched the blog's notification, with its cloud_name filled in.
    assert blog["context"] == {"custom": {"reviewed_in": "blog-prod"}}
    assert shop["context"] == {} and shop["moderation_status"] != "approved"
    # Every call went to its own environment (the emulator checks each one's key and secret).
    assert {call["endpoint"] for call in deployment.calls("shop-prod")} == {"explicit"}
    assert {call["endpoint"] for call in deployment.calls("blog-prod")} == {"explicit", "context", "update"}
    assert all(
        call["status"] == 200 for cloud in ("shop-prod", "blog-prod") for call in deployment.calls(cloud)
    )
    # The Admin budget learned is the blog's; the shop's is untouched.
    assert redis_conn.exists(keys.admin_budget("blog-prod")[0])
    assert not redis_conn.exists(keys.admin_budget("shop-prod")[0])

    # Each asset's history is its own, found by public_id within its environment (a job's history
    # is written as it ends, after its calls took effect).
    def blog_actions() -> list[dict[str, Any]]:
        return [e for e in history.read(redis_conn, "same/picture", ["blog-prod"]) if e["event"] == "action"]

    assert wait_until(lambda: len(blog_actions()) >= 3, 10)
    shop_story = history.read(redis_conn, "same/picture", ["shop-prod"])
    blog_story = history.read(redis_conn, "same/picture", ["blog-prod"])
    # (the blog's asset also got the notifications its context and moderation changes made)
    assert [e["cloud_name"] for e in shop_story if e["event"] == "notification"] == ["shop-prod"]
    assert {e["cloud_name"] for e in blog_story if e["event"] == "notification"} == {"blog-prod"}
    assert {e.get("rule") for e in blog_story if e["event"] == "action"} == {"thumbnails", "blog-review"}
    # /metrics shows the budget by environment.
    metrics_url = deployment.webhook.replace("/webhooks/cloudinary", "/metrics")

    def counted() -> Any:  # a worker adds its counts at most once a second
        samples = metric_samples(requests.get(metrics_url, timeout=10).text)
        moderated = sample(samples, "postupload_actions_total", kind="moderation", cloud="blog-prod")
        return samples if moderated else None

    samples = wait_until(counted, 10)
    assert samples
    budgets = {
        dict(labels)["cloud"] for (name, labels) in samples if name == "postupload_admin_budget_remaining"
    }
    assert budgets == {"blog-prod"}
    # ... and what came in, was done and was called, by environment.
    notifications = "postupload_notifications_total"
    assert sample(samples, notifications, type="upload", answer="queued", cloud="shop-prod") == 1
    assert sample(samples, notifications, type="upload", answer="queued", cloud="blog-prod") == 1
    actions = "postupload_actions_total"
    assert sample(samples, actions, kind="moderation", outcome="ok", cloud="blog-prod") == 1
    assert sample(samples, actions, kind="moderation", cloud="shop-prod") == 0
    calls = "postupload_cloudinary_call_seconds_count"
    assert sample(samples, calls, endpoint="explicit", status="200", cloud="shop-prod") == 1


def test_a_job_for_an_environment_no_longer_served_fails_saying_so(
    deployment: Deployment, redis_conn: redis.Redis
) -> None:
    from click.testing import CliRunner

    from postupload.cli import main
    from postupload.core.envelope import Envelope
    from postupload.store.queue import enqueue_notification, notification_queue

    body = {"notification_type": "upload", "public_id": "old", "resource_type": "image", "type": "upload"}
    enqueue_notification(notification_queue(redis_conn), Envelope("n-gone", time.time(), "gone-prod", body))
    assert wait_until(lambda: notification_queue(redis_conn).failed_job_registry.count == 1, 20)
    listed = CliRunner().invoke(main, ["failed", "list"], env=dict(deployment.env))
    assert listed.exit_code == 0, listed.output
    assert "in gone-prod" in listed.output and "after 1 try" in listed.output  # permanent: not retried
    assert "product environment 'gone-prod' is not configured" in listed.output
    assert "POSTUPLOAD_ACCOUNTS" in listed.output


def _post(url: str, body: dict[str, Any], secret: str) -> requests.Response:
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Cld-Timestamp": timestamp,
        "X-Cld-Signature": sign_notification(raw, timestamp, secret),
    }
    return requests.post(url, data=raw, headers=headers, timeout=10)


def test_a_notification_is_verified_with_the_secret_of_the_path_it_came_to(deployment: Deployment) -> None:
    body = {"notification_type": "upload", "public_id": "x", "resource_type": "image", "type": "upload"}
    assert _post(f"{deployment.webhook}/shop-prod", body, SHOP.api_secret).status_code == 200
    # Signed by the shop, sent to the blog's path: refused.
    refused = _post(f"{deployment.webhook}/blog-prod", {**body, "public_id": "y"}, SHOP.api_secret)
    assert refused.status_code == 401
    unknown = _post(f"{deployment.webhook}/nobody", body, SHOP.api_secret)
    assert unknown.status_code == 404
    assert "POSTUPLOAD_ACCOUNTS" in unknown.json()["error"]["message"]
    # No CLOUDINARY_URL: the bare path says where each environment's notifications go.
    bare = _post(deployment.webhook, body, SHOP.api_secret)
    assert bare.status_code == 404
    assert "/webhooks/cloudinary/<cloud_name>" in bare.json()["error"]["message"]


def test_notify_and_backfill_name_the_environment(
    deployment: Deployment, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from postupload.cli import main

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=dict(deployment.env))

    body = tmp_path / "upload.json"
    body.write_text(json.dumps({"notification_type": "upload", "public_id": "n", "resource_type": "image"}))
    sent = cli("notify", str(body), "--cloud", "blog-prod", "--url", f"{deployment.webhook}/blog-prod")
    assert sent.exit_code == 0 and "queued" in sent.output, sent.output
    wrong = cli("notify", str(body), "--cloud", "shop-prod", "--url", f"{deployment.webhook}/blog-prod")
    assert wrong.exit_code != 0 and "401" in wrong.output
    # Existing assets of one environment only, listed and worked with its credentials.
    for cloud_name in ("shop-prod", "blog-prod"):
        deployment.emulators[
            [e.account.cloud_name for e in deployment.emulators].index(cloud_name)
        ].add_asset({"public_id": "old/one"})
    ran = cli("backfill", "--cloud", "blog-prod", "--prefix", "old/", "--rule", "thumbnails")
    assert ran.exit_code == 0, ran.output
    assert "in blog-prod" in ran.output
    assert wait_until(lambda: deployment.asset("blog-prod", "old/one")["derived"], 30)
    assert deployment.asset("shop-prod", "old/one")["derived"] == []
    assert cli("backfill", "--prefix", "old/").exit_code != 0  # several environments: which one?


def test_accounts_are_read_from_a_list_or_a_file_and_mistakes_are_named(tmp_path: Path) -> None:
    listed = Settings.from_env({"POSTUPLOAD_ACCOUNTS": f"{SHOP.to_url()}, {BLOG.to_url()}"})
    assert list(listed.all_accounts()) == ["shop-prod", "blog-prod"]
    assert listed.require_account("blog-prod") == BLOG
    accounts_file = tmp_path / "accounts"
    accounts_file.write_text(f"# production\n{SHOP.to_url()}\n\n{BLOG.to_url()}\n")
    from_file = Settings.from_env({"POSTUPLOAD_ACCOUNTS": f"@{accounts_file}"})
    assert from_file.all_accounts() == listed.all_accounts()
    with pytest.raises(ConfigError, match="given twice"):
        Settings.from_env({"POSTUPLOAD_ACCOUNTS": f"{SHOP.to_url()},{SHOP.to_url()}"})
    with pytest.raises(ConfigError, match="entry 2: expected cloudinary://"):
        Settings.from_env({"POSTUPLOAD_ACCOUNTS": f"{SHOP.to_url()},https://nope"})
    with pytest.raises(ConfigError, match="cannot read the accounts file"):
        Settings.from_env({"POSTUPLOAD_ACCOUNTS": f"@{tmp_path / 'missing'}"})
    with pytest.raises(ConfigError, match="name one"):
        listed.require_account()
    # CLOUDINARY_URL's environment is the default, and is served at the bare path too.
    both = Settings.from_env({"CLOUDINARY_URL": SHOP.to_url(), "POSTUPLOAD_ACCOUNTS": BLOG.to_url()})
    assert both.require_account() == SHOP and list(both.all_accounts()) == ["shop-prod", "blog-prod"]

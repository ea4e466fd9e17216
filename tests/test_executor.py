"""Performing plans against a real Redis with a recording fake of our Cloudinary client and a clock
that moves only when told: skipping what is done, the loop guard, the Admin budget, tag batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from postupload.core.client import RateLimit
from postupload.core.decision import decide
from postupload.core.envelope import Envelope
from postupload.core.planning import plan
from postupload.core.ruleset import RuleSet
from postupload.errors import ActionError, RateLimitError
from postupload.local.redis_server import RedisServer
from postupload.rules.loading import load_ruleset
from postupload.store import history, keys
from postupload.store.batches import FLUSH_AFTER, TagBatches
from postupload.store.budget import AdminBudget
from postupload.store.queue import notification_queue
from postupload.worker.executor import Executor
from tests.fakes import Clock, RecordingClient

RULES = """
rules:
  - name: thumbs
    match: {resource_type: image}
    actions:
      - explicit: {eager: "c_scale,w_200"}
      - addon: {background_removal: cloudinary_ai}
      - tags: {add: [processed]}
      - context: {set: {state: done}}
  - name: approve
    match: {resource_type: image}
    actions:
      - moderation: {status: approved}
"""


OUR_KEY = "111222333444555"


def by(source: str, key: str) -> dict[str, Any]:
    """Cloudinary's notification_context: who triggered the notification."""
    return {
        "notification_context": {
            "triggered_at": "2026-12-06T10:00:00Z",
            "triggered_by": {"source": source, "id": key},
        }
    }


class Harness:
    def __init__(self, connection: redis.Redis, rules: RuleSet, cap: int = 100) -> None:
        self.connection = connection
        self.rules = rules
        self.clock = Clock()
        self.client = RecordingClient()
        self.scheduled: list[tuple[str, float]] = []
        self.batches = TagBatches(connection, notification_queue(connection), clock=self.clock)
        self.executor = Executor(
            connection,
            self.client,
            self.batches,
            AdminBudget(connection, "test-cloud"),
            lambda envelope, when: self.scheduled.append((envelope.id, when)),
            cap,
            self.clock,
            api_key=OUR_KEY,
        )

    def run(
        self, public_id: str = "shoe", notification_id: str = "n1", **fields: Any
    ) -> list[dict[str, Any]]:
        notification = {
            "notification_type": "upload",
            "public_id": public_id,
            "asset_id": f"id-{public_id}",
            "version": 1,
            "resource_type": "image",
            "type": "upload",
            **fields,
        }
        envelope = Envelope(notification_id, self.clock(), "test-cloud", notification)
        return [
            outcome.as_dict() for outcome in self.executor.execute(envelope, decide(self.rules, envelope))
        ]


@pytest.fixture
def harness(redis_conn: redis.Redis, tmp_path: Path) -> Harness:
    (tmp_path / "rules.yaml").write_text(RULES)
    return Harness(redis_conn, load_ruleset(tmp_path))


def statuses(outcomes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(o["rule"], o["action"], o["status"]) for o in outcomes]


def test_the_plan_is_performed_as_planned_and_once(harness: Harness) -> None:
    first = harness.run()
    assert statuses(first) == [
        ("thumbs", "explicit", "ok"),
        ("thumbs", "addon", "ok"),
        ("thumbs", "context", "ok"),
        ("approve", "moderation", "ok"),
        ("thumbs", "tags", "batched"),
    ]
    # The explicit and the add-on share one request; the tag change waits in its batch.
    assert harness.client.endpoints() == ["explicit", "context", "update"]
    assert harness.client.calls[0]["params"] == {
        "eager": "c_scale,w_200",
        "background_removal": "cloudinary_ai",
    }
    # A retried job, a replay or a duplicate delivery: everything is skipped, nothing is called.
    again = harness.run()
    assert {o["status"] for o in again} == {"skipped"}
    assert len(harness.client.calls) == 3
    told = [e for e in history.read(harness.connection, "shoe", ["test-cloud"]) if e["event"] == "action"]
    assert [e["status"] for e in told] == ["ok", "ok", "ok", "ok", "batched", *["skipped"] * 5]


def test_a_failed_call_is_not_marked_done_and_runs_again(harness: Harness) -> None:
    def fail_context(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "context":
            raise ActionError("Cloudinary call failed: 503", permanent=False)

    harness.client.fail = fail_context
    outcomes = harness.run()
    assert ("thumbs", "context", "failed") in statuses(outcomes)
    harness.client.fail = None
    harness.client.calls.clear()
    again = harness.run()
    assert harness.client.endpoints() == ["context"]  # only what had failed
    assert ("thumbs", "context", "ok") in statuses(again)


def test_an_action_another_job_is_doing_is_skipped_not_done_twice(harness: Harness) -> None:
    """Two notifications of one asset version at the same moment (a backfill beside the live
    upload): the second finds the first's claims and leaves each action to it."""
    beside: list[list[dict[str, Any]]] = []

    def meanwhile(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "explicit" and not beside:  # the first job's first call is in flight
            beside.append(harness.run(notification_id="backfill-1"))

    harness.client.fail = meanwhile
    first = harness.run(notification_id="live-1")
    assert {o["status"] for o in first} == {"ok", "batched"}
    (second,) = beside
    assert {o["status"] for o in second} == {"skipped"}
    assert {o["detail"] for o in second} == {"being made by job live-1"}
    assert harness.client.endpoints() == ["explicit", "context", "update"]  # each once
    # Afterwards, what was claimed holds its outcome.
    assert {o["detail"] for o in harness.run(notification_id="backfill-2")} == {
        "already ok",
        "already batched",
    }


def test_a_failed_action_lets_go_of_its_claim(harness: Harness) -> None:
    def fail_context(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "context":
            raise ActionError("Cloudinary call failed: 503", permanent=False)

    harness.client.fail = fail_context
    harness.run(notification_id="live-1")
    harness.client.fail = None
    harness.client.calls.clear()
    # Another notification of the same version does what the first could not, and only that.
    other = statuses(harness.run(notification_id="backfill-1"))
    assert harness.client.endpoints() == ["context"]
    assert ("thumbs", "context", "ok") in other


def test_the_loop_guard_stops_actions_past_the_cap_within_the_hour(
    redis_conn: redis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    harness = Harness(redis_conn, load_ruleset(tmp_path), cap=3)
    outcomes = harness.run()
    capped = [o for o in outcomes if o["status"] == "capped"]
    assert [(o["rule"], o["action"]) for o in capped] == [("thumbs", "context"), ("approve", "moderation")]
    assert "POSTUPLOAD_ASSET_ACTION_CAP" in capped[0]["detail"]
    # A new version within the hour (a loop feeding itself): nothing more runs.
    assert {o["status"] for o in harness.run(notification_id="n2", version=2)} == {"capped"}
    harness.clock.advance(keys.CAP_WINDOW)  # the next hour has room again, for `cap` actions
    later = statuses(harness.run(notification_id="n3", version=3))
    assert [status for _, _, status in later].count("capped") == 2


def test_a_probe_of_the_admin_budget_holds_the_others_back_no_longer_than_its_call_can_take(
    redis_conn: redis.Redis,
) -> None:
    """A process killed while its probe call is out never lets go of the probe: every Admin call
    (moderation, a backfill's listing) waits for the probe's expiry, which was a minute whatever the
    call's timeout."""
    prober, other = AdminBudget(redis_conn, "test-cloud", 2.0), AdminBudget(redis_conn, "test-cloud", 2.0)
    assert prober.take(1000.0) == 0  # the budget is unknown: this call probes it, then the prober dies
    assert other.take(1000.0) > 1000.0  # the others wait for the probe's answer...
    held = (2.0 + keys.ADMIN_PROBE_MARGIN) * 1000  # ...which cannot come later than its timeout
    assert held - 1000 < redis_conn.pttl(prober.keys[1]) <= held


def test_a_call_taken_just_before_the_reset_waits_for_it(redis_conn: redis.Redis) -> None:
    """Sent in a window's last moment, a call may be counted in the next one by Cloudinary, which the
    workers then think has a call more left than it has."""
    from postupload.store.budget import BOUNDARY

    budget = AdminBudget(redis_conn, "test-cloud")
    budget.learn(RateLimit(limit=10, remaining=5, reset=1000.0))
    assert budget.take(1000.0 - BOUNDARY - 0.01) == 0
    assert budget.take(1000.0 - BOUNDARY / 2) == 1000.0  # wait for the reset, then probe the new window
    assert budget.take(1000.0) == 0


def test_moderation_waits_for_the_budget_reset_instead_of_calling(harness: Harness) -> None:
    reset = harness.clock() + 600
    harness.executor.budget.learn(RateLimit(500, 0, reset))  # none left in this window
    outcomes = harness.run()
    assert ("approve", "moderation", "deferred") in statuses(outcomes)
    assert "update" not in harness.client.endpoints()
    assert harness.scheduled == [("n1", reset)]
    harness.clock.advance(601)  # the reset: one call probes the new window, then it goes through
    assert ("approve", "moderation", "ok") in statuses(harness.run())
    assert harness.client.endpoints()[-1] == "update"


def test_a_420_defers_to_the_time_cloudinary_names(harness: Harness) -> None:
    reset = harness.clock() + 90

    def rate_limited(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "update":
            raise RateLimitError("Cloudinary answered 420", reset)

    harness.client.fail = rate_limited
    outcomes = harness.run()
    deferred = [o for o in outcomes if o["status"] == "deferred"]
    assert [o["action"] for o in deferred] == ["moderation"]
    assert harness.scheduled == [("n1", reset)]
    assert harness.executor.budget.take(harness.clock()) == reset  # every worker now waits for it


def test_a_thousand_uploads_tag_changes_go_in_one_call(redis_conn: redis.Redis, tmp_path: Path) -> None:
    """The coalescing claim, deterministically: 1000 uploads within the batch window make one call."""
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: tag-all, match: {resource_type: image}, actions: [{tags: {add: [seen]}}]}\n"
    )
    harness = Harness(redis_conn, load_ruleset(tmp_path))
    for number in range(999):
        harness.run(f"burst/{number}", f"n{number}")
        harness.clock.advance(0.001)
    assert harness.batches.flush_due(lambda cloud_name: harness.client) == 0  # not due yet: it waits for more
    harness.run("burst/999", "n999")  # the thousandth fills a call: due at once
    assert harness.batches.flush_due(lambda cloud_name: harness.client) == 1
    (call,) = harness.client.calls
    assert call["command"] == "add" and call["tags"] == ["seen"]
    assert sorted(call["public_ids"]) == sorted(f"burst/{number}" for number in range(1000))
    done = redis_conn.mget(redis_conn.keys(keys.done("test-cloud:id-burst/*:sent")))
    assert len(done) == 1000 and all(mark and json.loads(mark)["status"] == "ok" for mark in done)


def test_a_batch_is_sent_when_its_window_ends(redis_conn: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: tag-all, match: {resource_type: image}, actions: [{tags: {add: [seen]}}]}\n"
    )
    harness = Harness(redis_conn, load_ruleset(tmp_path))
    harness.run("first", "n1")
    harness.clock.advance(FLUSH_AFTER - 0.01)
    harness.run("second", "n2")
    assert harness.batches.flush_due(lambda cloud_name: harness.client) == 0
    harness.clock.advance(0.01)  # FLUSH_AFTER after the first asset: both go, in one call
    assert harness.batches.flush_due(lambda cloud_name: harness.client) == 1
    assert harness.client.calls[0]["public_ids"] == ["first", "second"]


def test_notifications_without_an_asset_id_add_to_the_same_assets_history(harness: Harness) -> None:
    harness.run()  # the upload names asset_id id-shoe
    moderation = {
        "notification_type": "moderation",
        "moderation_status": "approved",
        "public_id": "shoe",
        "version": 1,
        "url": "http://res.cloudinary.com/test-cloud/image/upload/v1/shoe.jpg",
    }
    envelope = Envelope("n-moderation", harness.clock(), "test-cloud", moderation)
    harness.executor.execute(envelope, plan([], moderation, envelope.id, "test-cloud"))
    told = history.read(harness.connection, "shoe", ["test-cloud"])
    assert [e.get("notification_type") for e in told if e["event"] == "notification"] == [
        "upload",
        "moderation",
    ]
    assert history.read(harness.connection, "id-shoe", ["test-cloud"]) == told


def test_a_scheduler_lock_left_without_refresh_is_taken_over(redis_conn: redis.Redis) -> None:
    """A scheduler that died while Redis was away could not release its lock: after STALE_LOCK
    seconds without a refresh it is taken over, not after the lock's full 61 s."""
    from postupload.store.queue import notification_queue
    from postupload.worker.rq_adapter import STALE_LOCK, Scheduler

    scheduler = Scheduler([notification_queue(redis_conn)], connection=redis_conn, name="ours")
    key = scheduler.get_locking_key("postupload")
    redis_conn.set(key, "alive", ex=61 - STALE_LOCK + 2)  # refreshed 8 s ago: its owner lives
    scheduler.acquire_locks()
    assert redis_conn.get(key) == b"alive" and not scheduler.acquired_locks
    redis_conn.set(key, "gone", ex=61 - STALE_LOCK - 2)  # 12 s without a refresh
    scheduler.acquire_locks()
    assert redis_conn.get(key) == b"ours" and scheduler.acquired_locks == {"postupload"}


def test_a_registry_cleaning_lock_left_by_a_killed_worker_lapses_soon(redis_conn: redis.Redis) -> None:
    from postupload.store.keys import CLEANING_LOCK_TTL
    from postupload.store.queue import notification_queue

    queue = notification_queue(redis_conn)
    assert queue.acquire_maintenance_lock()  # a worker that is then killed before it releases it
    assert 0 < redis_conn.ttl(queue.registry_cleaning_key) <= CLEANING_LOCK_TTL  # RQ's own: 899 s
    assert not notification_queue(redis_conn).acquire_maintenance_lock()


def test_an_idle_flusher_waits_on_redis_and_a_new_batch_wakes_it(own_redis: RedisServer) -> None:
    """Idle, a worker's flusher asks Redis nothing (it blocks on the wake list, IDLE s at most); a batch
    made by any process wakes it, and it sends the batch once due; a stop wakes it at once."""
    import time

    from postupload.store.batches import IDLE, Flusher, Spec
    from tests.conftest import wait_until

    redis_conn = redis.Redis.from_url(own_redis.url)  # only this test's commands are counted

    def commands() -> int:
        return sum(int(entry["calls"]) for entry in redis_conn.info("commandstats").values())

    client = RecordingClient()
    flusher = Flusher(TagBatches(redis_conn, notification_queue(redis_conn)), lambda cloud: client, 5.0)
    flusher.start()
    time.sleep(1.0)  # its first look, then it waits
    before = commands()
    time.sleep(3.0)
    assert commands() - before <= 2  # the INFO calls themselves; polling once a second would be ~9

    started = time.monotonic()
    elsewhere = TagBatches(redis_conn, notification_queue(redis_conn))  # another worker's
    item = {"public_id": "shoe", "asset": "id-shoe", "key": keys.done("shoe:v1:r:0:add"), "rule": "r"}
    elsewhere.add_many([(Spec("image", "upload", "add", ("seen",)), {**item, "notification": "n1"})])
    assert wait_until(lambda: len(client.calls) == 1, IDLE / 3)  # woken, not after its IDLE s
    assert time.monotonic() - started >= FLUSH_AFTER - 0.05  # sent once due, not when woken
    assert client.calls[0]["public_ids"] == ["shoe"]
    # The done mark follows the call's answer: the recording client records the call before it returns.
    assert wait_until(lambda: redis_conn.get(item["key"]) is not None, 5)

    started = time.monotonic()
    flusher.stop()
    assert not flusher.thread.is_alive() and time.monotonic() - started < IDLE / 3


def test_an_assets_history_is_kept_30_days_from_its_latest_notification_within_a_day(
    redis_conn: redis.Redis,
) -> None:
    """Its days and its public_id mapping are renewed when a day went by since the last renewal (not
    with every notification, a Redis command each), and a rename maps the new public_id at once."""
    from postupload.store.history import Story

    key, mapping = keys.history("id-shoe"), keys.asset("cloud:shoe")
    entry = {"event": "notification", "notification": "n1"}
    history.record_all(redis_conn, [Story("id-shoe", "cloud:shoe", [(entry, 1.0)])])  # a new history
    assert redis_conn.ttl(key) > keys.HISTORY_TTL - 60 and redis_conn.get(mapping) == b"id-shoe"

    redis_conn.expire(key, keys.HISTORY_TTL - 3600)  # renewed an hour ago
    redis_conn.delete(mapping)
    history.record_all(redis_conn, [Story("id-shoe", "cloud:shoe", [(entry, 2.0)])])
    assert redis_conn.ttl(key) <= keys.HISTORY_TTL - 3600 and redis_conn.get(mapping) is None

    redis_conn.expire(key, keys.HISTORY_TTL - keys.DAY - 60)  # a day and a minute ago
    history.record_all(redis_conn, [Story("id-shoe", "cloud:shoe", [(entry, 3.0)])])
    assert redis_conn.ttl(key) > keys.HISTORY_TTL - 60 and redis_conn.get(mapping) == b"id-shoe"
    assert redis_conn.ttl(mapping) > keys.HISTORY_TTL - 60

    history.record_all(redis_conn, [Story("id-shoe", "cloud:boot", [(entry, 4.0)], renamed=True)])
    assert redis_conn.get(keys.asset("cloud:boot")) == b"id-shoe"
    assert [e["time"] for e in history.read(redis_conn, "boot", ["cloud"])] == [1.0, 2.0, 3.0, 4.0]


def test_after_a_rename_the_history_is_found_by_the_new_public_id(harness: Harness) -> None:
    harness.run()  # the upload of shoe, asset_id id-shoe
    rename = {
        "notification_type": "rename",
        "asset_id": "id-shoe",
        "resource_type": "image",
        "type": "upload",
        "from_public_id": "shoe",
        "to_public_id": "catalog/boot",
    }
    envelope = Envelope("n-rename", harness.clock(), "test-cloud", rename)
    harness.executor.execute(envelope, plan([], rename, envelope.id, "test-cloud"))
    told = history.read(harness.connection, "catalog/boot", ["test-cloud"])
    assert [e.get("notification_type") for e in told if e["event"] == "notification"] == ["upload", "rename"]


def test_a_notification_of_several_assets_goes_into_each_ones_history(harness: Harness) -> None:
    """Each asset's story gets the notification (written for all of them in one Redis call)."""
    changed = {
        "notification_type": "resource_tags_changed",
        "source": "api",
        "resources": [
            {"asset_id": f"id-{name}", "public_id": name, "resource_type": "image", "type": "upload"}
            for name in ("shoe", "boot", "sock")
        ],
    }
    envelope = Envelope("n-tags", harness.clock(), "test-cloud", changed)
    before = int(harness.connection.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))
    harness.executor.execute(envelope, plan([], changed, envelope.id, "test-cloud"))
    for name in ("shoe", "boot", "sock"):
        (told,) = history.read(harness.connection, name, ["test-cloud"])
        assert told["notification"] == "n-tags" and told["notification_type"] == "resource_tags_changed"
    assert int(harness.connection.info("commandstats")["cmdstat_eval"]["calls"]) - before == 1


# The notification Harness.run makes by default.
SHOE = {
    "notification_type": "upload",
    "public_id": "shoe",
    "asset_id": "id-shoe",
    "version": 1,
    "resource_type": "image",
    "type": "upload",
}


def test_environments_share_no_per_asset_state(redis_conn: redis.Redis, tmp_path: Path) -> None:
    """A notification verified for one environment carrying another's asset_id and version: every
    action of the second was recorded 'skipped: already ok', and no call was made."""
    (tmp_path / "rules.yaml").write_text(RULES)
    harness = Harness(redis_conn, load_ruleset(tmp_path))
    harness.run()  # test-cloud's shoe, asset_id id-shoe, version 1
    made = len(harness.client.calls)
    elsewhere = Envelope("n-other", harness.clock(), "other-cloud", SHOE)
    outcomes = harness.executor.execute(elsewhere, decide(harness.rules, elsewhere))
    assert "skipped" not in {o.status for o in outcomes}
    assert len(harness.client.calls) == 2 * made
    ours = history.read(redis_conn, "shoe", ["test-cloud"])
    theirs = history.read(redis_conn, "shoe", ["other-cloud"])
    assert {e["notification"] for e in ours} == {"n1"} and {e["notification"] for e in theirs} == {"n-other"}
    # No spelling of a public_id reaches another environment's asset.
    assert history.read(redis_conn, "other-cloud/shoe", ["test-cloud"]) == []


def test_a_copy_of_a_job_neither_repeats_nor_undoes_the_originals_call(harness: Harness) -> None:
    """Two jobs of one notification at once (the copy a deferral scheduled, and RQ's retry of the
    original): claims are by job, so the copy leaves the call to the original, and its failure lets
    go only of its own claims, never of the mark the original wrote meanwhile (a third call came of it)."""
    envelope = Envelope("n1", harness.clock(), "test-cloud", SHOE)
    planned = decide(harness.rules, envelope)
    copy: list[list[Any]] = []

    def meanwhile(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "explicit" and not copy:  # the original's call is in flight
            copy.append(harness.executor.execute(envelope, planned, "n1-at-123"))

    harness.client.fail = meanwhile
    harness.executor.execute(envelope, planned, "n1")
    (beside,) = copy
    assert {o.status for o in beside} == {"skipped"}
    assert {o.detail["detail"] for o in beside} == {"being made by job n1"}
    assert harness.client.endpoints() == ["explicit", "context", "update"]
    # The copy's own claim on a call the original has not reached is let go only if still its own.
    (explicit,) = [call for call in planned.calls if call.endpoint == "explicit"]
    mark = json.loads(harness.connection.get(keys.done(explicit.key)) or "{}")
    assert mark["status"] == "ok" and mark["by"] == "n1"
    harness.client.fail = None
    again = harness.executor.execute(envelope, planned, "n1-at-456")
    assert {o.status for o in again} == {"skipped"} and len(harness.client.calls) == 3


def test_a_failed_call_lets_go_of_its_claim_only_while_it_is_still_its_own(harness: Harness) -> None:
    """A claim outlived (CLAIM_TTL) while its call hung, and another job made the call and marked it:
    the first job's failure afterwards must leave that mark, or the call is made a third time."""
    envelope = Envelope("n1", harness.clock(), "test-cloud", SHOE)
    planned = decide(harness.rules, envelope)
    (explicit,) = [call for call in planned.calls if call.endpoint == "explicit"]
    other = json.dumps({"status": "ok", "at": harness.clock(), "by": "another-job"})

    def taken_over_then_failed(endpoint: str, call: dict[str, Any]) -> None:
        if endpoint == "explicit":
            harness.connection.set(keys.done(explicit.key), other)
            raise ActionError("Cloudinary call failed: timeout", permanent=False, reason="timeout")

    harness.client.fail = taken_over_then_failed
    harness.executor.execute(envelope, planned, "n1")
    assert harness.connection.get(keys.done(explicit.key)) == other.encode()


def test_the_loop_guard_counts_only_what_our_api_key_or_nobody_said_caused(
    redis_conn: redis.Redis, tmp_path: Path
) -> None:
    """A user in the Console, or another API key, may change an asset all day: that is no loop. What
    this deployment's key caused, and what comes without triggered_by, is counted."""
    (tmp_path / "rules.yaml").write_text(RULES)
    harness = Harness(redis_conn, load_ruleset(tmp_path), cap=5)
    for version in range(1, 5):  # 4 notifications of 5 actions each: 20 actions, none counted
        others = harness.run(notification_id=f"ui-{version}", version=version, **by("ui", "user-1"))
        assert "capped" not in {o["status"] for o in others}
    another = harness.run(notification_id="app-5", version=5, **by("api", "999888777666555"))
    assert "capped" not in {o["status"] for o in another}
    ours = harness.run(notification_id="own-6", version=6, **by("api", OUR_KEY))
    assert [o["status"] for o in ours].count("capped") == 0  # 5 actions: the first 5 counted
    untold = harness.run(notification_id="untold-7", version=7)
    assert {o["status"] for o in untold} == {"capped"}  # counted: nobody said who caused it
    story = history.read(redis_conn, "shoe", ["test-cloud"])
    told = [e["origin"] for e in story if e["event"] == "notification"]
    assert told == ["other"] * 5 + ["own", "untold"]

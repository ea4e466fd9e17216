"""Previews of a rule edit: notifications kept (bounded), and `rules diff` on them."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner

from postupload.cli import main
from postupload.config import Settings
from postupload.core.envelope import Envelope
from postupload.rules.loading import load_ruleset
from postupload.rules.preview import diff, render
from postupload.store import keys
from postupload.store.kept_notifications import Keep, keep_copy, latest, trim_to_memory
from postupload.web.app import create_app
from tests.conftest import ACCOUNT, signed_headers, wait_until

LIVE = """rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_200"}
  - name: sku
    match: {tags: [sku]}
    actions:
      - tags: {add: [has-sku]}
"""
CANDIDATE = """rules:
  - name: thumbs
    match: {public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
  - name: banners
    match: {public_id: [{prefix: banners/}]}
    actions:
      - context: {set: {kind: banner}}
"""


def ruleset(tmp_path: Path, name: str, text: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "rules.yaml").write_text(text)
    return directory


def upload(public_id: str, *tags: str) -> dict[str, object]:
    return {
        "notification_type": "upload",
        "public_id": public_id,
        "resource_type": "image",
        "type": "upload",
        "tags": list(tags),
    }


SAMPLE = [upload(f"products/{n}") for n in range(5)] + [
    upload("banners/1"),
    upload("banners/2", "sku"),
    upload("other/1", "sku"),
    upload("other/2"),
]


def test_the_diff_counts_matches_per_rule_and_names_each_call_added_removed_or_changed(
    tmp_path: Path,
) -> None:
    live = load_ruleset(ruleset(tmp_path, "live", LIVE))
    candidate = load_ruleset(ruleset(tmp_path, "candidate", CANDIDATE))
    report = diff(live, candidate, [Envelope.of(f"n{i}".encode(), body, "") for i, body in enumerate(SAMPLE)])
    counts = {count.rule: (count.before, count.after, count.status) for count in report.rules}
    assert counts == {
        "thumbs": (5, 5, "same"),
        "sku": (2, 0, "removed"),
        "banners": (0, 2, "added"),
    }
    assert report.notifications == 9 and report.changed == 5 + 2 + 1 and report.differs
    changes = {(str(c.change), c.endpoint, c.rules): c for c in report.calls}
    changed = changes[("changed", "explicit", ("thumbs",))]
    assert changed.notifications == 5 and len(changed.examples) == 3
    assert changed.examples[0]["before"]["params"] == {"eager": "c_scale,w_200"}
    assert changed.examples[0]["after"]["params"] == {"eager": "c_scale,w_300"}
    assert changes[("added", "context", ("banners",))].notifications == 2
    removed = changes[("removed", "tags", ("sku",))]
    assert removed.notifications == 2 and removed.examples[0]["public_ids"] == ["banners/2"]
    text = "\n".join(render(report))
    assert "  - sku      2 -> 0  (removed)\n  + banners  0 -> 2  (added)\n  1 rule matches the same" in text
    assert "changed in 5 notifications: explicit (rule thumbs)" in text
    assert 'products/0: {"eager": "c_scale,w_200"} -> {"eager": "c_scale,w_300"}' in text


def test_the_same_rules_change_nothing(tmp_path: Path) -> None:
    live = load_ruleset(ruleset(tmp_path, "live", LIVE))
    report = diff(live, live, [Envelope.of(f"n{i}".encode(), body, "") for i, body in enumerate(SAMPLE)])
    assert not report.differs and report.changed == 0 and not report.calls
    assert render(report)[-1] == "Nothing would change."


def test_notifications_are_kept_newest_first_within_both_bounds(redis_conn: redis.Redis) -> None:
    keep = Keep(count=200, days=7)
    now = time.time()
    for number in range(1500):
        envelope = Envelope(f"n{number}", now, "cloud", dict(upload(f"a/{number}")))
        with redis_conn.pipeline() as pipe:
            keep_copy(pipe, envelope, keep, now)
            pipe.execute()
    kept = redis_conn.xlen(keys.RECORDED)
    assert 200 <= kept < 200 + 200  # approximate: whole blocks of about 100 go at once
    newest = latest(redis_conn, 3)
    assert [envelope.notification["public_id"] for envelope in newest] == ["a/1499", "a/1498", "a/1497"]
    # A week later, every entry is past the age bound: the next one recorded is all that is kept.
    later = Envelope("late", now, "cloud", dict(upload("a/late")))
    with redis_conn.pipeline() as pipe:
        keep_copy(pipe, later, keep, now + 8 * keys.DAY)
        pipe.execute()
    assert [envelope.id for envelope in latest(redis_conn)] == []  # its own id is older than the cut
    # POSTUPLOAD_PREVIEW_KEEP=0 keeps none.
    with redis_conn.pipeline() as pipe:
        keep_copy(pipe, later, keep, now)
        keep_copy(pipe, later, Keep(count=0), now)
        pipe.execute()
    assert redis_conn.xlen(keys.RECORDED) == 1  # the first only


def test_kept_notifications_are_bounded_by_memory_whatever_their_size(redis_conn: redis.Redis) -> None:
    """A count alone bounds nothing: Cloudinary's largest notifications (a delete of 1,000 assets)
    are about 250 KiB. Once a minute, the stream is trimmed to its memory, the newest kept."""
    keep = Keep(count=10_000, days=7, megabytes=1.0)
    now = time.time()
    big = dict(upload("big"), tags=["t" * 200] * 100)  # about 21 KiB each
    for number in range(120):  # 2.5 MiB in all
        envelope = Envelope(f"n{number}", now, "cloud", {**big, "public_id": f"big/{number}"})
        with redis_conn.pipeline() as pipe:
            due = keep_copy(pipe, envelope, keep, now + number)  # once a minute: at 0 and 60 s
            pipe.execute()
        if due:
            trim_to_memory(redis_conn, keep)
    assert (redis_conn.memory_usage(keys.RECORDED, samples=0) or 0) > 2**20  # a minute's arrivals since
    keep.trimmed_at = float("-inf")
    with redis_conn.pipeline() as pipe:
        last = Envelope("last", now, "cloud", {**big, "public_id": "big/last"})
        assert keep_copy(pipe, last, keep, now + 120)
        pipe.execute()
    trim_to_memory(redis_conn, keep)
    assert (redis_conn.memory_usage(keys.RECORDED, samples=0) or 0) <= 2**20
    kept = [envelope.notification["public_id"] for envelope in latest(redis_conn, 2)]
    assert kept == ["big/last", "big/119"], kept
    length = redis_conn.xlen(keys.RECORDED)
    assert 20 <= length <= 60, length  # of 121: about 1 MiB of 21 KiB entries


def test_rules_diff_on_what_the_web_received(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    live_dir = ruleset(tmp_path, "live", LIVE)
    candidate_dir = ruleset(tmp_path, "candidate", CANDIDATE)
    client = create_app(replace(settings, rules_dir=live_dir), redis_conn).test_client()
    for body in SAMPLE:
        raw = json.dumps(body).encode()
        assert client.post("/webhooks/cloudinary", data=raw, headers=signed_headers(raw)).status_code == 200
    raw = json.dumps(SAMPLE[0]).encode()
    client.post("/webhooks/cloudinary", data=raw, headers=signed_headers(raw))  # a duplicate: kept once
    assert redis_conn.xlen(keys.RECORDED) == len(SAMPLE)
    env = {"REDIS_URL": settings.redis_url or "", "CLOUDINARY_URL": ACCOUNT.to_url()}

    def rules_diff(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["rules", "diff", *args], env=env)
        return result.exit_code, result.output

    code, output = rules_diff(str(candidate_dir), "--against", str(live_dir))
    assert code == 2, output
    assert output.startswith("9 recorded notifications; 8 would cause different calls.")
    code, output = rules_diff(
        str(candidate_dir), "--against", str(live_dir), "--recent", "2", "--format", "json"
    )
    report = json.loads(output)
    assert code == 2 and report["notifications"] == 2  # the latest two: other/2 and other/1
    assert report["format_version"] == 1 and report["cost"]["admin_budget_per_hour"] == 2000
    assert [(c["change"], c["endpoint"]) for c in report["calls"]] == [("removed", "tags")]
    assert rules_diff(str(live_dir), "--against", str(live_dir))[0] == 0
    # --format github: each rule whose matches or calls change, at its line in the candidate
    result = CliRunner().invoke(
        main, ["rules", "diff", str(candidate_dir), "--against", str(live_dir), "--format", "github"], env=env
    )
    assert result.exit_code == 2
    annotations = result.stdout.splitlines()
    assert [line.split("::")[1] for line in annotations] == [
        f"warning file={candidate_dir}/rules.yaml,line=2,title=rules diff",  # thumbs: its eager changed
        "warning title=rules diff",  # sku: removed, so on no line of the candidate
        f"warning file={candidate_dir}/rules.yaml,line=6,title=rules diff",  # banners: added
        "notice title=rules diff cost",  # what the change spends (sent within a minute: no hourly rate)
    ]
    assert "rule banners (added): matches 0 -> " in annotations[2]
    # The same diff in a rules repository's CI, on notifications exported from production: no Redis
    exported = CliRunner().invoke(main, ["notifications", "export"], env=env)
    assert exported.exit_code == 0 and len(exported.stdout.splitlines()) == len(SAMPLE)
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text(exported.stdout)
    away = {**env, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing answers there: never asked
    from_file = CliRunner().invoke(
        main,
        ["rules", "diff", str(candidate_dir), "--against", str(live_dir), "--notifications", str(recorded)],
        env=away,
    )
    assert (from_file.exit_code, from_file.stdout) == rules_diff(
        str(candidate_dir), "--against", str(live_dir)
    )
    recorded.write_text(exported.stdout + "not json\n")
    broken = CliRunner().invoke(
        main, ["rules", "diff", str(candidate_dir), "--notifications", str(recorded)], env=away
    )
    assert broken.exit_code == 1
    assert (
        f"{recorded}:{len(SAMPLE) + 1}: not a notification of `postupload notifications export`"
        in broken.output
    )
    (candidate_dir / "rules.yaml").write_text(CANDIDATE.replace("prefix", "prefx"))
    code, output = rules_diff(str(candidate_dir), "--against", str(live_dir))
    assert code == 1 and "unknown operator 'prefx'" in output


def _console_after_sample(
    settings: Settings, directory: Path, redis_conn: redis.Redis
) -> tuple[Any, dict[str, str]]:
    """A test client of the web running `directory`'s rules, once SAMPLE was delivered to it, and the
    console's Authorization header."""
    token = "console-token-for-tests-0123456789"
    client = create_app(replace(settings, rules_dir=directory, console_token=token), redis_conn).test_client()
    for body in SAMPLE:
        raw = json.dumps(body).encode()
        client.post("/webhooks/cloudinary", data=raw, headers=signed_headers(raw))
    return client, {"Authorization": f"Bearer {token}"}


def test_the_console_previews_the_rules_on_disk_against_the_running_set(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    directory = ruleset(tmp_path, "on-disk", LIVE)
    (directory / "tests").mkdir()
    client, bearer = _console_after_sample(settings, directory, redis_conn)
    page = client.get("/console/preview", headers=bearer).get_data(as_text=True)
    assert "are the ones running" in page and "No call would change." in page
    # An edit whose test fails is kept out, and the preview shows what it would change.
    (directory / "rules.yaml").write_text(CANDIDATE)
    (directory / "tests" / "t.yaml").write_text(
        "tests:\n  - name: sku tagged\n    notification: {notification_type: upload, public_id: x,"
        " resource_type: image, type: upload, tags: [sku]}\n    expect: {rules: [sku]}\n"
    )

    def kept_out() -> str | None:
        page = str(client.get("/console/preview", headers=bearer).get_data(as_text=True))
        return page if "Kept out:" in page else None

    # The running set looks at its files again now and then: until it does, nothing is kept out.
    page = wait_until(kept_out, 10)
    assert page, "the edit was never looked at"
    assert "Kept out:" in page and "rule test &#39;sku tagged&#39; fails" in page
    assert "<strong>9</strong> recorded notifications; <strong>8</strong> would cause different calls" in page
    assert "explicit</code> (rule thumbs)" in page and "c_scale,w_300" in page
    # ...and what it would cost (the notifications came within a minute: counts, not an hourly rate)
    assert "Cost over these 9 notifications" in page and "test-cloud: " in page
    assert "-2 tag changes (batched" in page and "+2 Upload API calls" in page  # sku out, banners in
    (directory / "rules.yaml").write_text("rules: [")
    page = client.get("/console/preview", headers=bearer).get_data(as_text=True)
    assert "are not a valid rule set" in page


def test_the_cost_of_a_change_at_the_recorded_rate_against_the_admin_budget(tmp_path: Path) -> None:
    """120 uploads over two hours; the candidate adds a moderation call (Admin API), an add-on of two
    taggers and a second eager transformation per upload: +60 Admin API calls an hour (3% of 2,000),
    +120 add-on uses, +60 eager transformations; with a budget of 50 the candidate would spend it."""
    from dataclasses import replace as changed

    from postupload.core.envelope import Envelope
    from postupload.rules.cost import render as render_cost
    from postupload.rules.loading import load_ruleset

    live = load_ruleset(ruleset(tmp_path, "live", LIVE))
    candidate = load_ruleset(
        ruleset(
            tmp_path,
            "candidate",
            LIVE.replace('"c_scale,w_200"', '"c_scale,w_200|c_scale,w_400"')
            + "  - name: review\n    match: {public_id: [{prefix: products/}]}\n    actions:\n"
            + "      - moderation: {status: approved}\n"
            + "      - addon: {categorization: 'google_tagging,imagga_tagging'}\n",
        )
    )
    envelopes = []
    for number in range(120):
        body = {
            "notification_type": "upload",
            "public_id": f"products/{number}",
            "resource_type": "image",
            "type": "upload",
            "asset_id": f"{number:032x}",
        }
        envelope = Envelope.of(json.dumps(body).encode(), body, "test-cloud")
        envelopes.append(changed(envelope, received_at=1_700_000_000 + number * 60.5))  # 2 hours

    report = diff(live, candidate, envelopes, admin_budget=2000).cost
    (entry,) = report.environments
    assert (entry.before.admin, entry.after.admin) == (0, 120)
    assert (entry.before.eager, entry.after.eager) == (120, 240)
    assert (entry.before.addons, entry.after.addons) == (0, 240)
    lines = render_cost(report)
    assert lines[0] == "Cost at the recorded rate (120 notifications in 2.0 h):"
    assert "+60 Admin API calls an hour: 3% of the 2,000 budget" in lines[1]
    assert (
        "+60 eager transformations (billed) an hour" in lines[1]
        and "+120 add-on uses (billed) an hour" in lines[1]
    )
    assert report.over_budget() == []
    tight = diff(live, candidate, envelopes, admin_budget=50).cost
    assert tight.over_budget() == ["test-cloud"]
    assert render_cost(tight)[-1].startswith(
        "warning: test-cloud: the candidate would spend 60 Admin API calls an hour"
    )


def test_once_a_change_is_live_the_console_offers_to_replay_the_recorded_notifications(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis
) -> None:
    from postupload.store.queue import notification_queue

    client, bearer = _console_after_sample(settings, ruleset(tmp_path, "on-disk", LIVE), redis_conn)
    page = client.get("/console/preview", headers=bearer).get_data(as_text=True)
    assert 'id="replay-form"' in page and 'id="replay-start"' not in page
    dry = client.get("/console/preview?replay=dry-run&since=6h&uploads=1&rule=thumbs", headers=bearer)
    page = dry.get_data(as_text=True)
    assert "<strong>9</strong> notifications recorded from" in page
    assert "<strong>5</strong> <code>explicit (rule thumbs)</code> calls" in page and "has-sku" not in page
    assert 'id="replay-start"' in page and '<input type="hidden" name="rule" value="thumbs">' in page
    assert notification_queue(redis_conn).count == len(SAMPLE)  # a dry run queues nothing
    wrong = client.get("/console/preview?replay=dry-run&since=1y", headers=bearer).get_data(as_text=True)
    assert "since &#39;1y&#39;: choose one of 1h, 6h, 24h, 7d" in wrong
    started = client.post(
        "/console/replay", data={"since": "6h", "uploads": "1", "rule": "thumbs"}, headers=bearer
    )
    assert started.status_code == 303 and started.headers["Location"].endswith("/console/backfills")
    queue = notification_queue(redis_conn)
    replayed = [job for job in queue.get_jobs() if job.args[0].get("backfill")]
    assert len(replayed) == len(SAMPLE) and all(job.args[0]["only_rules"] == ["thumbs"] for job in replayed)
    listed = client.get("/console/backfills", headers=bearer).get_data(as_text=True)
    assert "replay of the notifications of type upload recorded from" in listed and ", rules thumbs" in listed
    refused = client.post("/console/replay", data={"since": "6h", "rule": "nope"}, headers=bearer)
    assert refused.status_code == 400 and "no rule named nope is running" in refused.get_data(as_text=True)

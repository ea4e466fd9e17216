"""Replays: the notifications recorded in a window, run again through the current rules, each effect
once; a stopped replay goes on from its checkpoint."""

from __future__ import annotations

import datetime
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from postupload.backfill.replay import DELETED, OVERWRITTEN, RENAMED, Replay, Supersession, job, moment
from postupload.core.envelope import Envelope
from postupload.store import history, keys
from postupload.store.kept_notifications import latest
from postupload.store.queue import notification_queue
from tests.conftest import ACCOUNT, Stack, wait_until

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - 86400),
        ("90m", NOW - 5400),
        ("1d12h", NOW - 129600),
        ("2w", NOW - 14 * 86400),
        ("2026-12-05", NOW - 86400 - 12 * 3600),
        ("2026-12-06T10:30", NOW - 5400),
        ("2026-12-06T10:30Z", NOW - 5400),
        ("2026-12-06T11:30:00+01:00", NOW - 5400),
        ("0h", NOW),
        ("0001-01-01", 0.0),  # nothing is recorded before 1970: everything kept
        ("99999999999w", 0.0),
        ("9" * 400 + "w", 0.0),
    ],
)
def test_a_time_is_a_time_ago_or_iso_8601_in_utc_unless_told(text: str, expected: float) -> None:
    assert moment(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "24", "h24", "24h ago", "2026-13-01", "1d 2h"])
def test_what_is_not_a_time_says_which_forms_are(text: str) -> None:
    with pytest.raises(ValueError, match=r"give a time ago .24h, 90m, 7d, 1d12h. or an ISO 8601"):
        moment(text, NOW)


def test_an_empty_window_is_refused_and_the_same_arguments_are_the_same_replay() -> None:
    with pytest.raises(ValueError, match="the window is empty: 2026-12-06 11:00:00 UTC is not before"):
        Replay("1h", "2h").window(NOW)
    assert Replay("30d").window(NOW, oldest=NOW - 86400).since == NOW - 86400  # cut to `oldest`
    with pytest.raises(ValueError, match="the window is empty"):
        Replay("30d", "20d").window(NOW, oldest=NOW - 86400)
    assert Replay("24h", rules=("a", "b")).key == Replay("24h", rules=("b", "a")).key
    assert Replay("24h").key != Replay("25h").key and Replay("24h").key.startswith("replay-")


def _envelope(notification: dict[str, Any], id: str = "n1", cloud: str = "demo") -> Envelope:
    return Envelope(id, 1.0, cloud, notification)


def _upload(public_id: str, version: int, **fields: Any) -> dict[str, Any]:
    return {"notification_type": "upload", "public_id": public_id, "version": version, **fields}


def test_a_replayed_notification_keeps_its_id_for_its_calls_and_gets_a_job_of_its_own() -> None:
    """Calls of a notification without a version are keyed by its id: a replay that changed it would
    make them again."""
    recorded = _envelope({"notification_type": "resource_tags_changed"}, id="abc")
    job_id, replayed = job(Replay("1h", rules=("r",)), recorded, "run-1", NOW)
    assert replayed.id == "abc" and replayed.notification == recorded.notification
    assert job_id != "abc" and replayed.received_at == NOW
    assert replayed.only_rules == ("r",) and replayed.run_kind == "replay"
    assert job(Replay("1h", rules=("r",)), recorded, "run-2", NOW)[0] != job_id  # a new run: new jobs


def test_an_upload_is_superseded_by_a_later_version_a_delete_or_a_rename_of_its_asset() -> None:
    recorded = [
        ("1000-0", _envelope(_upload("a", 1))),
        ("1000-1", _envelope(_upload("b", 1))),
        ("1001-0", _envelope(_upload("c", 1))),
        ("1002-0", _envelope(_upload("d", 1))),
        ("1003-0", _envelope(_upload("e", 1, resource_type="video"))),
        ("1003-1", _envelope(_upload("f", 1), cloud="other")),
        ("2000-0", _envelope(_upload("a", 2))),
        ("2000-1", _envelope({"notification_type": "delete", "resources": [{"public_id": "b"}]})),
        ("2001-0", _envelope({"notification_type": "rename", "from_public_id": "c", "to_public_id": "x"})),
        ("2002-0", _envelope(_upload("d", 1))),  # the same version notified again
        ("2003-0", _envelope(_upload("e", 2))),  # an image "e": another asset
        ("2003-1", _envelope(_upload("f", 2))),  # "f" in demo: another asset
    ]
    supersession = Supersession()
    for entry, envelope in reversed(recorded):  # the order they are told in does not matter
        supersession.add(entry, envelope)
    fates = {
        envelope.notification["public_id"]: supersession.fate(entry, envelope)
        for entry, envelope in recorded[:6]
    }
    assert fates == {"a": OVERWRITTEN, "b": DELETED, "c": RENAMED, "d": None, "e": None, "f": None}
    assert supersession.fate("2000-0", recorded[6][1]) is None  # the last version is replayed


RULES = """
rules:
  - name: seen
    match: {notification_type: [upload]}
    actions:
      - tags: {add: [seen]}
"""

ADDED = """
  - name: thumbnails
    match: {notification_type: [upload], public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
"""


def replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.cli("replay", *args)


def _effects(stack: Stack) -> Counter[str]:
    """Calls Cloudinary took effect of, by endpoint."""
    return Counter(call["endpoint"] for call in stack.calls() if call["status"] == 200 or call.get("fault"))


def test_a_rule_added_today_acts_on_the_recorded_uploads_once_as_the_dry_run_says(make_stack: Any) -> None:
    import cloudinary.api
    import cloudinary.uploader

    stack: Stack = make_stack(RULES)
    stack.start_workers(1)
    for n in range(6):
        stack.upload(public_id=f"products/p{n}")
    stack.upload(public_id="other/o1")
    assert wait_until(lambda: len(stack.calls("tags")) >= 1 and stack.idle(), 30)
    # What happened since: p4 was overwritten, p5 deleted, o1 renamed.
    stack.upload(public_id="products/p4")
    options = stack.emulator.sdk()
    cloudinary.uploader.destroy("products/p5", **options)
    cloudinary.uploader.rename("other/o1", "other/o2", **options)
    kinds = lambda: Counter(e.notification_type for e in latest(stack.redis))  # noqa: E731
    assert wait_until(lambda: kinds()["upload"] == 8 and kinds()["delete"] == kinds()["rename"] == 1, 20)
    assert wait_until(stack.idle, 30)
    tagged = _effects(stack)["tags"]
    rules = Path(stack.processes.env["POSTUPLOAD_RULES_DIR"]) / "rules.yaml"
    rules.write_text(RULES + ADDED)
    assert wait_until(lambda: stack.processes.output().count(" loaded from ") >= 2, 10)
    before = _effects(stack)

    dry = replay(stack, "--since", "1h", "--type", "upload", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # Besides the 10 above, tag changes the calls made were notified too: read, and not uploads.
    assert "5 wanted (1 deleted, 1 overwritten, 1 renamed since: left out)" in dry.stdout, dry.stdout
    assert "rule thumbnails: would act on 5 notifications" in dry.stdout  # p0-p3 and p4's new version
    assert "5 explicit (rule thumbnails) calls, e.g." in dry.stdout, dry.stdout
    assert "0 tags (rule seen) calls (5 more made already: skipped)" in dry.stdout, dry.stdout
    assert notification_queue(stack.redis).count == 0 and not stack.redis.exists(keys.BACKFILLS)

    run = replay(stack, "--since", "1h", "--type", "upload")
    assert run.returncode == 0, run.stdout + run.stderr
    counts = re.search(r"(\d+) read, 5 queued, (\d+) not wanted, 3 superseded, 5 done, 0 failed", run.stdout)
    assert counts and int(counts[1]) - int(counts[2]) == 8, run.stdout  # the uploads
    assert wait_until(stack.idle, 30)
    assert _effects(stack) - before == Counter({"explicit": 5})  # what the dry run said, nothing else
    assert _effects(stack)["tags"] == tagged
    assets = stack.assets()
    assert [name for name, asset in sorted(assets.items()) if asset["derived"]] == [
        f"products/p{n}" for n in range(5)
    ]
    story = history.read(stack.redis, "products/p0", [ACCOUNT.cloud_name])
    (replayed,) = [entry for entry in story if entry.get("replay")]
    assert replayed["rules"] == ["seen", "thumbnails"] and replayed["replay"].startswith("replay-")
    shown = stack.cli("history", "products/p0")
    assert "upload notification (replay)" in shown.stdout, shown.stdout

    # A finished replay run again is done again, and every call is made already.
    again = replay(stack, "--since", "1h", "--type", "upload", "--rule", "thumbnails")
    assert again.returncode == 0 and "5 queued" in again.stdout, again.stdout
    assert wait_until(stack.idle, 30)
    assert _effects(stack) - before == Counter({"explicit": 5})

    wrong = replay(stack, "--since", "yesterday")
    assert wrong.returncode == 2 and "--since" in wrong.stderr and "'yesterday' is not a time" in wrong.stderr
    unknown = replay(stack, "--since", "1h", "--rule", "nope")
    assert unknown.returncode == 1 and "no rule named nope; the rules are: seen, thumbnails" in unknown.stderr
    older = replay(stack, "--since", "7d12h", "--dry-run")  # 7 days are kept: older ones are gone
    assert older.returncode == 0 and "note: the oldest notification kept is from" in older.stderr
    # Past the done marks' 8 days, a replay would make every call again: it goes back no further.
    marks = replay(stack, "--since", "30d", "--dry-run")
    assert (
        marks.returncode == 0
        and "are left out: the marks that keep each of their calls single" in marks.stderr
    )
    gone = replay(stack, "--since", "30d", "--until", "20d")
    assert gone.returncode == 2 and "the window is empty" in gone.stderr
    assert "note:" not in dry.stderr  # a day ago: everything since is kept
    everything = replay(stack, "--since", "0001-01-01", "--type", "upload", "--dry-run")  # all kept
    assert everything.returncode == 0 and "5 wanted (1 deleted" in everything.stdout, everything.stderr
    empty = replay(stack, "--since", "1h", "--until", "2h")
    assert empty.returncode == 2 and "the window is empty" in empty.stderr


def test_a_stopped_replay_goes_on_from_its_checkpoint_and_queues_each_notification_once(
    redis_conn: Any,
) -> None:
    from postupload.backfill.runner import Progress, Replayer
    from postupload.store.kept_notifications import Keep, keep_copy

    keep = Keep()
    with redis_conn.pipeline() as pipe:
        for n in range(7):
            keep_copy(pipe, _envelope(_upload(f"p{n}", 1), id=f"n{n}"), keep, 0)
        pipe.execute()
    queue = notification_queue(redis_conn)
    pages: list[int] = []

    def stop_after_two_pages(progress: Progress) -> None:
        pages.append(progress.queued)
        if len(pages) == 2:
            raise KeyboardInterrupt

    asked = Replay("1h")
    first = Replayer(redis_conn, queue, report=stop_after_two_pages, page_size=3)
    bound, progress = first.bind(asked)
    with pytest.raises(KeyboardInterrupt):
        first.run(bound, progress)
    assert queue.count == 6
    second = Replayer(redis_conn, queue, page_size=3, clock=lambda: bound.window.until + 3600)
    resumed, progress = second.bind(asked)  # an hour later: the same window, from the checkpoint
    assert resumed.window == bound.window and progress.queued == 6
    progress = second.run(resumed, progress)
    assert progress.queued == 7 and progress.listed == 7 and progress.state == "queued"
    jobs = queue.get_jobs()
    assert sorted(job.args[0]["id"] for job in jobs) == [f"n{n}" for n in range(7)]
    assert all(job.args[0]["backfill"] == asked.key for job in jobs)


def test_a_replay_under_rule_files_the_workers_keep_out_is_refused(tmp_path: Path) -> None:
    """The workers would run the last good set, not these files: the replay says so, and never
    reaches Redis."""
    from click.testing import CliRunner

    from postupload.cli import main

    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(
        "tests:\n  - name: uploads are seen\n    notification: {notification_type: upload, public_id: x}\n"
        "    expect: {rules: [nothing]}\n"
    )
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "CLOUDINARY_URL": ACCOUNT.to_url()}
    result = CliRunner().invoke(main, ["replay", "--since", "1h", "--rules", str(tmp_path)], env=env)
    assert result.exit_code == 1, result.output
    assert "the workers keep these rule files out (" in result.output and "uploads are seen" in result.output
    assert "fix them first" in result.output


def test_a_redis_that_refuses_a_command_is_told_apart_from_one_that_does_not_answer(
    redis_server: Any, redis_conn: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from postupload.cli import main

    (tmp_path / "rules.yaml").write_text(RULES)
    redis_conn.set(keys.RECORDED, "not a stream")  # WRONGTYPE for the stream commands
    env = {"REDIS_URL": redis_server.url, "CLOUDINARY_URL": ACCOUNT.to_url()}
    args = ["replay", "--since", "1h", "--dry-run", "--rules", str(tmp_path)]
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code == 1 and "Redis (REDIS_URL) refused a command: WRONGTYPE" in refused.output
    away = CliRunner().invoke(main, args, env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert away.exit_code == 1 and "Redis (REDIS_URL) does not answer" in away.output

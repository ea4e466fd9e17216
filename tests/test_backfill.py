"""Backfills: existing assets listed through the SDK against the emulator, queued, worked once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from postupload.backfill.events import AssetSource, Backfill, as_notification
from postupload.emulator import Emulator
from postupload.emulator.wire import ApiError
from postupload.store import history, keys
from postupload.store.queue import notification_queue
from tests.conftest import ACCOUNT, ROOT, Stack, wait_until

RULES = """
rules:
  - name: thumbnails
    match: {resource_type: image, public_id: [{prefix: products/}]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
      - tags: {add: [backfilled]}
  - name: live-only
    match: {resource_type: image, backfill: [{exists: false}]}
    actions:
      - context: {set: {seen: "yes"}}
"""


def test_listing_pages_by_prefix_tag_and_search_through_the_sdk(make_stack: Any) -> None:
    import cloudinary.api
    import cloudinary.search

    stack: Stack = make_stack(RULES)
    stack.emulator.service.preload(1200)
    options = stack.emulator.sdk()
    seen: list[str] = []
    cursor = None
    while True:
        page = cloudinary.api.resources(
            type="upload", prefix="products/", max_results=500, next_cursor=cursor, **options
        )
        seen += [resource["public_id"] for resource in page["resources"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 1200 and seen == sorted(seen)
    tagged = cloudinary.api.resources_by_tag("sale", max_results=500, tags=True, **options)
    assert len(tagged["resources"]) == 400 and all("sale" in r["tags"] for r in tagged["resources"])
    found = (
        cloudinary.search.Search().expression("tags:sale AND width>=1990").max_results(500).execute(**options)
    )
    assert found["total_count"] == sum(1 for n in range(1200) if n % 3 == 0 and 800 + n % 1600 >= 1990)
    either = (
        cloudinary.search.Search().expression("public_id:products/00000* OR (width<801)").execute(**options)
    )
    assert either["total_count"] == 10  # products/000000-000009; width 800 is products/000000
    assert found.rate_limit_remaining < found.rate_limit_allowed  # listing counts against the budget


@pytest.mark.parametrize("expression", ["tags:", "width>>3", "(tags:a", "colour:red"])
def test_a_search_expression_that_cannot_be_read_is_a_400(expression: str) -> None:
    from postupload.emulator.listing import search_test

    with pytest.raises(ApiError) as raised:
        search_test(expression)
    assert raised.value.status == 400


def test_an_existing_asset_becomes_an_upload_notification_marked_backfill() -> None:
    emulator = Emulator(ACCOUNT)
    emulator.preload(1)
    (asset,) = emulator.assets.values()
    notification = as_notification(asset.resource(ACCOUNT.cloud_name))
    assert notification["notification_type"] == "upload" and notification["backfill"] is True
    assert notification["public_id"] == "products/000000" and notification["width"] == 800
    assert notification["tags"] == ["product", "sale"] and notification["version"] == asset.version
    assert "derived" not in notification and "addons" not in notification  # the emulator's own
    old = Backfill(AssetSource(prefix="products/"), since="2999-01-01")
    assert not old.wants({"created_at": "2026-01-01T00:00:00Z"})
    assert Backfill(AssetSource(prefix="products/"), since="2026-01-01").wants(
        {"created_at": "2026-01-01T10:00:00Z"}
    )
    assert Backfill(AssetSource(prefix="a")).key == Backfill(AssetSource(prefix="a")).key
    assert Backfill(AssetSource(prefix="a")).key != Backfill(AssetSource(prefix="b")).key


def backfill(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "postupload", "backfill", *args],
        env=stack.processes.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_backfill_by_search_expression_sees_context_as_notifications_carry_it(make_stack: Any) -> None:
    """The Search API answers context flat; the shipped catalog-sku-tag rule matches
    context.custom.sku, as in a live upload notification, and acts on the asset all the same."""
    import cloudinary.search

    stack: Stack = make_stack((ROOT / "rules" / "20-catalog.yaml").read_text())
    stack.emulator.service.add_asset(
        {"public_id": "catalog/rs-1042", "context": {"custom": {"sku": "RS-1042"}}}
    )
    found = cloudinary.search.Search().expression("public_id:catalog/*").with_field("context")
    assert found.execute(**stack.emulator.sdk())["resources"][0]["context"] == {"sku": "RS-1042"}  # flat
    stack.start_workers(1)
    run = backfill(stack, "--expression", "public_id:catalog/*", "--rule", "catalog-sku-tag")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0 and "1 listed, 1 queued" in output, output
    assert wait_until(lambda: "sku-RS-1042" in stack.assets()["catalog/rs-1042"]["tags"], 20), output


def test_a_killed_backfill_resumes_and_every_effect_happens_once(make_stack: Any) -> None:
    # A small Admin budget: listing 3 pages must wait for the window to reset after the second, which
    # leaves the time to kill the backfill half way. Killed while probing the new window, it holds
    # the next run back until the probe expires: the call's timeout and 5 s (it was a minute).
    stack: Stack = make_stack(RULES, {"POSTUPLOAD_API_TIMEOUT": "5"}, admin_budget=2, admin_window=3)
    stack.emulator.service.preload(300)
    stack.start_workers(2)
    first = backfill(stack, "--prefix", "products/", "--no-wait", "--page-size", "100")
    checkpoint = keys.backfill(Backfill(AssetSource(prefix="products/")).key)
    assert wait_until(lambda: int(stack.redis.hget(checkpoint, "pages") or 0) >= 2, 30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stopped_at = int(stack.redis.hget(checkpoint, "pages") or 0)
    assert stopped_at < 3 and stack.redis.hget(checkpoint, "state") == b"listing"
    second = backfill(stack, "--prefix", "products/", "--page-size", "100")
    output, _ = second.communicate(timeout=240)
    assert second.returncode == 0, output
    assert "300 listed, 300 queued, 0 skipped, 300 done, 0 failed" in output, output
    # Listing resumed: no page was asked for twice beyond the one in hand when it was killed.
    pages = [call for call in stack.calls() if call["endpoint"] == "resources"]
    assert len([call for call in pages if call["status"] == 200]) <= 3 + 1
    assert all(call["status"] in (200, 420) for call in pages)
    assert wait_until(stack.idle, 30)
    explicit = Counter(
        call["params"]["public_id"]
        for call in stack.calls("explicit")
        if call["status"] == 200 and call.get("fault") != "timeout"
    )
    assert len(explicit) == 300 and set(explicit.values()) == {1}
    assets = stack.assets()
    assert all(assets[f"products/{n:06d}"]["tags"].count("backfilled") == 1 for n in range(300))
    assert not stack.calls("context")  # the live-only rule leaves backfills out
    # Run again after it finished: nothing is listed or called.
    before = len(stack.calls())
    again = backfill(stack, "--prefix", "products/")
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "300 listed, 300 queued, 0 skipped, 300 done, 0 failed" in output
    time.sleep(1)
    assert len(stack.calls()) == before
    # Each asset's history says the backfill did it.
    (told,) = [
        e for e in history.read(stack.redis, "products/000042", [ACCOUNT.cloud_name]) if e.get("backfill")
    ]
    assert told["backfill"] == Backfill(AssetSource(prefix="products/")).key and told["rules"] == [
        "thumbnails"
    ]


def test_a_dry_run_shows_the_calls_by_rule_and_queues_nothing(make_stack: Any) -> None:
    stack: Stack = make_stack(RULES)
    stack.emulator.service.preload(700)
    run = backfill(stack, "--tag", "sale", "--dry-run", "--rule", "thumbnails")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert "234 assets listed, 234 wanted; nothing queued (dry run)." in output
    assert "rule thumbnails: would act on 234 assets" in output
    assert (
        "234 explicit (rule thumbnails) calls, e.g." in output
        and "234 tags (rule thumbnails) calls" in output
    )
    assert "live-only" not in output
    assert notification_queue(stack.redis).count == 0 and not stack.redis.exists(keys.BACKFILLS)
    unknown = backfill(stack, "--tag", "sale", "--rule", "nope")
    output, _ = unknown.communicate(timeout=30)
    assert unknown.returncode == 1 and "no rule named nope; the rules are: thumbnails, live-only" in output
    both = backfill(stack, "--tag", "sale", "--prefix", "x")
    assert both.wait(30) == 2


def test_the_console_lists_backfills_with_their_counts(settings: Any, redis_conn: Any) -> None:
    from dataclasses import replace

    from postupload.backfill.runner import Checkpoint
    from postupload.web.app import create_app

    job = Backfill(AssetSource(tag="sale"), rules=("thumbnails",))
    checkpoint = Checkpoint(redis_conn, job)
    progress = checkpoint.start(1_700_000_000)
    progress.listed, progress.queued, progress.state = 500, 480, "queued"
    checkpoint.save(progress, 1_700_000_100)
    redis_conn.hincrby(keys.backfill(job.key), "done", 470)
    token = "console-token-for-tests-0123456789"
    client = create_app(replace(settings, console_token=token), redis_conn).test_client()
    page = client.get("/console/backfills", headers={"Authorization": f"Bearer {token}"}).get_data(
        as_text=True
    )
    assert "image/upload assets by tag &#39;sale&#39;, rules thumbnails" in page and job.key in page
    assert "<td>500</td><td>480</td><td>470</td>" in page and "being worked" in page
    redis_conn.hincrby(keys.backfill(job.key), "done", 10)
    page = client.get("/console/backfills", headers={"Authorization": f"Bearer {token}"}).get_data(
        as_text=True
    )
    assert "finished" in page


EDITED = RULES.replace(
    'explicit: {eager: "c_scale,w_300"}', 'explicit: {eager: "c_scale,w_300|c_scale,w_400"}'
)


def _sent(stack: Stack) -> Counter[str]:
    """Calls Cloudinary took effect of (an answer lost after its effect counts too), by endpoint."""
    effects = [call for call in stack.calls() if call["endpoint"] != "resources"]  # listing is no effect
    return Counter(call["endpoint"] for call in effects if call["status"] == 200 or call.get("fault"))


def test_after_a_rule_edit_a_backfill_makes_the_edited_call_once_as_its_dry_run_says(
    make_stack: Any,
) -> None:
    """A call is made once per asset version and what it does: the edited eager is a new call (it was
    silently skipped as 'already ok', and history showed the new eager as made); the unchanged tag
    change is not made again; a second run makes nothing."""
    stack: Stack = make_stack(RULES)
    stack.emulator.service.preload(6)
    stack.start_workers(1)
    first = backfill(stack, "--prefix", "products/")
    assert first.wait(120) == 0 and wait_until(stack.idle, 30)
    assert _sent(stack)["explicit"] == 6
    (Path(stack.processes.env["POSTUPLOAD_RULES_DIR"]) / "rules.yaml").write_text(EDITED)
    before = _sent(stack)
    dry = backfill(stack, "--prefix", "products/", "--dry-run")
    said, _ = dry.communicate(timeout=60)
    assert dry.returncode == 0, said
    assert "6 explicit (rule thumbnails) calls, e.g." in said, said
    assert "0 tags (rule thumbnails) calls (6 more made already: skipped)" in said, said
    # The worker takes the edited set when it next looks at its files: it says so in its log.
    assert wait_until(lambda: stack.processes.output().count(" loaded from ") >= 2, 10), (
        stack.processes.output()
    )
    again = backfill(stack, "--prefix", "products/", "--restart")
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    assert wait_until(stack.idle, 30)
    made = _sent(stack) - before
    assert made == Counter({"explicit": 6}), made  # what the dry run said, and nothing else
    assert all(
        asset["derived"] == ["c_scale,w_300", "c_scale,w_400"]
        for name, asset in stack.assets().items()
        if name.startswith("products/")
    )
    story = history.read(stack.redis, "products/000000", [ACCOUNT.cloud_name])
    explicit = [e for e in story if e["event"] == "action" and e["action"] == "explicit"]
    assert [(e["status"], e["call"]["eager"]) for e in explicit] == [
        ("ok", "c_scale,w_300"),
        ("ok", "c_scale,w_300|c_scale,w_400"),
    ]
    tags = [e for e in story if e["event"] == "action" and e["action"] == "tags"]
    assert tags[-1]["status"] == "skipped" and tags[-1]["relied_on"]["job"]
    # Once more: every call is made already.
    last = _sent(stack)
    third = backfill(stack, "--prefix", "products/", "--restart")
    assert third.wait(120) == 0 and wait_until(stack.idle, 30)
    assert _sent(stack) == last


def test_progress_gives_a_rate_and_an_eta_as_soon_as_a_page_is_worked() -> None:
    """While more pages are listed the total is unknown: the ETA is for what is queued, a floor."""
    from io import StringIO

    from postupload.backfill.runner import Progress
    from postupload.cli.operations import _progress_reporter

    now = [100.0]
    out = StringIO()
    report = _progress_reporter(out, clock=lambda: now[0])
    report(Progress(state="listing", pages=0))
    now[0] += 10
    report(Progress(state="listing", pages=1, listed=500, queued=500, done=200))
    now[0] += 10
    report(Progress(state="queued", pages=3, listed=1200, queued=1200, done=390, failed=10))
    now[0] += 20
    report(Progress(state="done", pages=3, listed=1200, queued=1200, done=1190, failed=10))
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "page 0  listed 0  queued 0  done 0  failed 0  ? assets/s  ETA at least ? (more pages to list)"
    )
    assert lines[1] == (
        "page 1  listed 500  queued 500  done 200  failed 0  20.00 assets/s"
        "  ETA at least 00:15 (more pages to list)"
    )
    assert lines[2] == (
        "[######..............]  33%  listed 1200  queued 1200  done 390  failed 10"
        "  20.00 assets/s  ETA 00:40"
    )
    assert lines[3].endswith("done 1190  failed 10  30.00 assets/s  ETA 00:00")
    assert "\r" not in out.getvalue()  # off a terminal: plain lines, nothing rewritten in place


def test_on_a_terminal_the_progress_is_tqdms_bar_rewritten_in_place() -> None:
    from io import StringIO

    from postupload.backfill.runner import Progress
    from postupload.cli.operations import _progress_reporter

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    report = _progress_reporter(out)
    report(Progress(state="queued", pages=1, listed=10, queued=10, done=4))
    report(Progress(state="done", pages=1, listed=10, queued=10, done=10))
    text = out.getvalue()
    assert "\r" in text and "10/10" in text and "listed 10  queued 10  done 10  failed 0" in text
    assert text.count("\n") <= 1  # one line, rewritten, ended once done


def test_a_resumed_backfills_rate_counts_only_what_is_worked_from_now_on() -> None:
    from io import StringIO

    from postupload.backfill.runner import Progress
    from postupload.cli.operations import _progress_reporter

    now = [0.0]
    out = StringIO()
    report = _progress_reporter(out, clock=lambda: now[0])
    report(Progress(state="queued", listed=1000, queued=1000, done=600))
    now[0] += 10
    report(Progress(state="queued", listed=1000, queued=1000, done=700))
    assert out.getvalue().splitlines()[-1].endswith("done 700  failed 0  10.00 assets/s  ETA 00:30")

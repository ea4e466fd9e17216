"""The console, driven in a real headless Chromium (Debian's chromium and chromium-driver, Selenium)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ACCOUNT, Stack, signed_headers, uploaded_in, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "console-token-for-tests-0123456789"
RULES = """
rules:
  - name: thumbnails
    match: {resource_type: [image]}
    actions:
      - explicit: {eager: "c_scale,w_300"}
      - context: {set: {state: done}}
"""
# `make screenshots` keeps them for docs/operations.md; any other run writes them beside the test's files.
SCREENSHOTS = os.environ.get("POSTUPLOAD_SCREENSHOTS")

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_every_console_route_answers_401_without_the_token(make_stack: Any) -> None:
    stack: Stack = make_stack(RULES, env={"POSTUPLOAD_CONSOLE_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{stack.web.server_port}/console"
    for path in ("/", "/rules", "/playground", "/assets?q=x", "/jobs"):
        assert requests.get(base + path, timeout=5).status_code == 401, path
        wrong = requests.get(base + path, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401, path
        assert requests.get(base + path, headers=_bearer(), timeout=5).status_code == 200, path
    for path in ("/jobs/replay", "/playground", "/logout"):
        assert requests.post(base + path, data={"all": "1"}, timeout=5).status_code == 401, path
    with_cookie = requests.get(base + "/", cookies={"postupload_console": TOKEN}, timeout=5)
    assert with_cookie.status_code == 401  # the cookie holds a value derived from the token, not it


def test_the_console_is_off_without_a_token(make_stack: Any) -> None:
    stack: Stack = make_stack(RULES)
    answer = requests.get(f"http://127.0.0.1:{stack.web.server_port}/console/", timeout=5)
    assert answer.status_code == 404 and "POSTUPLOAD_CONSOLE_TOKEN" in answer.text


@needs_chromium
def test_log_in_look_around_and_replay_a_failed_job_in_chromium(
    make_stack: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    stack: Stack = make_stack(RULES, env={"POSTUPLOAD_CONSOLE_TOKEN": TOKEN})
    stack.start_workers(1)
    base = f"http://127.0.0.1:{stack.web.server_port}/console"
    for number in range(3):
        stack.upload(public_id=f"products/{number}")
    _post(stack, {"notification_type": "upload", "public_id": "late", "resource_type": "image"})
    assert wait_until(lambda: len(stack.failed()) == 1, 20), stack.processes.output()
    assert wait_until(lambda: len(stack.calls("context")) == 4, 20)

    def delivered() -> list[dict[str, Any]]:
        sent = requests.get(f"{stack.emulator.url}/emulator/notifications", timeout=5).json()
        return [entry for entry in sent["notifications"] if 200 in entry["deliveries"]]

    # The uploads, and the context changes Cloudinary tells of, all delivered and worked.
    assert wait_until(lambda: len(delivered()) >= 6 and stack.idle(), 20)
    received = 1 + len(delivered())
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    pages: list[str] = []

    def find(selector: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, selector)

    def seen() -> str:
        """The page's text, once it has loaded."""
        WebDriverWait(browser, 10).until(
            lambda b: b.execute_script("return document.readyState") == "complete"
        )
        pages.append(browser.page_source)
        return str(find("body").text)

    def gone(element: Any) -> Any:
        """True once `element`'s page was replaced. Chromium may say so with a stale reference, or,
        caught mid-navigation on a loaded machine, with "Node ... does not belong to the document",
        which selenium's own `staleness_of` does not take for stale."""

        def check(_: Any) -> bool:
            try:
                element.is_enabled()
            except WebDriverException:  # StaleElementReferenceException is one
                return True
            return False

        return check

    def follow(element: Any) -> str:
        """Click (a link or a form's button), wait for the next page, and read it."""
        page = find("html")
        element.click()
        WebDriverWait(browser, 10).until(gone(page))
        return seen()

    # Log in: a wrong token is refused, the right one lands on the page asked for.
    browser.get(base + "/")
    find("#token").send_keys("not-the-token")
    assert "That is not the token." in follow(find("button[type=submit]"))
    find("#token").send_keys(TOKEN)
    text = follow(find("button[type=submit]"))
    assert browser.current_url.rstrip("/") == base, browser.current_url
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != TOKEN

    # Overview: one worker, one failure (with Cloudinary's answer), every notification this hour.
    assert find("#workers").text == "1" and find("#failed").text == "1"
    assert "Resource not found - late" in find("#failures").text
    # Every notification this hour is counted (a redelivery Cloudinary sent while the web was slow
    # under load is counted too, as it was answered: seen once as 8 for 7).
    shown = re.search(r"Notifications per minute \(last hour: (\d+)\)", text)
    assert shown and int(shown.group(1)) >= received, text[:600]
    # ...and who caused them: the 3 uploads a Console user; the context changes this deployment's
    # API key (its calls); the one posted by hand says nothing.
    origins = re.search(
        r"(\d+) this deployment's API key .*, (\d+) the Console or other API keys, (\d+) not told", text
    )
    assert origins and int(origins[1]) >= received - 4 and (origins[2], origins[3]) == ("3", "1"), text[:900]
    assert find("#rules").text == "1 rule"
    browser.save_screenshot(str(shots / "console-overview.png"))

    # Rules: where each rule is, and how often it matched.
    follow(browser.find_element(By.LINK_TEXT, "Rules"))
    row = find("#rules tr:nth-child(2)")
    assert "thumbnails" in row.text and "rules.yaml:3" in row.text
    # ...each as written in its file, with its line numbers, never broken mid-token, and whether a
    # rule test makes it match (this set has no tests)
    written = find("#rules tr:nth-child(2) pre.written")
    assert written.text.splitlines()[:2] == [
        "   3    - name: thumbnails",
        "   4      match: {resource_type: [image]}",
    ]
    assert browser.execute_script("return getComputedStyle(arguments[0]).whiteSpace", written) == "pre"
    assert find("#rules tr:nth-child(2) .tested").text == "untested"
    assert "Rule tests make 0 of 1 rules match: 0.0%." in find("#coverage").text

    def matches() -> str:  # a worker adds its counts within a second
        browser.refresh()
        return str(find("#rules tr:nth-child(2) .matches").text)

    assert wait_until(lambda: matches() == "4", 5)  # the uploads, not the context changes

    # Playground: pick a recent notification; each rule's decision and the plan's very calls.
    follow(browser.find_element(By.LINK_TEXT, "Playground"))
    follow(
        browser.find_element(By.XPATH, "//table[@id='recent']//tr[td[2]='upload' and td[3]='products/1']//a")
    )
    assert "matched" in find("#decisions").text
    calls = find("#calls").text
    assert "cloudinary.uploader.explicit(" in calls and '"eager": "c_scale,w_300"' in calls
    assert '"endpoint": "context"' in calls
    # ...or paste one: a rule that does not match says which field failed.
    area = find("#notification")
    area.clear()
    area.send_keys(json.dumps({"notification_type": "upload", "public_id": "clip", "resource_type": "video"}))
    text = follow(find("#evaluate"))
    assert "resource_type" in find("#decisions").text and "No call would be made." in text
    area = find("#notification")
    area.clear()
    area.send_keys(json.dumps({"notification_type": "upload", "public_id": "new", "resource_type": "image"}))
    follow(find("#evaluate"))
    browser.save_screenshot(str(shots / "console-playground.png"))

    # An asset's story: the failure, with what Cloudinary answered.
    find("header input[name=q]").send_keys("late")
    follow(find("header .search button"))
    timeline = find("#timeline").text
    assert "upload notification" in timeline and "matched thumbnails" in timeline
    assert "failed" in timeline and "Cloudinary answered 404" in timeline

    # Fix the cause, replay from the Jobs page, and see it succeed.
    stack.emulator.service.add_asset({"public_id": "late"})
    follow(browser.find_element(By.LINK_TEXT, "Jobs"))
    assert "Resource not found - late" in find("#failed").text
    assert "1 job queued again" in follow(find("#failed .replay"))
    assert wait_until(lambda: stack.assets()["late"]["derived"] == ["c_scale,w_300"], 20)
    assert wait_until(lambda: not stack.failed(), 10)
    browser.get(base + "/jobs")
    assert "No failed job." in seen()
    browser.get(base + "/assets?q=late")
    assert "ok" in [tag.text for tag in browser.find_elements(By.CSS_SELECTOR, "#timeline .tag")]

    # Preview: the files on disk are the running set, so it offers to replay the recorded uploads
    # under them; every call they cause was made already, so the replay makes none.
    follow(browser.find_element(By.LINK_TEXT, "Preview"))
    assert "are the ones running" in find("#same-version").text
    follow(find("#replay-dry-run"))
    dry = find("#replay-dry").text
    assert (
        "4 would be replayed" in dry and "0 explicit (rule thumbnails) calls (4 made already: skipped)" in dry
    )
    made = len([call for call in stack.calls() if call["status"] == 200])
    text = follow(find("#replay-start"))
    assert "replay of the notifications of type upload recorded from" in find("#backfills").text, text
    assert wait_until(lambda: "finished" in (browser.refresh() or find("#backfills").text), 20)
    assert len([call for call in stack.calls() if call["status"] == 200]) == made

    # A POST without the page's CSRF field is refused, even with the session cookie.
    session = {"postupload_console": cookie["value"]}
    forged = requests.post(base + "/jobs/replay", data={"all": "1"}, cookies=session, timeout=5)
    assert forged.status_code == 403

    # No page shows the API secret or the console token.
    for page in pages:
        assert ACCOUNT.api_secret not in page and TOKEN not in page
    assert TOKEN not in stack.processes.output() and ACCOUNT.api_secret not in stack.processes.output()


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _post(stack: Stack, notification: dict[str, Any]) -> None:
    body = json.dumps(notification).encode()
    url = f"http://127.0.0.1:{stack.web.server_port}/webhooks/cloudinary"
    assert requests.post(url, data=body, headers=signed_headers(body), timeout=5).status_code == 200


@pytest.fixture
def console(settings: Any, redis_conn: Any) -> Any:
    from postupload.web.app import create_app

    return create_app(replace(settings, console_token=TOKEN), redis_conn).test_client()


def test_what_a_notification_carries_is_shown_escaped(console: Any, redis_conn: Any) -> None:
    from postupload.store import history

    hostile = '<img src=x onerror="alert(1)">'
    entry = {"event": "notification", "notification": "n1", "notification_type": "upload", "rules": []}
    history.record(redis_conn, "test-cloud:asset-1", f"test-cloud:{hostile}", entry, 1_700_000_000)
    page = console.get("/console/assets", query_string={"q": hostile}, headers=_bearer())
    assert page.status_code == 200
    assert hostile.encode() not in page.data and b"&lt;img src=x onerror=" in page.data
    assert b"upload</strong> notification" in page.data


def test_login_goes_back_only_to_a_console_page_and_logout_forgets_the_session(console: Any) -> None:
    answer = console.post("/console/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert console.post("/console/login", data={"token": TOKEN, "next": "/console/jobs"}).headers[
        "Location"
    ] == ("/console/jobs")
    assert console.get("/console/").status_code == 200  # the cookie set above
    csrf = re.search(rb'name="csrf" value="([0-9a-f]+)"', console.get("/console/").data)
    assert csrf
    assert console.post("/console/logout", data={"csrf": csrf.group(1).decode()}).status_code == 303
    assert console.get("/console/").status_code == 401


def test_a_pasted_notification_that_is_not_json_is_a_400_that_says_so(console: Any) -> None:
    answer = console.post("/console/playground", data={"notification": "{nope"}, headers=_bearer())
    assert answer.status_code == 400 and b"not JSON" in answer.data
    answer = console.post("/console/playground", data={"notification": "[1, 2]"}, headers=_bearer())
    assert answer.status_code == 400 and b"a notification is a JSON object" in answer.data


def test_a_link_to_a_notification_no_longer_kept_is_a_404_that_says_so(console: Any) -> None:
    answer = console.get("/console/playground?notification=gone", headers=_bearer())
    assert answer.status_code == 404 and b"not among the 20 latest kept; paste it instead" in answer.data


def test_a_short_token_is_refused_at_start() -> None:
    from postupload.config import Settings
    from postupload.errors import ConfigError

    with pytest.raises(ConfigError, match=r"POSTUPLOAD_CONSOLE_TOKEN: must be at least 16 characters"):
        Settings.from_env({"POSTUPLOAD_CONSOLE_TOKEN": "short"})


def test_the_console_answers_503_when_redis_does_not(settings: Any) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from postupload.web.app import create_app
    from tests.conftest import free_port

    away = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    client = create_app(replace(settings, console_token=TOKEN), away).test_client()
    for path in ("/console/", "/console/jobs", "/console/assets?q=x"):
        answer = client.get(path, headers=_bearer())
        assert answer.status_code == 503 and b"Redis does not answer" in answer.data, path
        assert b"redis://" not in answer.data and b"127.0.0.1" not in answer.data


def test_the_assets_page_finds_an_asset_in_the_environment_chosen(settings: Any, redis_conn: Any) -> None:
    """The same public_id in two environments: the page shows one, says where else it is known, and
    the choice shows the other; a CLOUD/public_id spelling reaches nothing."""
    from postupload.config import Account
    from postupload.web.app import create_app

    other = Account("other-cloud", "999888777666555", "other-secret")
    client = create_app(replace(settings, console_token=TOKEN, accounts=(other,)), redis_conn).test_client()
    for cloud in ("test-cloud", "other-cloud"):
        uploaded_in(redis_conn, cloud, "look")

    def page(**query: str) -> str:
        return client.get("/console/assets", query_string=query, headers=_bearer()).get_data(as_text=True)

    first = page(q="look")
    assert "n-test-cloud" in first and "n-other-cloud" not in first
    assert "Also known in other-cloud" in first
    chosen = page(q="look", cloud="other-cloud")
    assert "n-other-cloud" in chosen and "n-test-cloud" not in chosen
    assert 'id="nothing"' in page(q="other-cloud/look")


def test_a_cookie_session_posts_only_with_the_forms_csrf_whatever_the_authorization_header(
    console: Any,
) -> None:
    """The probe: `-b postupload_console=… -H 'Authorization: Basic …' -d all=1 …/jobs/replay`
    answered 303 without the form's CSRF value (403 without the header)."""
    assert console.post("/console/login", data={"token": TOKEN}).status_code == 303  # the cookie
    for header in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Negotiate abc"}):
        for path in ("/console/jobs/replay", "/console/playground", "/console/logout"):
            answer = console.post(path, data={"all": "1", "notification": "{}"}, headers=header)
            assert answer.status_code == 403 and b"CSRF" in answer.data, (path, header)
    assert console.get("/console/").status_code == 200  # still signed in: the logout was refused
    # Signed in by the token itself, nothing a browser sends on its own: no CSRF value needed.
    assert console.post("/console/jobs/replay", data={"all": "1"}, headers=_bearer()).status_code == 303


def test_repeated_and_malformed_form_values_are_answered_not_500(console: Any, redis_conn: Any) -> None:
    """The probes: `job=X&job=X` requeued X and answered 500; login with `next=/console/\\r\\nX: 1`
    answered 500."""
    from rq.job import JobStatus

    from postupload.store.queue import notification_queue

    queue = notification_queue(redis_conn)
    job = queue.enqueue("postupload.worker.process_notification", "{}")
    queue.remove(job)
    job.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(job, ttl=600, exc_string="failed for the test")
    answer = console.post("/console/jobs/replay", data={"job": [job.id, job.id]}, headers=_bearer())
    assert answer.status_code == 303 and answer.headers["Location"].endswith("replayed=1")
    assert queue.job_ids == [job.id] and queue.failed_job_registry.count == 0
    answer = console.post("/console/login", data={"token": TOKEN, "next": "/console/\r\nX: 1"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/"
    answer = console.get("/console/login", query_string={"next": "/console/\r\nX: 1"})
    assert answer.status_code == 200 and b"X: 1" not in answer.data


def _login(client: Any, token: str = TOKEN, **headers: str) -> Any:
    return client.post("/console/login", data={"token": token}, headers=headers)


def _cookie(answer: Any) -> str:
    found = re.search(r"postupload_console=([^;]+)", answer.headers["Set-Cookie"])
    assert found
    return found.group(1)


def _csrf(client: Any) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/console/").get_data(as_text=True))
    assert found
    return found.group(1)


def test_each_login_is_a_session_of_its_own_that_logout_and_expiry_end(
    settings: Any, redis_conn: Any
) -> None:
    """The probe: the cookie was a fixed HMAC of the token, the same for every login, and still
    answered 200 after logout; the CSRF value was fixed too."""
    from postupload.web.app import create_app

    app = create_app(replace(settings, console_token=TOKEN), redis_conn)
    first, second = app.test_client(), app.test_client()
    one, two = _cookie(_login(first)), _cookie(_login(second))
    assert one != two and TOKEN not in one + two
    csrf = [_csrf(first), _csrf(second)]
    assert csrf[0] != csrf[1]
    assert second.post("/console/logout", data={"csrf": csrf[0]}).status_code == 403  # not its own
    assert first.post("/console/logout", data={"csrf": csrf[0]}).status_code == 303
    replayed = app.test_client()
    replayed.set_cookie("postupload_console", one, path="/console/")
    assert replayed.get("/console/").status_code == 401  # the old cookie, sent again after logout
    assert second.get("/console/").status_code == 200  # the other session lives on
    (key,) = redis_conn.keys("postupload:console:session:*")
    assert 12 * 3600 - 60 < redis_conn.ttl(key) <= 12 * 3600 and two.encode() not in key
    redis_conn.delete(key)  # as its time to live ends
    assert second.get("/console/").status_code == 401


def test_wrong_tokens_are_throttled_per_address(settings: Any, redis_conn: Any) -> None:
    """The probe: 100 wrong logins in 0.09 s, none refused."""
    from postupload.web.app import create_app

    client = create_app(replace(settings, console_token=TOKEN), redis_conn).test_client()
    assert [_login(client, "wrong-token-0123456789").status_code for _ in range(10)] == [401] * 10
    refused = _login(client, "wrong-token-0123456789")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert _login(client).status_code == 429  # the right token too, until the minute is over
    other = client.post("/console/login", data={"token": TOKEN}, environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert other.status_code == 303  # another address is not held back


def test_behind_a_trusted_proxy_the_cookie_is_secure(settings: Any, redis_conn: Any) -> None:
    from postupload.web.app import create_app

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    trusting = create_app(replace(settings, console_token=TOKEN, trusted_proxies=1), redis_conn)
    assert "Secure" in _login(trusting.test_client(), **forwarded).headers["Set-Cookie"]
    direct = create_app(replace(settings, console_token=TOKEN), redis_conn)
    assert "Secure" not in _login(direct.test_client(), **forwarded).headers["Set-Cookie"]


def test_a_wildcard_and_a_hostile_public_id_do_not_stall_the_playground(
    settings: Any, redis_conn: Any
) -> None:
    """The probe: rule `*-*-*-*-*z*x` and a public_id of 280 dashes and `x` took the Playground
    20.5 s (webhooks sent meanwhile waited as long). Linear matching: milliseconds; 2 s is loose."""
    import time

    from postupload.web.app import create_app

    (settings.rules_dir / "30-wild.yaml").write_text(
        "rules:\n  - name: wild\n    match: {public_id: [{wildcard: '*-*-*-*-*z*x'}]}\n"
        "    actions:\n      - tags: {add: [wild]}\n"
    )
    client = create_app(replace(settings, console_token=TOKEN), redis_conn).test_client()
    body = {
        "notification_type": "upload",
        "public_id": "-" * 280 + "x",
        "resource_type": "image",
        "type": "upload",
    }
    started = time.monotonic()
    answer = client.post("/console/playground", data={"notification": json.dumps(body)}, headers=_bearer())
    assert answer.status_code == 200 and b"wild" in answer.data
    assert time.monotonic() - started < 2

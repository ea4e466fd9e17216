"""The Cloudinary emulator, driven through the official SDK as postupload drives the real service."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
import cloudinary.utils
import pytest
import requests
from PIL import Image

from postupload.cloudinary_api import retry_time
from postupload.config import Account
from postupload.core.notification import parse_notification
from postupload.core.signature import verify_notification
from postupload.emulator import Faults, string_to_sign
from tests.conftest import ACCOUNT, ROOT, Receiver, RunningEmulator, wait_until
from tests.fakes import Clock


def test_string_to_sign_matches_every_shared_vector(samples: Path) -> None:
    vectors = json.loads((samples / "signatures.json").read_text())["api_sign_request_vectors"]
    for vector in vectors:
        to_sign = string_to_sign(vector["params"], vector["signature_version"])
        assert to_sign == vector["string_to_sign"], vector["id"]
        digest = hashlib.new(vector["algorithm"], (to_sign + vector["api_secret"]).encode()).hexdigest()
        assert digest == vector["signature"], vector["id"]
    assert len(vectors) >= 15


def state(emulator: RunningEmulator, public_id: str) -> dict[str, Any]:
    assets = requests.get(f"{emulator.url}/emulator/state", timeout=5).json()["assets"]
    (asset,) = [asset for asset in assets if asset["public_id"] == public_id]
    return asset


# --- Upload API happy paths ---------------------------------------------------------------------


def test_explicit_regenerates_and_counts_every_eager_generation(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "products/shoe"})
    for _ in range(2):
        answer = cloudinary.uploader.explicit(
            "products/shoe",
            type="upload",
            eager=[{"width": 200, "crop": "scale"}, "e_grayscale"],
            **emulator.sdk(),
        )
    assert [item["transformation"] for item in answer["eager"]] == ["c_scale,w_200", "e_grayscale"]
    assert answer["eager"][0]["secure_url"].endswith(f"/c_scale,w_200/v{answer['version']}/products/shoe.jpg")
    calls = emulator.calls()
    assert [(c["endpoint"], c["status"], c["auth"]) for c in calls] == [("explicit", 200, "signature")] * 2
    assert calls[0]["params"]["eager"] == "c_scale,w_200|e_grayscale"
    asset = state(emulator, "products/shoe")
    assert asset["derived"] == ["c_scale,w_200", "e_grayscale"] and asset["derived_generated"] == 4


def test_explicit_records_add_ons(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "p"})
    cloudinary.uploader.explicit(
        "p",
        type="upload",
        background_removal="cloudinary_ai",
        categorization="google_tagging",
        **emulator.sdk(),
    )
    cloudinary.uploader.explicit("p", type="upload", moderation="manual", **emulator.sdk())
    asset = state(emulator, "p")
    assert asset["addons"] == {
        "background_removal": ["cloudinary_ai"],
        "categorization": ["google_tagging"],
        "moderation": ["manual"],
    }
    assert asset["moderation_status"] == "pending"


def test_tag_commands(emulator: RunningEmulator) -> None:
    for public_id in ("a", "b", "c"):
        emulator.service.add_asset({"public_id": public_id, "tags": ["old"]})
    opts = emulator.sdk()
    assert cloudinary.uploader.add_tag(["new", "sale"], ["a", "b", "ghost"], **opts)["public_ids"] == [
        "a",
        "b",
    ]
    assert state(emulator, "a")["tags"] == ["old", "new", "sale"]
    cloudinary.uploader.remove_tag("old", ["a"], **opts)
    assert state(emulator, "a")["tags"] == ["new", "sale"]
    cloudinary.uploader.replace_tag("only", ["b"], **opts)
    assert state(emulator, "b")["tags"] == ["only"]
    cloudinary.uploader.add_tag("hero", ["a", "b"], **opts)
    cloudinary.uploader.add_tag("hero", ["c"], exclusive=True, **opts)
    assert [state(emulator, p)["tags"] for p in "abc"] == [["new", "sale"], ["only"], ["old", "hero"]]
    cloudinary.uploader.remove_all_tags(["c"], **opts)
    assert state(emulator, "c")["tags"] == []
    commands = [c["params"]["command"] for c in emulator.calls()]
    assert commands == ["add", "remove", "replace", "add", "set_exclusive", "remove_all"]


def test_tags_on_other_resource_types_and_delivery_types(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "clip", "resource_type": "video", "type": "private"})
    opts = emulator.sdk()
    assert cloudinary.uploader.add_tag("x", ["clip"], **opts)["public_ids"] == []
    answer = cloudinary.uploader.add_tag("x", ["clip"], resource_type="video", type="private", **opts)
    assert answer["public_ids"] == ["clip"]


def test_context_add_merges_empty_value_deletes_and_remove_all_clears(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a", "context": {"custom": {"alt": "old", "sku": "S1"}}})
    opts = emulator.sdk()
    cloudinary.uploader.add_context({"alt": "a=b|c", "caption": "new", "sku": ""}, ["a"], **opts)
    assert state(emulator, "a")["context"] == {"custom": {"alt": "a=b|c", "caption": "new"}}
    cloudinary.uploader.remove_all_context(["a"], **opts)
    assert state(emulator, "a")["context"] == {}


def test_metadata_sets_values_including_lists(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a", "metadata": {"season": ["spring"], "status": "draft"}})
    cloudinary.uploader.update_metadata(
        {"season": ["spring", "summer"], "status": ""}, ["a"], **emulator.sdk()
    )
    assert state(emulator, "a")["metadata"] == {"season": ["spring", "summer"]}


# --- Admin API ----------------------------------------------------------------------------------


def test_admin_update_and_get_resource(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "folder/pic", "tags": ["x"]})
    opts = emulator.sdk()
    answer = cloudinary.api.update("folder/pic", moderation_status="approved", tags=["a", "b"], **opts)
    assert answer["moderation_status"] == "approved" and answer["tags"] == ["a", "b"]
    fetched = cloudinary.api.resource("folder/pic", **opts)
    assert fetched["moderation_status"] == "approved" and fetched["asset_id"] == answer["asset_id"]
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Invalid moderation_status"):
        cloudinary.api.update("folder/pic", moderation_status="maybe", **opts)
    with pytest.raises(cloudinary.exceptions.NotFound, match="Resource not found - nope"):
        cloudinary.api.resource("nope", **opts)
    assert {c["auth"] for c in emulator.calls()} == {"basic"}


def test_admin_api_needs_the_right_credentials(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "p"})
    wrong = Account(ACCOUNT.cloud_name, ACCOUNT.api_key, "wrong", emulator.url)
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Invalid credentials"):
        cloudinary.api.resource("p", **wrong.sdk_options())


def test_rate_limit_headers_count_down_then_420_until_the_reset(make_emulator: Any) -> None:
    clock = Clock(3600 * 500_000)  # the start of a window
    emulator = make_emulator(admin_budget=3, admin_window=60, clock=clock)
    emulator.service.add_asset({"public_id": "p"})
    opts = emulator.sdk()
    remaining = [cloudinary.api.resource("p", **opts).rate_limit_remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    with pytest.raises(cloudinary.exceptions.RateLimited, match="Limit of 3 api operations") as raised:
        cloudinary.api.update("p", moderation_status="approved", **opts)
    assert retry_time(str(raised.value)) == clock() + 60
    answer = requests.get(f"{emulator.url}/v1_1/{ACCOUNT.cloud_name}/resources/image/upload/p", timeout=5)
    assert (
        answer.headers["X-FeatureRateLimit-Remaining"] == "0" and answer.status_code == 401
    )  # no credentials
    assert state(emulator, "p")["moderation_status"] is None  # the refused update did nothing
    clock.advance(60)
    after = cloudinary.api.update("p", moderation_status="approved", **opts)
    assert after.rate_limit_allowed == 3 and after.rate_limit_remaining == 2


# --- signatures ----------------------------------------------------------------------------------


def test_wrong_secret_is_401(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    wrong = Account(ACCOUNT.cloud_name, ACCOUNT.api_key, "not-the-secret", emulator.url)
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"):
        cloudinary.uploader.explicit("a", type="upload", eager="c_scale,w_10", **wrong.sdk_options())
    assert emulator.calls()[0]["status"] == 401


def test_a_tampered_parameter_is_401(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    params = {"public_id": "a", "eager": "c_scale,w_10", "timestamp": cloudinary.utils.now()}
    signed = cloudinary.utils.sign_request(params, emulator.sdk())
    tampered = {**signed, "eager": "c_scale,w_99"}
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"):
        cloudinary.uploader.call_api("explicit", tampered, unsigned=True, **emulator.sdk())
    assert (
        cloudinary.uploader.call_api("explicit", signed, unsigned=True, **emulator.sdk())["public_id"] == "a"
    )


def test_an_expired_timestamp_is_401(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.service.add_asset({"public_id": "a"})
    monkeypatch.setattr(cloudinary.utils, "now", lambda: str(int(time.time()) - 3700))
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Stale request"):
        cloudinary.uploader.explicit("a", type="upload", eager="c_scale,w_10", **emulator.sdk())
    monkeypatch.setattr(cloudinary.utils, "now", lambda: str(int(time.time()) - 3500))
    assert cloudinary.uploader.explicit("a", type="upload", **emulator.sdk())["public_id"] == "a"


def test_ampersand_inside_a_value_needs_signature_version_2(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a&b"})
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"):
        cloudinary.uploader.explicit("a&b", type="upload", **emulator.sdk(signature_version=1))
    assert cloudinary.uploader.explicit("a&b", type="upload", **emulator.sdk())["public_id"] == "a&b"


def test_sha256_signatures_and_basic_auth_are_accepted(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    answer = cloudinary.uploader.add_tag("t", ["a"], **emulator.sdk(signature_algorithm="sha256"))
    assert answer["public_ids"] == ["a"] and answer["request_id"]  # X-Request-Id, as Cloudinary sends
    basic = base64.b64encode(f"{ACCOUNT.api_key}:{ACCOUNT.api_secret}".encode()).decode()
    params = {"public_ids": ["a"], "tag": "u", "command": "add"}
    cloudinary.uploader.call_api(
        "tags", params, unsigned=True, http_headers={"Authorization": f"Basic {basic}"}, **emulator.sdk()
    )
    assert state(emulator, "a")["tags"] == ["t", "u"]
    assert [c["auth"] for c in emulator.calls()] == ["signature", "basic"]


def test_notification_url_is_sent_unsigned_on_tags_calls(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    cloudinary.uploader.add_tag("t", ["a"], notification_url="http://127.0.0.1:9/hook", **emulator.sdk())
    assert emulator.calls()[0]["status"] == 200


# --- limits -------------------------------------------------------------------------------------


def test_only_the_first_1000_public_ids_are_acted_on(emulator: RunningEmulator) -> None:
    ids = [f"p{i}" for i in range(1001)]
    for public_id in ids:
        emulator.service.add_asset({"public_id": public_id})
    answer = cloudinary.uploader.add_tag("bulk", ids, **emulator.sdk())
    assert len(answer["public_ids"]) == 1000 and "p1000" not in answer["public_ids"]
    assert state(emulator, "p1000")["tags"] == [] and state(emulator, "p999")["tags"] == ["bulk"]


def test_tags_times_ids_over_10000_is_400(emulator: RunningEmulator) -> None:
    ids = [f"p{i}" for i in range(1000)]
    for public_id in ids:
        emulator.service.add_asset({"public_id": public_id})
    tags = [f"t{i}" for i in range(11)]
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Too many tag updates"):
        cloudinary.uploader.add_tag(tags, ids, **emulator.sdk())
    assert cloudinary.uploader.add_tag(tags[:10], ids, **emulator.sdk())["public_ids"] == ids


def test_commas_long_tags_and_the_1000_tag_cap_are_400(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "full", "tags": [f"t{i}" for i in range(1000)]})
    emulator.service.add_asset({"public_id": "a"})
    opts = emulator.sdk()
    with pytest.raises(cloudinary.exceptions.BadRequest, match="comma"):
        cloudinary.uploader.add_tag(["a,b"], ["a"], **opts)
    with pytest.raises(cloudinary.exceptions.BadRequest, match="too long"):
        cloudinary.uploader.add_tag("x" * 256, ["a"], **opts)
    with pytest.raises(cloudinary.exceptions.BadRequest, match="more than 1000 tags"):
        cloudinary.uploader.add_tag("one-more", ["a", "full"], **opts)
    assert state(emulator, "a")["tags"] == []  # the refused call changed nothing
    cloudinary.uploader.add_tag("t5", ["full"], **opts)  # already there: still 1000, fine


def test_missing_parameters_are_400(emulator: RunningEmulator) -> None:
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Missing required parameter - public_ids"):
        cloudinary.uploader.add_tag("t", [], **emulator.sdk())
    with pytest.raises(cloudinary.exceptions.NotFound, match="Resource not found - ghost"):
        cloudinary.uploader.explicit("ghost", type="upload", eager="c_scale,w_10", **emulator.sdk())


# --- notifications ------------------------------------------------------------------------------


def delivered(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    assert wait_until(lambda: len(receiver.received) >= count, 5), receiver.received
    time.sleep(0.1)  # nothing more should arrive
    for headers, body in receiver.received:
        timestamp, signature = headers["X-Cld-Timestamp"], headers["X-Cld-Signature"]
        verify_notification(body, timestamp, signature, ACCOUNT.api_secret, now=time.time(), tolerance=300)
        assert parse_notification(body) is not None
    return receiver.bodies()


def test_each_kind_of_notification_is_sent_signed(make_emulator: Any, receiver: Receiver) -> None:
    emulator = make_emulator(receiver.url)
    requests.post(f"{emulator.url}/emulator/upload", json={"public_id": "a", "tags": ["t"]}, timeout=5)
    (upload,) = delivered(receiver, 1)
    assert upload["notification_type"] == "upload" and upload["public_id"] == "a" and upload["tags"] == ["t"]
    assert upload["api_key"] == ACCOUNT.api_key and upload["asset_id"] == state(emulator, "a")["asset_id"]

    opts = emulator.sdk()
    receiver.received.clear()
    batch = cloudinary.uploader.explicit("a", type="upload", eager="c_scale,w_10", eager_async=True, **opts)
    cloudinary.uploader.add_tag("new", ["a"], **opts)
    cloudinary.uploader.add_context({"alt": "x"}, ["a"], **opts)
    cloudinary.uploader.update_metadata({"status": "ok"}, ["a"], **opts)
    cloudinary.api.update("a", moderation_status="rejected", **opts)
    cloudinary.uploader.explicit("a", type="upload", background_removal="cloudinary_ai", **opts)
    bodies = {body["notification_type"]: body for body in delivered(receiver, 6)}
    assert sorted(bodies) == [
        "eager",
        "info",
        "moderation",
        "resource_context_changed",
        "resource_metadata_changed",
        "resource_tags_changed",
    ]
    assert bodies["eager"]["batch_id"] == batch["batch_id"]
    assert bodies["eager"]["eager"][0]["transformation"] == "c_scale,w_10"
    (tags,) = bodies["resource_tags_changed"]["resources"]
    assert (tags["public_id"], tags["added"], tags["removed"]) == ("a", ["new"], [])
    assert bodies["resource_context_changed"]["resources"]["a"]["added"] == [{"name": "alt", "value": "x"}]
    assert bodies["resource_metadata_changed"]["resources"]["a"]["new_metadata"] == {"status": "ok"}
    assert bodies["moderation"]["moderation_status"] == "rejected"
    assert bodies["info"]["info_kind"] == "cloudinary_ai"


def test_no_notification_when_nothing_changed(make_emulator: Any, receiver: Receiver) -> None:
    emulator = make_emulator(receiver.url)
    emulator.service.add_asset({"public_id": "a", "tags": ["t"]})
    cloudinary.uploader.add_tag("t", ["a"], **emulator.sdk())
    cloudinary.uploader.add_tag("u", ["a"], **emulator.sdk())
    assert [body["notification_type"] for body in delivered(receiver, 1)] == ["resource_tags_changed"]


def test_sha256_notifications_and_redelivery_until_200(make_emulator: Any, receiver: Receiver) -> None:
    emulator = make_emulator(receiver.url, retry_delays=(0.05, 0.05), signature_algorithm="sha256")
    receiver.statuses = [500, 503]
    requests.post(f"{emulator.url}/emulator/upload", json={"public_id": "a"}, timeout=5)
    bodies = delivered(receiver, 3)
    assert len({json.dumps(body) for body in bodies}) == 1  # the same body three times
    assert all(len(headers["X-Cld-Signature"]) == 64 for headers, _ in receiver.received)
    log = requests.get(f"{emulator.url}/emulator/notifications", timeout=5).json()["notifications"]
    assert log[0]["deliveries"] == [500, 503, 200]


# --- faults -------------------------------------------------------------------------------------


def statuses(emulator: RunningEmulator, count: int) -> list[int]:
    emulator.service.add_asset({"public_id": "a"})
    answers = []
    for _ in range(count):
        try:
            answer = cloudinary.uploader.add_tag("t", ["a"], return_error=True, **emulator.sdk())
        except cloudinary.exceptions.Error as error:
            assert "Error parsing server response (502)" in str(error)
            answers.append(502)
            continue
        answers.append(answer["error"]["http_code"] if "error" in answer else 200)
    return answers


def test_error_share_follows_the_rate_and_the_seed(make_emulator: Any) -> None:
    first = statuses(make_emulator(faults=_faults(error_rate=0.3, seed=7)), 100)
    again = statuses(make_emulator(faults=_faults(error_rate=0.3, seed=7)), 100)
    other = statuses(make_emulator(faults=_faults(error_rate=0.3, seed=8)), 100)
    assert first == again and first != other
    assert 15 <= sum(status != 200 for status in first) <= 45
    assert set(first) == {200, 500, 502, 503}


def test_502_is_an_html_page_the_sdk_cannot_parse(make_emulator: Any) -> None:
    emulator = make_emulator(faults=_faults(error_rate=1.0, seed=1))
    emulator.service.add_asset({"public_id": "a"})
    raised: set[str] = set()
    for _ in range(12):
        try:
            cloudinary.api.resource("a", **emulator.sdk())
        except Exception as error:  # the SDK raises GeneralError for 500/503 and 502 pages
            raised.add(str(error).split(" - ")[0].split(" (")[0])
    assert {"Error 500", "Error 503", "Error parsing server response"} <= raised


def test_timeouts_take_effect_but_never_answer(make_emulator: Any) -> None:
    emulator = make_emulator(faults=_faults(timeout_rate=1.0, hang=1.0))
    emulator.service.add_asset({"public_id": "a"})
    started = time.monotonic()
    with pytest.raises(cloudinary.exceptions.Error, match=r"timed out|Timeout"):
        cloudinary.uploader.add_tag("t", ["a"], **emulator.sdk(timeout=0.3))
    assert time.monotonic() - started < 0.9
    assert state(emulator, "a")["tags"] == ["t"]
    assert emulator.calls()[0]["fault"] == "timeout"


def test_latency_and_420_bursts_set_at_run_time(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    changed = requests.post(
        f"{emulator.url}/emulator/faults", json={"latency": 0.2, "rate_limit_burst": 2}, timeout=5
    )
    assert changed.json()["latency"] == 0.2
    started = time.monotonic()
    cloudinary.uploader.add_tag("t", ["a"], **emulator.sdk())
    assert time.monotonic() - started >= 0.2
    for _ in range(2):
        with pytest.raises(cloudinary.exceptions.RateLimited):
            cloudinary.api.resource("a", **emulator.sdk())
    assert cloudinary.api.resource("a", **emulator.sdk())["public_id"] == "a"


def test_bad_fault_settings_are_400_and_change_nothing(emulator: RunningEmulator) -> None:
    for body, message in [
        ({"error_rate": 2}, "error_rate: expected a share between 0 and 1"),
        ({"latency": 0.1, "nonsense": 1}, "unknown fault 'nonsense'"),
        ({"rate_limit_burst": -1}, "rate_limit_burst"),
        ([1], "JSON object"),
    ]:
        answer = requests.post(f"{emulator.url}/emulator/faults", json=body, timeout=5)
        assert answer.status_code == 400 and message in answer.json()["error"]["message"]
    assert requests.get(f"{emulator.url}/emulator/faults", timeout=5).json()["latency"] == 0


def test_dropped_and_duplicated_notifications(make_emulator: Any, receiver: Receiver) -> None:
    emulator = make_emulator(receiver.url, faults=_faults(drop_rate=0.2, duplicate_rate=0.3, seed=3))
    for i in range(40):
        requests.post(f"{emulator.url}/emulator/upload", json={"public_id": f"p{i}"}, timeout=5)
    log = requests.get(f"{emulator.url}/emulator/notifications", timeout=5).json()["notifications"]
    copies = [entry["copies"] for entry in log]
    assert 2 <= copies.count(0) <= 16 and 4 <= copies.count(2) <= 20
    bodies = delivered(receiver, sum(copies))
    assert len(bodies) == sum(copies)
    seen = [body["public_id"] for body in bodies]
    assert {entry["public_id"] for entry in log if entry["dropped"]}.isdisjoint(seen)


def test_every_knob_is_documented_in_help() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "postupload", "emulator", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    for knob in [
        "--admin-budget",
        "--admin-window",
        "--latency",
        "--latency-jitter",
        "--error-rate",
        "--timeout-rate",
        "--hang",
        "--rate-limit-burst",
        "--drop-rate",
        "--duplicate-rate",
        "--seed",
        "--retry-delays",
        "--signature-algorithm",
        "--notify-url",
        "/emulator/faults",
    ]:
        assert knob in shown, knob


def _faults(**values: Any) -> Faults:
    return Faults(**values)


def test_the_command_applies_its_knobs_and_refuses_bad_ones(processes: Any) -> None:
    from tests.conftest import free_port

    port = free_port()
    processes.env["CLOUDINARY_URL"] = ACCOUNT.to_url()
    processes.start(
        "emulator", "--port", str(port), "--admin-budget", "7", "--error-rate", "0.25", "--seed", "4"
    )
    url = f"http://127.0.0.1:{port}/emulator/state"
    answer = wait_until(lambda: _get(url), 10)
    assert answer, processes.output()
    assert (
        answer["admin"]["budget"] == 7
        and answer["faults"]["error_rate"] == 0.25
        and answer["faults"]["seed"] == 4
    )
    refused = subprocess.run(
        [sys.executable, "-m", "postupload", "emulator", "--error-rate", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert refused.returncode == 2 and "--error-rate" in refused.stderr and "0<=x<=1" in refused.stderr


def _get(url: str) -> Any:
    try:
        return requests.get(url, timeout=1).json()
    except requests.RequestException:
        return None


def test_a_transformation_cloudinary_has_no_meaning_for_is_a_400(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Invalid transformation component - 'zz_9'"):
        cloudinary.uploader.explicit("a", type="upload", eager="c_scale,zz_9", **emulator.sdk())
    assert state(emulator, "a")["derived"] == []
    answer = cloudinary.uploader.explicit("a", type="upload", eager="c_scale,w_200", **emulator.sdk())
    assert [item["transformation"] for item in answer["eager"]] == ["c_scale,w_200"]
    # An upload asking for one is refused whole: no asset is stored.
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(cloudinary.exceptions.BadRequest, match="Invalid transformation component"):
        cloudinary.uploader.upload(png.getvalue(), public_id="b", eager="w_abc", **emulator.sdk())
    assert ("image", "upload", "b") not in emulator.service.assets

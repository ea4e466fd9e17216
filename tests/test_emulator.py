"""The emulator's first cut: Upload API signatures checked exactly as Cloudinary computes them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import cloudinary.exceptions
import cloudinary.uploader
import pytest
import requests

from postupload.config import Account
from postupload.emulator import string_to_sign
from tests.conftest import RunningEmulator


def test_string_to_sign_matches_every_shared_vector(samples: Path) -> None:
    vectors = json.loads((samples / "signatures.json").read_text())["api_sign_request_vectors"]
    for vector in vectors:
        to_sign = string_to_sign(vector["params"], vector["signature_version"])
        assert to_sign == vector["string_to_sign"], vector["id"]
        digest = hashlib.new(vector["algorithm"], (to_sign + vector["api_secret"]).encode()).hexdigest()
        assert digest == vector["signature"], vector["id"]
    assert len(vectors) >= 15


def sdk(account: Account) -> dict[str, Any]:
    return {**account.sdk_options(), "timeout": 5}


def test_explicit_through_the_sdk(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "products/shoe"})
    answer = cloudinary.uploader.explicit(
        "products/shoe",
        type="upload",
        eager=[{"width": 200, "crop": "scale"}, "e_grayscale"],
        **sdk(emulator.account),
    )
    assert [item["transformation"] for item in answer["eager"]] == ["c_scale,w_200", "e_grayscale"]
    (call,) = emulator.calls()
    assert call["endpoint"] == "explicit" and call["status"] == 200 and call["auth"] == "signature"
    assert call["params"]["eager"] == "c_scale,w_200|e_grayscale"


def test_wrong_secret_is_401(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    wrong = Account(
        emulator.account.cloud_name,
        emulator.account.api_key,
        "not-the-secret",
        emulator.account.upload_prefix,
    )
    with pytest.raises(cloudinary.exceptions.AuthorizationRequired, match="Invalid Signature"):
        cloudinary.uploader.explicit("a", type="upload", eager="c_scale,w_10", **sdk(wrong))
    assert emulator.calls()[0]["status"] == 401


def test_ampersand_inside_a_value_is_signed_as_version_2(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a&b"})
    answer = cloudinary.uploader.explicit("a&b", type="upload", eager="c_scale,w_10", **sdk(emulator.account))
    assert answer["public_id"] == "a&b"


def test_tampered_and_expired_requests_are_401(emulator: RunningEmulator) -> None:
    emulator.service.add_asset({"public_id": "a"})
    stamp = str(int(time.time()))
    params = {"public_id": "a", "eager": "c_scale,w_10", "timestamp": stamp}
    from cloudinary.utils import api_sign_request

    signature = api_sign_request(params, emulator.account.api_secret)
    url = f"{emulator.url}/v1_1/{emulator.account.cloud_name}/image/explicit"
    good = {**params, "signature": signature, "api_key": emulator.account.api_key}
    assert requests.post(url, data=good, timeout=5).status_code == 200
    assert requests.post(url, data={**good, "eager": "c_scale,w_99"}, timeout=5).status_code == 401
    old = str(int(time.time()) - 3700)
    expired = {
        **params,
        "timestamp": old,
        "api_key": emulator.account.api_key,
        "signature": api_sign_request({**params, "timestamp": old}, emulator.account.api_secret),
    }
    answer = requests.post(url, data=expired, timeout=5)
    assert answer.status_code == 401 and "Stale request" in answer.json()["error"]["message"]


def test_unknown_asset_is_404(emulator: RunningEmulator) -> None:
    with pytest.raises(cloudinary.exceptions.NotFound, match="Resource not found - ghost"):
        cloudinary.uploader.explicit("ghost", type="upload", eager="c_scale,w_10", **sdk(emulator.account))

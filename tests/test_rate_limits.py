"""Cloudinary's rate-limit answers, as it words them, read into the time to wait until: the form users
report ("Try again on 2024-10-04 14:00:00 UTC"), the HTTP-date form, 420 and 429 alike."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from postupload.backfill.events import AssetSource
from postupload.cloudinary_api import CloudinaryClient, failure, retry_time
from postupload.errors import RateLimitError
from tests.conftest import RunningEmulator

# Verbatim as users report Cloudinary's answer (laravel-cloudinary issue 11; CLOUDINARY.md).
REPORTED = "Rate Limit Exceeded. Limit of 500 api operations reached. Try again on 2024-10-04 14:00:00 UTC"
FOURTEEN = datetime(2024, 10, 4, 14, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "message",
    [
        REPORTED,
        REPORTED + ".",
        "Error 420 - " + REPORTED,
        "Error 429 - " + REPORTED,
        "Rate Limit Exceeded. Try again on Fri, 04 Oct 2024 14:00:00 GMT",
        "Rate Limit Exceeded. Try again on 2024-10-04T14:00:00Z",
    ],
)
def test_the_time_to_try_again_is_read_in_every_form(message: str) -> None:
    assert retry_time(message) == FOURTEEN


def test_no_time_in_the_message_is_none_not_a_guess() -> None:
    assert retry_time("Rate Limit Exceeded") is None
    assert retry_time("Rate Limit Exceeded. Try again on someday") is None


@pytest.mark.parametrize("status", [420, 429])
def test_a_420_or_429_waits_until_the_time_cloudinary_names(status: int) -> None:
    error = failure(status, REPORTED)
    assert isinstance(error, RateLimitError) and error.reset == FOURTEEN


@pytest.mark.parametrize("status", [420, 429])
def test_the_emulators_rate_limit_answer_reaches_our_client_at_once(make_emulator: Any, status: int) -> None:
    """Through our client: a 429's Retry-After (here the rest of an hour) is not slept out under the
    SDK before a GET is tried again; the answer comes at once, and with it the time to wait until."""
    emulator: RunningEmulator = make_emulator(admin_budget=1, admin_window=3600)
    emulator.service.faults.update({"rate_limit_status": status})
    emulator.service.add_asset({"public_id": "p"})
    client = CloudinaryClient(emulator.account, timeout=5)
    client.list_assets(AssetSource(prefix="p"), None)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as raised:
        client.list_assets(AssetSource(prefix="p"), None)
    assert time.monotonic() - started < 5  # the call's own timeout
    assert f"{status}: Error {status} - Rate Limit Exceeded. Limit of 1 api operations reached." in str(
        raised.value
    )
    assert raised.value.reset == (int(emulator.service.clock()) // 3600 + 1) * 3600

"""The names the SDK's test files import from `test.helper_test`, with the meaning those tests rely
on: files to upload, a unique suffix, clean-ups that never fail a test, and the readers of a mocked
urllib3 request that the SDK's mocked tests use."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta, tzinfo
from functools import wraps
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlparse

from cloudinary import api
from cloudinary.exceptions import NotFound
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

patch = mock.patch

# One run's names apart from another's (the emulator is fresh each run, but the tests expect it).
SUFFIX = os.environ.get("SDK_TEST_SUFFIX") or str(os.getpid())
# Served on loopback by the harness: the SDK's tests fetch a remote image through the service.
REMOTE_TEST_IMAGE = os.environ["SDK_TEST_REMOTE_IMAGE"]

RESOURCES_PATH = "test/resources/"
TEST_IMAGE = RESOURCES_PATH + "logo.png"
TEST_IMAGE_SIZE = os.path.getsize(TEST_IMAGE)
TEST_UNICODE_IMAGE = RESOURCES_PATH + "üni_näme_lögö.png"
TEST_DOC = RESOURCES_PATH + "docx.docx"
TEST_ICON = RESOURCES_PATH + "favicon.ico"

TEST_TAG = "pycloudinary_test"
UNIQUE_TAG = f"{TEST_TAG}_{SUFFIX}"
UNIQUE_TEST_ID = UNIQUE_TAG
TEST_FOLDER = "test_folder"
UNIQUE_TEST_FOLDER = UNIQUE_TAG + TEST_FOLDER

EVAL_STR = (
    'if (resource_info["width"] < 450) { upload_options["quality_analysis"] = true }; '
    'upload_options["context"] = "width=" + resource_info["width"]'
)
ON_SUCCESS_STR = 'current_asset.update({tags: ["autocaption"]});'
MOCK_REQUEST_ID = "e529e88d138f4013655501c4711233d3"
URLLIB3_REQUEST = "urllib3._request_methods.RequestMethods.request"


class UTC(tzinfo):
    def utcoffset(self, dt: Any) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: Any) -> str:
        return "UTC"

    def dst(self, dt: Any) -> timedelta:
        return timedelta(0)


# --- reading a mocked urllib3 request (the SDK's mocked tests) ----------------------------------


def get_method(mocker: Any) -> str:
    return str(mocker.call_args[1]["method"])


def get_uri(mocker: Any) -> str:
    return urlparse(mocker.call_args[1]["url"]).path


def get_headers(mocker: Any) -> Any:
    return mocker.call_args[1]["headers"]


def get_json_body(mocker: Any) -> Any:
    return json.loads(mocker.call_args[1]["body"].decode("utf-8") or "{}")


def get_params(mocker: Any) -> dict[str, Any]:
    """A mocked request's parameters: its JSON body, its query string, or its form fields, with
    `name[]` and `name[N]` fields gathered into lists."""
    method = get_method(mocker).upper()
    if get_headers(mocker).get("Content-Type") == "application/json" and method != "GET":
        return dict(get_json_body(mocker))
    if method == "GET":
        pairs = parse_qsl(urlparse(mocker.call_args[1]["url"]).query, keep_blank_values=True)
    else:
        fields = mocker.call_args[1].get("fields") or {}
        pairs = list(fields.items() if isinstance(fields, dict) else fields)
    params: dict[str, Any] = {}
    for key, value in pairs:
        name, listed = (key.split("[", 1)[0], True) if key.endswith("]") and "[" in key else (key, False)
        if listed:
            params.setdefault(name, []).append(value)
        elif name in params:
            params[name] = [*(params[name] if isinstance(params[name], list) else [params[name]]), value]
        else:
            params[name] = value
    return params


def get_param(mocker: Any, name: str) -> Any:
    return get_params(mocker).get(name)


def get_list_param(mocker: Any, name: str) -> Any:
    return get_param(mocker, name)


def http_response_mock(
    body: str = "", headers: dict[str, str] | None = None, status: int = 200
) -> HTTPResponse:
    return HTTPResponse(body.encode(), HTTPHeaderDict(headers or {}), status=status)


def api_response_mock(body: str = '{"foo":"bar"}') -> HTTPResponse:
    return http_response_mock(
        body,
        {
            "x-featureratelimit-limit": "0",
            "x-featureratelimit-reset": "Sat, 01 Apr 2017 22:00:00 GMT",
            "x-featureratelimit-remaining": "0",
            "x-request-id": MOCK_REQUEST_ID,
        },
    )


def uploader_response_mock() -> HTTPResponse:
    return http_response_mock('{"foo":"bar"}', {"x-request-id": MOCK_REQUEST_ID})


def populate_large_file(file_io: Any, size: int, chunk_size: int = 4096) -> None:
    """A white 24-bit BMP of `size` bytes: 1,400 x 1,400 for the SDK's 5,880,138 (a 138-byte header
    and its rows), as its chunked-upload tests expect."""
    side = 1400
    header = b"BM" + struct.pack("<IHHI", size, 0, 0, 138)
    header += struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, side * side * 3, 2835, 2835, 0, 0)
    file_io.write(header.ljust(138, b"\x00"))
    remaining = size - file_io.tell()
    while remaining > 0:
        file_io.write(b"\xff" * min(remaining, chunk_size))
        remaining -= chunk_size
    file_io.flush()
    file_io.seek(0)


# --- live tests -------------------------------------------------------------------------------


def retry_assertion(num_tries: int = 3, delay: float = 3) -> Callable[[Any], Any]:
    """Retry a test whose service is eventually consistent (the real one's search index)."""

    def decorate(test: Any) -> Any:
        @wraps(test)
        def retried(*args: Any, **kwargs: Any) -> Any:
            for _ in range(num_tries - 1):
                try:
                    return test(*args, **kwargs)
                except AssertionError:
                    time.sleep(delay)
            return test(*args, **kwargs)

        return retried

    return decorate


@contextmanager
def ignore_exception(
    error_classes: tuple[type[BaseException], ...] = (Exception,),
    suppress_traceback_classes: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    try:
        yield
    except error_classes as error:
        if not isinstance(error, suppress_traceback_classes):
            traceback.print_exc(file=sys.stderr)


def cleanup_test_resources_by_tag(params: list[tuple[Any, ...]]) -> None:
    for tag, *options in params:
        with ignore_exception():
            api.delete_resources_by_tag(tag, **(options[0] if options else {}))


def cleanup_test_resources(params: list[tuple[Any, ...]]) -> None:
    for public_ids, *options in params:
        with ignore_exception():
            api.delete_resources(public_ids, **(options[0] if options else {}))


def cleanup_test_transformation(params: list[tuple[Any, ...]]) -> None:
    for transformations, *options in params:
        for transformation in transformations:
            with ignore_exception(suppress_traceback_classes=(NotFound,)):
                api.delete_transformation(transformation, **(options[0] if options else {}))


class CldTestCase(unittest.TestCase):
    def assertObjectContainsSubset(self, actual: Any, expected: Any, msg: Any = None) -> None:
        """Every key and value of `expected` is in `actual` (nested dicts compared the same way)."""
        for key, value in expected.items():
            self.assertIn(key, actual, msg)
            if isinstance(value, dict):
                self.assertObjectContainsSubset(actual[key], value, msg)
            else:
                self.assertEqual(actual[key], value, msg)

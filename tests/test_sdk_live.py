"""Cloudinary's own tests against the emulator: the official Python SDK's live tests (its source
distribution's test/test_*.py, which `make test` fetches by name into var/sdk-tests), the test
functions unmodified, run by pytest in a process of their own with CLOUDINARY_URL pointing at
`postupload emulator`. What they import from their `test` package and do not ship (helpers, images)
is written here: tests/sdk/ and `_resources`.

IN_SCOPE are the live tests of the operations postupload uses or could use. Each one must pass; the
docs/emulator.md says which are left out and why."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ACCOUNT, RunningEmulator

ROOT = Path(__file__).resolve().parent.parent
SDK_TESTS = ROOT / "var" / "sdk-tests" / "test"
HELPERS = Path(__file__).resolve().parent / "sdk"

# The SDK's logo is 241 x 51 (test_uploader.py checks the answer's width and height).
LOGO = (241, 51)

IN_SCOPE = [
    "test_uploader.py::UploaderTest::test_upload",
    "test_uploader.py::UploaderTest::test_upload_path_lib_path",
    "test_uploader.py::UploaderTest::test_upload_unicode_filename",
    "test_uploader.py::UploaderTest::test_upload_file_io_without_filename",
    "test_uploader.py::UploaderTest::test_upload_custom_filename",
    "test_uploader.py::UploaderTest::test_upload_filename_override",
    "test_uploader.py::UploaderTest::test_upload_url",
    "test_uploader.py::UploaderTest::test_upload_unicode_url",
    "test_uploader.py::UploaderTest::test_upload_data_uri",
    "test_uploader.py::UploaderTest::test_rename",
    "test_uploader.py::UploaderTest::test_use_filename",
    "test_uploader.py::UploaderTest::test_explicit",
    "test_uploader.py::UploaderTest::test_explicit_error_handling_not_found",
    "test_uploader.py::UploaderTest::test_update_metadata",
    "test_uploader.py::UploaderTest::test_upload_with_metadata",
    "test_uploader.py::UploaderTest::test_explicit_with_metadata",
    "test_uploader.py::UploaderTest::test_uploader_update_metadata",
    "test_uploader.py::UploaderTest::test_uploader_update_metadata_on_multiple_resources",
    "test_uploader.py::UploaderTest::test_eager",
    "test_uploader.py::UploaderTest::test_tags",
    "test_uploader.py::UploaderTest::test_multiple_tags",
    "test_uploader.py::UploaderTest::test_remove_all_tags",
    "test_uploader.py::UploaderTest::test_context",
    "test_uploader.py::UploaderTest::test_add_context",
    "test_uploader.py::UploaderTest::test_remove_all_context",
    "test_uploader.py::UploaderTest::test_manual_moderation",
    "test_uploader.py::UploaderTest::test_raw_conversion",
    "test_uploader.py::UploaderTest::test_categorization",
    "test_uploader.py::UploaderTest::test_detection",
    "test_uploader.py::UploaderTest::test_background_removal",
    "test_uploader.py::UploaderTest::test_allowed_formats",
    "test_uploader.py::UploaderTest::test_allowed_formats_with_illegal_format",
    "test_uploader.py::UploaderTest::test_allowed_formats_with_format",
    "test_uploader.py::UploaderTest::test_upload_large",
    "test_uploader.py::UploaderTest::test_upload_large_url",
    "test_uploader.py::UploaderTest::test_upload_large_file_io",
    "test_api.py::ApiTest::test01_resource_types",
    "test_api.py::ApiTest::test03_resources_cursor",
    "test_api.py::ApiTest::test07_resource_metadata",
    "test_api.py::ApiTest::test07_b_resource_by_asset_id",
    "test_api.py::ApiTest::test20_manual_moderation",
    "test_api.py::ApiTest::test22_raw_conversion",
    "test_api.py::ApiTest::test23_categorization",
    "test_api.py::ApiTest::test24_detection",
    "test_api.py::ApiTest::test32_background_removal",
    "test_api.py::ApiTest::test_structured_metadata_in_resources_api",
    "test_api.py::ApiTest::test_structured_metadata_in_resources_by_tag_api",
    "test_api.py::ApiTest::test_structured_metadata_in_resources_by_moderation_api",
    "test_api.py::ApiTest::test_resources_by_context",
    "test_metadata.py::MetadataTest::test02_get_metadata_field",
    "test_metadata.py::MetadataTest::test05_create_date_metadata_field",
    "test_metadata.py::MetadataTest::test07_create_set_metadata_field",
    "test_metadata.py::MetadataTest::test08_update_metadata_field",
    "test_metadata.py::MetadataTest::test09_update_metadata_field_datasource",
    "test_metadata.py::MetadataTest::test12_delete_metadata_field_data_source",
    "test_metadata.py::MetadataTest::test13_date_field_default_value_validation",
    "test_metadata.py::MetadataTest::test14_integer_field_validation",
    "test_metadata.py::MetadataTest::test15_restore_metadata_field_datasource",
    "test_metadata.py::MetadataTest::test_order_by_asc_by_default_in_a_metadata_field_data_source",
    "test_metadata.py::MetadataTest::test_order_by_asc_in_a_metadata_field_data_source",
    "test_metadata.py::MetadataTest::test_order_by_desc_in_a_metadata_field_data_source",
    "test_search.py::SearchTest::test_should_return_all_images_tagged",
    "test_search.py::SearchTest::test_should_return_resource",
    "test_search.py::SearchTest::test_should_return_resource_by_asset_id_equals",
    "test_search.py::SearchTest::test_should_return_resource_by_asset_id_colon",
    "test_search.py::SearchTest::test_should_paginate_resources_limited_by_tag_and_ordered_by_ascending_public_id",
    "test_search.py::SearchTest::test_should_include_context",
    "test_search.py::SearchTest::test_should_include_context_tags_and_image_metadata",
]


def _resources(directory: Path) -> None:
    """The files the SDK's tests upload: its logo (241 x 51 PNG, also under a non-ASCII name), an icon
    and a document (uploaded as raw)."""
    directory.mkdir(parents=True)
    logo = Image.new("RGBA", LOGO, (52, 72, 196, 255))
    logo.save(directory / "logo.png")
    shutil.copy(directory / "logo.png", directory / "üni_näme_lögö.png")
    Image.new("RGBA", (16, 16), (255, 128, 0, 255)).save(directory / "favicon.ico")
    (directory / "docx.docx").write_bytes(b"PK\x03\x04" + b"not really a document" * 20)


@pytest.fixture
def remote_image(tmp_path: Path) -> Iterator[str]:
    """The SDK's "remote" image, served on loopback: its logo again (the tests expect its size)."""
    served = tmp_path / "served"
    served.mkdir()
    Image.new("RGB", LOGO, (0, 128, 0)).save(served / "old_logo.png")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/old_logo.png"
    server.shutdown()


def _outcomes(report: Path) -> dict[str, str]:
    """test id -> passed | failed: message, from pytest's JUnit XML."""
    found = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        *_, module, test_class = (case.get("classname") or "").split(".")
        name = f"{module}.py::{test_class}"
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if problem is None else f"{problem.tag}: {(problem.get('message') or '')[:300]}"
        found[f"{name}::{case.get('name')}"] = outcome
    return found


def test_the_sdks_own_tests_pass_against_the_emulator(tmp_path: Path, remote_image: str) -> None:
    assert SDK_TESTS.is_dir(), (
        f"{SDK_TESTS} is missing: `make test` fetches the SDK's source distribution and puts its tests there"
    )
    package = tmp_path / "run" / "test"
    shutil.copytree(HELPERS, package, ignore=shutil.ignore_patterns("__pycache__"))
    for source in SDK_TESTS.glob("test_*.py"):
        shutil.copy(source, package / source.name)
    _resources(package / "resources")
    emulator = RunningEmulator(ACCOUNT)
    report = tmp_path / "report.xml"
    try:
        env = {
            **os.environ,
            "CLOUDINARY_URL": emulator.account.to_url(),
            "RUN_SEARCH_TESTS": "1",
            "SDK_TEST_REMOTE_IMAGE": remote_image,
            "PYTHONPATH": str(tmp_path / "run"),
        }
        ran = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"),
                *("-o", "addopts=", "--rootdir", str(tmp_path / "run"), f"--junitxml={report}"),
                *(f"test/{name}" for name in IN_SCOPE),
            ],
            cwd=tmp_path / "run",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        emulator.server.shutdown()
    outcomes = _outcomes(report)
    failed = {name: outcome for name, outcome in outcomes.items() if outcome != "passed"}
    passed = len(outcomes) - len(failed)
    assert len(outcomes) == len(IN_SCOPE), ran.stdout[-3000:] + ran.stderr[-3000:]
    assert not failed, f"{passed} of {len(IN_SCOPE)} passed; failed:\n" + "\n".join(
        f"{name}: {outcome}" for name, outcome in sorted(failed.items())
    )

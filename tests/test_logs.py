"""Logs an operator can use: one line per notification a worker handles, at INFO; RQ's routine at
DEBUG; POSTUPLOAD_LOG_LEVEL; and POSTUPLOAD_LOG_FORMAT=json for log pipelines."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from postupload import logs
from postupload.config import Settings
from postupload.errors import ConfigError
from tests.conftest import Stack, wait_until

TAGS = """rules:
  - name: tag-products
    match: {public_id: [{prefix: products/}]}
    actions:
      - tags: {add: [product]}
"""


def _configured(form: str, level: str = "INFO") -> tuple[io.StringIO, logging.Logger]:
    out = io.StringIO()
    logging.getLogger().handlers.clear()  # configure() leaves a configured process as it is
    logs.configure(level, form)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out, logging.getLogger("postupload.test")


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context_fields_and_stay_one_line() -> None:
    out, log = _configured("json")
    log.info(
        "notification %s queued (%s)",
        "abc",
        "upload",
        extra={"notification": "abc", "cloud": "demo", "outcome": "queued", "asset": "evil\nline"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("with a traceback")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the traceback is inside its object, not lines of its own
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "notification abc queued (upload)"
    assert (first["level"], first["logger"], first["notification"]) == ("INFO", "postupload.test", "abc")
    assert (first["cloud"], first["outcome"], first["asset"]) == ("demo", "queued", "evil\nline")
    assert "time" in first and isinstance(first["process"], int)
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]


def test_the_readable_form_is_the_default_and_the_level_is_honoured() -> None:
    out, log = _configured("text", "WARNING")
    log.info("not shown")
    log.warning("shown %s", "a\nforged line")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("postupload.test WARNING shown a\\nforged line")


def test_the_log_settings_are_checked() -> None:
    settings = Settings.from_env({"POSTUPLOAD_LOG_LEVEL": "debug", "POSTUPLOAD_LOG_FORMAT": "JSON"})
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (Settings.from_env({}).log_level, Settings.from_env({}).log_format) == ("INFO", "text")
    with pytest.raises(ConfigError, match=r"POSTUPLOAD_LOG_FORMAT.*expected one of text, json, got 'yaml'"):
        Settings.from_env({"POSTUPLOAD_LOG_FORMAT": "yaml"})
    with pytest.raises(ConfigError, match=r"POSTUPLOAD_LOG_LEVEL.*one of DEBUG, INFO, WARNING, ERROR"):
        Settings.from_env({"POSTUPLOAD_LOG_LEVEL": "loud"})


def _worker_log(stack: Stack) -> str:
    return "\n".join(
        path.read_text(errors="replace") for path in sorted(stack.processes.logs.glob("worker-*.log"))
    )


def test_a_worker_logs_one_line_per_notification_readable_by_default(make_stack: Any) -> None:
    stack: Stack = make_stack(TAGS)
    stack.start_workers(1)
    stack.upload(public_id="products/shoe")
    stack.upload(public_id="other/thing")
    # Two uploads, and the resource_tags_changed notification the tag sets off.
    assert wait_until(lambda: _worker_log(stack).count(" notification ") >= 3 and stack.idle(), 20)
    text = _worker_log(stack)
    lines = [line for line in text.splitlines() if " notification " in line]
    ids = [line.split(" notification ")[1].split()[0] for line in lines]
    assert len(lines) == 3 and len(set(ids)) == 3, text  # one line per notification
    tagged = next(line for line in lines if "rule tag-products" in line)
    assert " INFO " in tagged and "(upload in " in tagged and "1 action (1 batched)" in tagged, tagged
    assert sum("no rule matched" in line for line in lines) == 2, text
    # RQ's four lines per job are at DEBUG: none of them at INFO.
    assert "Job OK" not in text and "Successfully completed" not in text and "result discarded" not in text


def test_a_worker_logs_json_with_the_notification_job_and_outcome(make_stack: Any) -> None:
    stack: Stack = make_stack(TAGS, env={"POSTUPLOAD_LOG_FORMAT": "json"})
    stack.start_workers(1)
    stack.upload(public_id="products/boot")
    assert wait_until(lambda: '"outcome": "finished"' in _worker_log(stack), 20), _worker_log(stack)
    entries = [json.loads(line) for line in _worker_log(stack).splitlines() if line.startswith("{")]
    (done,) = [entry for entry in entries if entry.get("outcome") == "finished"]
    assert done["asset"] == "products/boot" and done["rule"] == "tag-products" and done["type"] == "upload"
    assert done["cloud"] and len(done["notification"]) == 32 and done["job"]
    # Every line the worker wrote at INFO is an object (RQ's own included), none a readable line.
    assert all(line.startswith("{") for line in _worker_log(stack).splitlines() if line.strip())

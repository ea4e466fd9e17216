"""`var/run.env` holds REDIS_URL with its password: nobody but its owner may read it, at any moment."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from postupload.local import run_env


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_is_never_readable_by_others_not_even_while_written(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "var" / "run.env"
    path.parent.mkdir()
    path.write_text("old\n")
    path.chmod(0o644)  # left by an older version
    seen: list[int] = []
    real_replace = os.replace

    def replace(source: Any, target: Any) -> None:
        seen.append(_mode(Path(source)))  # the file as it was filled, before it took the name
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    previous = os.umask(0o022)
    try:
        run_env.write({"REDIS_URL": "redis://:secret@127.0.0.1:6379/0"}, path)
    finally:
        os.umask(previous)
    assert seen == [0o600] and _mode(path) == 0o600
    assert run_env.read(path) == {"REDIS_URL": "redis://:secret@127.0.0.1:6379/0"}
    assert [entry.name for entry in path.parent.iterdir()] == ["run.env"]


def test_a_write_that_fails_leaves_no_partial_file(tmp_path: Path, monkeypatch: Any) -> None:
    def refuse(source: Any, target: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        run_env.write({"A": "b"}, tmp_path / "run.env")
    assert list(tmp_path.iterdir()) == []

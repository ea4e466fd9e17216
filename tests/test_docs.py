"""The docs are kept true: the README's and the walkthrough's transcripts are run and their outputs
compared, and every module, setting, command, option and link the docs name exists."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest

from postupload.cli import main
from tests.conftest import ROOT, free_port, wait_until

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


# --- the walkthrough, run -----------------------------------------------------------------------


def transcript(page: Path) -> list[tuple[str, list[str]]]:
    """The (command, expected output lines) of a page's ```console blocks: `$ ` starts a command,
    `> ` continues it, any other line is output."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.startswith("> ") and steps:
                steps[-1] = (steps[-1][0] + "\n" + line[2:], steps[-1][1])
            elif steps:
                steps[-1][1].append(line)
    return steps


VARYING = [  # what differs from run to run, the same on both sides
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "TIME"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "HEX"),  # ids; a rule set's version (12) is compared
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
]


def normal(text: str) -> str:
    for pattern, placeholder in VARYING:
        text = pattern.sub(placeholder, text)
    return text.rstrip()


def matches(expected: list[str], actual: str) -> bool:
    """Line by line; `…` in an expected line stands for any characters, and a line of `…` alone for
    any lines."""
    parts = []
    for line in expected:
        line = normal(line)
        if line.strip() == "…":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("…")) + r"\n")
    return (
        re.fullmatch("".join(parts), "".join(normal(line) + "\n" for line in actual.rstrip().splitlines()))
        is not None
    )


def _still_reading(command: str) -> bool:
    """Commands that only read what the stack did: asked again until the stack has done it."""
    reading = ("curl -s $POSTUPLOAD_WEB_URL", ".venv/bin/postupload history")
    dry_replay = command.startswith(".venv/bin/postupload replay") and "--dry-run" in command
    return command.startswith((*reading, ".venv/bin/postupload rules diff")) or dry_replay


@pytest.fixture
def stack_dir(tmp_path: Path) -> Any:
    """`postupload run` in a directory set up as a clone is: rules, examples, and `.venv/bin`."""
    for name in ("rules", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "postupload").write_text(f'#!/bin/sh\nexec {sys.executable} -m postupload "$@"\n')
    (bin_dir / "postupload").chmod(0o755)
    # The walkthrough's edit, made by an editor that knows what to type.
    editor = tmp_path / "editor"
    editor.write_text(
        "#!/bin/sh\n"
        'sed -i \'s/eager: \\["c_scale,w_200", /eager: ["c_scale,w_200", "c_scale,w_400", /\' "$1"\n'
    )
    editor.chmod(0o755)
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CLOUDINARY_URL", "POSTUPLOAD"))
    }
    environ["EDITOR"] = str(editor)
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "postupload", "run", "--port", str(free_port())],
        cwd=tmp_path,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    assert wait_until(lambda: "postupload is running" in (tmp_path / "run.log").read_text(), 60)
    yield tmp_path, environ
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.parametrize("page", [ROOT / "README.md", DOCS / "walkthrough.md"], ids=lambda p: p.name)
def test_the_transcripts_run_as_written(stack_dir: Any, page: Path) -> None:
    """Against `postupload run`, as a reader would run them. (The backfill page's needs 1,200 assets
    in the emulator, which `postupload run` does not preload: its output is shown, not checked.)"""
    here, environ = stack_dir
    steps = transcript(page)
    # WALKTHROUGH_RECORD=FILE: write what each command printed, to bring the page up to date.
    recording: list[str] | None = [] if os.environ.get("WALKTHROUGH_RECORD") else None
    assert len(steps) >= 2
    for command, expected in steps:
        deadline = time.monotonic() + (30 if _still_reading(command) and recording is None else 0)
        while True:
            done = subprocess.run(
                ["bash", "-c", f". var/run.env\n{command}"],
                cwd=here,
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
            )
            output = done.stdout + done.stderr
            if matches(expected, output) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if recording is not None:  # to rewrite the page from a real run
            recording.append(f"$ {command}\n{output}")
            continue
        assert matches(expected, output), (
            f"$ {command}\nexpected:\n" + "\n".join(expected) + f"\ngot:\n{output}"
        )
    if recording is not None:
        Path(os.environ["WALKTHROUGH_RECORD"]).write_text("".join(recording))


# --- names the docs give, checked ---------------------------------------------------------------


def test_every_module_is_placed_in_the_architecture_page() -> None:
    tree = (DOCS / "architecture.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "postupload").rglob("*.py"))
        if path.name != "__init__.py" and not re.search(rf"\b{re.escape(path.name)}\b", tree)
    ]
    assert missing == []
    packages = {path.parent.name for path in (ROOT / "postupload").rglob("__init__.py")} - {"postupload"}
    assert all(f"  {name}/" in tree for name in packages)


def test_every_link_of_the_readme_and_docs_leads_somewhere() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_settings_table_names_every_variable_config_reads() -> None:
    read = set(
        re.findall(
            r'"((?:POSTUPLOAD|REDIS|CLOUDINARY)_[A-Z_]+)"', (ROOT / "postupload/config.py").read_text()
        )
    )
    table = (DOCS / "deployment.md").read_text()
    documented = set(re.findall(r"`((?:POSTUPLOAD|REDIS|CLOUDINARY)_[A-Z_]+)`", table))
    assert read - documented == set(), "read but not documented"
    assert {v for v in documented if v.startswith("POSTUPLOAD_")} - read <= {
        "POSTUPLOAD_WEB_URL",
        "POSTUPLOAD_EMULATOR_URL",
    }


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    found: dict[tuple[str, ...], click.Command] = {}
    for name, command in group.commands.items():
        found[(*prefix, name)] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, (*prefix, name)))
    return found


def test_every_command_and_option_the_docs_show_exists() -> None:
    commands = _commands(main)
    shown = 0
    for page in PAGES:
        for line in re.findall(r"postupload ((?:[a-z][a-z-]* ?)+(?:[^`\n|]*))", page.read_text()):
            words = line.split()
            path: tuple[str, ...] = ()
            while words and (*path, words[0]) in commands:
                path, words = (*path, words[0]), words[1:]
            if not path:
                continue
            shown += 1
            options = {opt for param in commands[path].params for opt in getattr(param, "opts", [])}
            for word in words:
                option = word.split("=")[0].rstrip(",.;:)")
                if re.fullmatch(r"--[a-z][a-z-]*", option):
                    assert option in options or option == "--help", (
                        f"{page.name}: postupload {' '.join(path)} {option}"
                    )
    assert shown > 30

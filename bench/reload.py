"""Loading a large rule set: time and peak memory of `load_ruleset`, by YAML loader, in one process.

Run with `.venv/bin/python -m bench.reload [--rules 10000]`. The rules are bench/match.py's mix,
written as YAML files of 1,000 rules each. Each loader is timed (best of 3; files already read are
not parsed again, so the cache is cleared before each) and its peak memory taken with tracemalloc
(Python allocations: what a load adds to a process). The pure-Python loader is what postupload used
before; the figures are printed as ratios against it. Then one file is edited and the set reloaded,
as a running process does.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml
import yamlcore

from bench.match import make_rules
from postupload.rules import loading, yaml_source

PER_FILE = 1_000


def write_rules(directory: Path, count: int) -> None:
    patterns = make_rules(count, random.Random(7))
    for start in range(0, count, PER_FILE):
        rules = [
            {
                "name": f"rule-{index}",
                "match": pattern,
                "actions": [{"tags": {"add": [f"t{index}"]}}],
            }
            for index, pattern in enumerate(patterns[start : start + PER_FILE], start)
        ]
        text = yaml.safe_dump({"rules": rules}, sort_keys=False, default_flow_style=None, width=110)
        (directory / f"{start // PER_FILE:03d}.yaml").write_text(text)


def measure(directory: Path) -> tuple[float, float]:
    """(seconds, best of 3; peak MiB of Python allocations while loading)."""
    times = []
    for _ in range(3):
        loading._loaded_files.clear()
        started = time.perf_counter()
        loading.load_ruleset(directory)
        times.append(time.perf_counter() - started)
    loading._loaded_files.clear()
    tracemalloc.start()
    loading.load_ruleset(directory)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return min(times), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        write_rules(directory, options.rules)
        print(f"{options.rules} rules in {len(list(directory.glob('*.yaml')))} files")
        figures = {}
        for name, loader in (("pure-Python loader", yamlcore.CoreLoader), ("C loader", yaml_source.LOADER)):
            chosen, yaml_source.LOADER = yaml_source.LOADER, loader
            try:
                figures[name] = measure(directory)
            finally:
                yaml_source.LOADER = chosen
            seconds, peak = figures[name]
            print(f"  {name:>18}: {seconds:.2f} s, peak {peak:.0f} MiB")
        loading.load_ruleset(directory)  # what runs now
        edited = directory / "000.yaml"
        edited.write_text(edited.read_text().replace("rule-0\n", "rule-0-edited\n", 1))
        started = time.perf_counter()
        loading.load_ruleset(directory)
        print(f"  a reload after one file of {PER_FILE} rules changed: {time.perf_counter() - started:.2f} s")
    base_seconds, base_peak = figures["pure-Python loader"]
    seconds, peak = figures["C loader"]
    print(f"C loader / pure-Python: time {seconds / base_seconds:.2f}x, peak memory {peak / base_peak:.2f}x")


if __name__ == "__main__":
    main()

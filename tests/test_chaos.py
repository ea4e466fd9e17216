"""A short chaos run (bench/chaos.py runs 2,000 uploads): faults, duplicated notifications, a worker
SIGKILLed, Redis restarted and the web SIGKILLed while uploads arrive. Nothing is lost, nothing is
done twice that an answer lost or a call in flight does not explain, and no worker is left dead."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import run


def test_nothing_is_lost_or_doubled_through_faults_kills_and_restarts(tmp_path: Path) -> None:
    report = run(40, seed=7, error_rate=0.03, quiet_within=150, logs=tmp_path)  # kept for a failure
    told = "\n".join(report.lines())
    assert len(report.events) == 3, told  # every disruption happened
    assert report.faults["error"] and report.faults["duplicated notification"], told
    assert report.lost == {} and report.failed_jobs == 0, told
    assert report.unexplained == 0, told
    assert report.dead_workers == 0, told

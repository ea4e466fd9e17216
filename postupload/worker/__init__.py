"""The worker: the job logic, the execution of a plan, and RQ's internals behind one wall.

RQ stores a job's function by name: `postupload.worker.process_notification` and
`postupload.worker.apply_tag_item` stay importable here so that jobs queued by an earlier release
still run.
"""

from postupload.worker.jobs import apply_tag_item, process_notification
from postupload.worker.loop import run_worker

__all__ = ["apply_tag_item", "process_notification", "run_worker"]

"""Every Redis key postupload writes, and how long each lives. RQ's own keys are RQ's."""

from __future__ import annotations

# The one queue: notifications, and (at its front) notifications deferred to a rate-limit reset and
# tag changes Cloudinary refused in a batch. One queue, because RQ dequeues safely (BLMOVE into an
# intermediate list that maintenance recovers) only from a single queue; from several it pops, and
# a job popped just before a crash or a Redis restart would be lost.
QUEUE = "postupload"

DAY = 24 * 3600
# Cloudinary retries for minutes and may deliver twice at any time; a day and an hour covers it.
DEDUPE_TTL = DAY + 3600
JOB_TIMEOUT = 600
# A finished job is deleted as it finishes: what it did is in each asset's history and its
# notification in the copies kept for previews (bounded by memory); keeping the job and its result as
# well cost 14 KiB an upload for 7 days, most of all Redis held per upload.
FINISHED_JOB_TTL = 0
FAILED_JOB_TTL = 7 * DAY  # failed jobs, with their reasons, for ops to read and replay
# Done marks outlive failed jobs, so replaying one skips what had succeeded.
DONE_TTL = FAILED_JOB_TTL + DAY
HISTORY_LENGTH = 500  # entries kept per asset
HISTORY_ENTRY_BYTES = 4096  # an entry's bound: its longest values are cut to fit (history.py)
HISTORY_TTL = 30 * DAY
CAP_WINDOW = 3600  # the loop guard counts actions per asset per hour
CLEANING_LOCK_TTL = 15  # RQ's lock on cleaning a queue's registries (held for well under a second)


def dedupe(notification_id: str) -> str:
    """Set when a notification's job is stored; an identical body is then a duplicate."""
    return f"postupload:dedupe:{notification_id}"


def done(action_key: str) -> str:
    """Set when an action took effect (or joined a tag batch), with its outcome."""
    return f"postupload:done:{action_key}"


def cap(asset_key: str, window: int) -> str:
    """Actions run on an asset within one CAP_WINDOW."""
    return f"postupload:cap:{asset_key}:{window}"


def history(asset_key: str) -> str:
    return f"postupload:history:{asset_key}"


def asset(public_id: str) -> str:
    """public_id (or resource_type/type/public_id) -> the asset key its history is kept under."""
    return f"postupload:asset:{public_id}"


# A worker probing an unknown Admin budget holds the probe this long at most (its call may hang),
# unless told its call's timeout (AdminBudget's call_timeout).
ADMIN_PROBE_TTL = 60
# A probe outlives its call's timeout by this much: the answer is read and learnt after it.
ADMIN_PROBE_MARGIN = 5.0


def admin_budget(cloud_name: str) -> tuple[str, str]:
    """The shared Admin API budget (hash: remaining, reset) and the lock of the call probing it."""
    return f"postupload:admin-budget:{cloud_name}", f"postupload:admin-budget:{cloud_name}:probe"


TAG_BATCHES_DUE = "postupload:tag-batches:due"  # sorted set: batch id -> when to send (or lease end)
TAG_BATCH_SPECS = "postupload:tag-batches:specs"  # hash: batch id -> [resource_type, type, command, tags]
TAG_BATCH_ATTEMPTS = "postupload:tag-batches:attempts"  # hash: batch id -> failed sends in a row
TAG_BATCHES_WAKE = "postupload:tag-batches:wake"  # list: a batch started or filled; a flusher looks


def flusher_stop(process: str) -> str:
    """A list one flusher blocks on beside the wake list: pushed to, it stops waiting."""
    return f"postupload:tag-flusher:{process}"


def tag_batch(batch_id: str) -> str:
    """The list of assets waiting in one batch."""
    return f"postupload:tag-batch:{batch_id}"


# Metrics: every process adds its counts to one hash (see measures.py), so totals are the deployment's.
METRICS = "postupload:metrics"
RECENT_MINUTES = 60  # notifications per minute, kept this many minutes for the console
RECENT_HOURS = 24  # rule matches per hour, kept this many hours for the console


def notifications_in_minute(minute: int) -> str:
    """Hash: answer -> notifications given that answer within one minute (unix time // 60)."""
    return f"postupload:recent:notifications:{minute}"


def origins_in_minute(minute: int) -> str:
    """Hash: origin (own, other, untold) -> verified notifications within one minute."""
    return f"postupload:recent:origins:{minute}"


def matches_in_hour(hour: int) -> str:
    """Hash: rule -> notifications it matched within one hour (unix time // 3600)."""
    return f"postupload:recent:matches:{hour}"


def invalid_rule_set(version: str) -> str:
    """Set once per distinct invalid rule-set content, so each bad edit is counted once."""
    return f"postupload:invalid-rule-set:{version}"


RECORDED = "postupload:recorded"  # stream: the latest notifications received, for previews
LAST_GOOD_RULES = "postupload:rules:last-good"  # hash: version, sources (path -> text), at

BACKFILLS = "postupload:backfills"  # sorted set: backfill key -> when it started


def backfill(key: str) -> str:
    """Hash: a backfill's arguments, cursor and counts (listed, queued, done, failed), its state."""
    return f"postupload:backfill:{key}"


CONSOLE_SESSION_TTL = 12 * 3600  # a console login lasts this long, or until logout
LOGIN_WINDOW = 60  # failed console logins are counted per client address over this many seconds
LOGIN_FAILURES = 10  # more failed logins than this in the window: refused until it ends


def console_session(session_hash: str) -> str:
    """A console login (string: its CSRF value), by the SHA-256 of its cookie: Redis never holds
    the cookie itself."""
    return f"postupload:console:session:{session_hash}"


def login_failures(address: str) -> str:
    return f"postupload:console:login-failures:{address}"

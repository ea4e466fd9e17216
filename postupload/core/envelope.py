"""The envelope: a verified notification as it travels through the queue to a worker. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from postupload.core.notification import Notification, notification_id, parse_notification
from postupload.core.signature import verify_notification
from postupload.errors import BadNotification

REPLAY_PREFIX = "replay-"  # a replay's key; a backfill's is bare hex


@dataclass(frozen=True)
class Envelope:
    """One notification: its id (identical bodies share it), when it came, for which product environment."""

    id: str
    received_at: float
    cloud_name: str
    notification: Notification
    backfill: str | None = None  # the backfill that made it from an existing asset, or the replay
    # that queued it again, if one did: what counts its done and failed jobs
    only_rules: tuple[str, ...] | None = None  # a backfill's --rule: only these rules act on it

    @classmethod
    def from_http(
        cls,
        body: bytes,
        headers: Mapping[str, str] | Any,  # werkzeug's Headers too
        *,
        secret: str,
        cloud_name: str,
        now: float,
        tolerance: int,
        algorithms: Collection[str],
    ) -> Envelope:
        """Verify the signature over the raw bytes, then parse; RequestRejected says what is wrong."""
        verify_notification(
            body,
            headers.get("X-Cld-Timestamp"),
            headers.get("X-Cld-Signature"),
            secret,
            now=now,
            tolerance=tolerance,
            algorithms=algorithms,
        )
        return cls(notification_id(body, cloud_name), now, cloud_name, parse_notification(body))

    @classmethod
    def of(cls, body: bytes, notification: Notification, cloud_name: str) -> Envelope:
        """A notification as previews see it: as if delivered for `cloud_name` now."""
        return cls(notification_id(body, cloud_name), 0.0, cloud_name, notification)

    @property
    def event(self) -> Notification:
        """What rules match and placeholders fill: the notification, with the `cloud_name` of the
        product environment it came from (the one whose secret verified it)."""
        return {**self.notification, "cloud_name": self.cloud_name} if self.cloud_name else self.notification

    @property
    def run_kind(self) -> str | None:
        """ "backfill" or "replay" when one of them queued it (its history entry says which)."""
        if self.backfill is None:
            return None
        return "replay" if self.backfill.startswith(REPLAY_PREFIX) else "backfill"

    @property
    def notification_type(self) -> str:
        return str(self.notification.get("notification_type"))

    def to_job(self) -> dict[str, Any]:
        """The JSON value stored as the RQ job's argument (any RQ tool, any language, can read it)."""
        job: dict[str, Any] = {
            "id": self.id,
            "received_at": self.received_at,
            "cloud_name": self.cloud_name,
            "notification": self.notification,
        }
        if self.backfill is not None:
            job["backfill"] = self.backfill
        if self.only_rules is not None:
            job["only_rules"] = list(self.only_rules)
        return job

    @classmethod
    def from_job(cls, value: Any) -> Envelope:
        """The envelope a job carries; BadNotification if the job holds something else."""
        if not isinstance(value, Mapping) or not isinstance(value.get("notification"), dict):
            raise BadNotification("bad_job", "the job does not hold a notification envelope")
        only_rules = value.get("only_rules")
        return cls(
            str(value.get("id")),
            float(value.get("received_at") or 0),
            str(value.get("cloud_name") or ""),
            value["notification"],
            str(value["backfill"]) if value.get("backfill") else None,
            tuple(map(str, only_rules)) if isinstance(only_rules, list) else None,
        )

"""Backfills as values: what to list, and each existing asset as the notification rules see. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from postupload.core.envelope import Envelope

# The fields of an asset record that an upload notification also has (what rules can match on).
ASSET_FIELDS = (
    "public_id",
    "asset_id",
    "version",
    "version_id",
    "resource_type",
    "type",
    "format",
    "width",
    "height",
    "bytes",
    "tags",
    "context",
    "metadata",
    "created_at",
    "asset_folder",
    "folder",
    "display_name",
    "url",
    "secure_url",
    "etag",
)


@dataclass(frozen=True)
class AssetSource:
    """Which existing assets: by prefix, by tag, or by a Search API expression (one of the three)."""

    prefix: str | None = None
    tag: str | None = None
    expression: str | None = None
    resource_type: str = "image"
    type: str = "upload"


@dataclass(frozen=True)
class Backfill:
    """One backfill: its source, the rules it applies (all when empty), and its limits."""

    source: AssetSource
    rules: tuple[str, ...] = ()
    since: str | None = None  # ISO date: only assets created on or after it
    max: int | None = None  # stop after queueing this many
    cloud_name: str = ""  # its product environment, when the deployment serves several

    @property
    def key(self) -> str:
        """The same arguments (in the same product environment), the same backfill: what a second
        run resumes."""
        fields = asdict(self)
        if not self.cloud_name:
            del fields["cloud_name"]  # the key a backfill had before there were several
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def arguments(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        source = self.source
        what = (
            f"prefix {source.prefix!r}"
            if source.prefix is not None
            else f"tag {source.tag!r}"
            if source.tag is not None
            else f"expression {source.expression!r}"
        )
        rules = f", rules {', '.join(self.rules)}" if self.rules else ""
        since = f", created since {self.since}" if self.since else ""
        where = f" in {self.cloud_name}" if self.cloud_name else ""
        return f"{source.resource_type}/{source.type} assets{where} by {what}{rules}{since}"

    def wants(self, resource: dict[str, Any]) -> bool:
        created = str(resource.get("created_at") or "")
        return self.since is None or created[: len(self.since)] >= self.since


def as_notification(resource: dict[str, Any]) -> dict[str, Any]:
    """An existing asset as the upload notification it would have caused, marked `backfill: true`.

    Rules see it as `notification_type: upload`; a rule can leave backfills out with
    `backfill: [{exists: false}]`, or act on them only with `backfill: [true]`."""
    notification: dict[str, Any] = {"notification_type": "upload", "backfill": True}
    for name in ASSET_FIELDS:
        if resource.get(name) is not None:
            notification[name] = resource[name]
    return notification


def envelope(
    backfill: Backfill, resource: dict[str, Any], now: float, cloud_name: str, run: str = ""
) -> Envelope:
    """The job for one asset: its id is the asset version's, the backfill's and the run's, so a
    resumed run queues it once (a run started again queues it anew; done marks per asset version keep
    its effects once anyway)."""
    identity = f"backfill:{backfill.key}:{run}:{resource.get('asset_id') or resource.get('public_id')}:"
    identity += str(resource.get("version"))
    notification_id = hashlib.sha1(identity.encode()).hexdigest()
    return Envelope(
        notification_id,
        now,
        cloud_name,
        as_notification(resource),
        backfill=backfill.key,
        only_rules=backfill.rules or None,
    )

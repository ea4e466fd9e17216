"""The asset model: what the emulator keeps of each asset, and how the API shows it."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Asset:
    public_id: str
    resource_type: str = "image"
    type: str = "upload"
    format: str | None = "jpg"
    width: int | None = None
    height: int | None = None
    bytes: int = 0
    tags: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    moderation_status: str | None = None
    moderation_kind: str | None = None
    asset_folder: str = ""
    original_filename: str | None = None
    moderation_updated_at: float = field(default_factory=time.time)
    access_control: Any = None  # as last set by update (a list of {access_type, start, end})
    asset_id: str = field(default_factory=lambda: secrets.token_hex(16))
    version: int = field(default_factory=lambda: int(time.time()))
    version_id: str = field(default_factory=lambda: secrets.token_hex(16))
    etag: str = field(default_factory=lambda: secrets.token_hex(16))
    derived: list[str] = field(default_factory=list)  # eager transformations, current
    derived_generated: int = 0  # every generation is billed, regenerations included
    addons: dict[str, list[str]] = field(default_factory=dict)  # add-on → every value requested

    def url(self, cloud_name: str, transformation: str = "") -> str:
        path = f"{transformation}/" if transformation else ""
        suffix = f".{self.format}" if self.format else ""
        return (
            f"http://res.cloudinary.com/{cloud_name}/{self.resource_type}/{self.type}/"
            f"{path}v{self.version}/{self.public_id}{suffix}"
        )

    def resource(self, cloud_name: str) -> dict[str, Any]:
        """The asset as the Admin API's `resource` answers it: tags sorted and context as
        `{"custom": ...}`, each left out when there is none (pycloudinary's test_remove_all_tags and
        test_remove_all_context), derived assets as objects, moderation as a list."""
        return self.view(cloud_name, tags=True, context=True, metadata=True, derived=True)

    def view(
        self,
        cloud_name: str,
        *,
        tags: bool = False,
        context: bool = False,
        metadata: bool = False,
        derived: bool = False,
        flat_context: bool = False,
        image_metadata: bool = False,
    ) -> dict[str, Any]:
        """The asset as an API answer shows it, with the optional parts asked for (listings show
        tags, context and metadata only when asked, as Cloudinary does; Search shows context flat)."""
        url = self.url(cloud_name)
        answer: dict[str, Any] = {
            "asset_id": self.asset_id,
            "public_id": self.public_id,
            "version": self.version,
            "version_id": self.version_id,
            "resource_type": self.resource_type,
            "type": self.type,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.version)),
            "etag": self.etag,
            "placeholder": False,
            "asset_folder": self.asset_folder,
            "display_name": self.public_id.rsplit("/", 1)[-1],
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }
        if self.width is None:  # raw files have no dimensions: Cloudinary leaves the keys out
            del answer["width"], answer["height"]
        if self.original_filename:
            answer["original_filename"] = self.original_filename
        if tags and self.tags:
            answer["tags"] = sorted(self.tags)
        if context and self.context:
            answer["context"] = dict(self.context) if flat_context else {"custom": dict(self.context)}
        if metadata:
            answer["metadata"] = dict(self.metadata)
        if image_metadata:
            answer["image_metadata"] = {"Format": (self.format or "").upper()} if self.format else {}
        if self.moderation_kind:
            answer["moderation_kind"] = self.moderation_kind
            answer["moderation_status"] = self.moderation_status
            answer["moderation"] = self.moderation()
        if derived:
            answer["derived"] = [self.derived_item(cloud_name, item) for item in self.derived]
        return answer

    def moderation(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": self.moderation_kind,
                "status": self.moderation_status,
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.moderation_updated_at)),
            }
        ]

    def state(self, cloud_name: str) -> dict[str, Any]:
        """The emulator's own view (/emulator/state): everything it keeps, in the order things
        happened (tags as added), with what was billed."""
        return {
            **self.view(cloud_name, metadata=True),
            "tags": list(self.tags),
            "context": {"custom": dict(self.context)} if self.context else {},
            "moderation_status": self.moderation_status,
            "derived": list(self.derived),
            "derived_generated": self.derived_generated,
            "addons": {name: list(values) for name, values in self.addons.items()},
        }

    def derived_item(self, cloud_name: str, transformation: str) -> dict[str, Any]:
        url = self.url(cloud_name, transformation)
        return {
            "transformation": transformation,
            "format": self.format,
            "bytes": self.bytes,
            "id": hashlib.md5(f"{self.asset_id}/{transformation}".encode()).hexdigest(),
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }

    def eager_item(self, cloud_name: str, transformation: str) -> dict[str, Any]:
        url = self.url(cloud_name, transformation)
        return {
            "transformation": transformation,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "format": self.format,
            "url": url,
            "secure_url": url.replace("http://", "https://", 1),
        }


def apply_tags(current: list[str], command: str, tags: list[str]) -> list[str]:
    if command in ("add", "set_exclusive"):
        return current + [tag for tag in dict.fromkeys(tags) if tag not in current]
    if command == "remove":
        return [tag for tag in current if tag not in tags]
    if command == "replace":
        return list(dict.fromkeys(tags))
    return []


def context_change(asset: Asset, before: dict[str, str]) -> dict[str, Any]:
    after = asset.context
    return {
        "asset_id": asset.asset_id,
        "resource_type": asset.resource_type,
        "type": asset.type,
        "added": [{"name": k, "value": v} for k, v in after.items() if k not in before],
        "removed": [{"name": k, "value": v} for k, v in before.items() if k not in after],
        "updated": [{"name": k, "value": v} for k, v in after.items() if k in before and before[k] != v],
    }


def merge_pairs(values: dict[str, Any], pairs: dict[str, Any]) -> None:
    """Context and metadata updates: each pair sets its key, and an empty value deletes it."""
    for key, value in pairs.items():
        if value == "":
            values.pop(key, None)
        else:
            values[key] = value

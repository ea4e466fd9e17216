"""`addon`: background removal, auto-tagging, OCR, detection, moderation, raw conversion.

Add-ons are explicit parameters, so they travel in the notification's explicit request when one
request can carry them (see `explicit.merge`).
"""

from __future__ import annotations

from typing import Any

from handlers.protocol import Handler
from postupload.core.calls import Params, Request
from postupload.core.notification import Notification

_LANG = "(:[a-z]{2}(-[A-Za-z]{2,4})?)?"
_TAGGER = f"(google_tagging|google_video_tagging|imagga_tagging|aws_rek_tagging{_LANG})"
_MODERATOR = (
    r"(webpurify|aws_rek|aws_rek_video|google_video_moderation|perception_point"
    r"|duplicate:(0(\.[0-9]+)?|1(\.0+)?))"
)

SCHEMA: dict[str, Any] = {
    "description": (
        "Add-ons, run through one Upload API explicit call "
        "(shared with explicit actions of the same notification)."
    ),
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "dependentRequired": {"auto_tagging": ["categorization"]},
    "properties": {
        "background_removal": {
            "type": "string",
            "pattern": "^(cloudinary_ai(:fine_edges)?|pixelz)$",
            "description": "expected cloudinary_ai, cloudinary_ai:fine_edges or pixelz",
        },
        "categorization": {
            "type": "string",
            "pattern": f"^{_TAGGER}(,{_TAGGER})*$",
            "description": (
                "expected a comma list of google_tagging, google_video_tagging, imagga_tagging, "
                "aws_rek_tagging[:lang]"
            ),
        },
        "auto_tagging": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Confidence threshold 0..1 for tags from categorization",
        },
        "ocr": {
            "type": "string",
            "pattern": "^adv_ocr(:document)?$",
            "description": "expected adv_ocr or adv_ocr:document",
        },
        "detection": {
            "type": "string",
            "pattern": "^[a-z0-9_]+(_v[0-9]+)?(:[a-z0-9_.]+)?$",
            "description": "expected a detection model, such as coco_v2, captioning, adv_face, aws_rek_face",
        },
        "moderation": {
            "type": "string",
            "pattern": rf"^({_MODERATOR}\|)*({_MODERATOR}|manual)$",
            "description": (
                "expected webpurify, aws_rek, aws_rek_video, google_video_moderation, perception_point "
                "or duplicate:<0..1>, several joined by |, with manual only last"
            ),
        },
        "raw_convert": {
            "type": "string",
            "pattern": (
                "^(aspose|google_speech(:(vtt|srt))*(:[a-z]{2}(-[A-Z]{2})?)?|extract_text|azure_video_indexer)$"
            ),
            "description": (
                "expected aspose, google_speech[:vtt|:srt][:lang], extract_text or azure_video_indexer"
            ),
        },
    },
}


def plan(params: Params, notification: Notification) -> Params:
    """The explicit parameters, as the SDK takes them."""
    return dict(params)


def requests(params: Params) -> list[Request]:
    return [Request("upload", "explicit", params)]


HANDLER = Handler("addon", SCHEMA, plan, requests)

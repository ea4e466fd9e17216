"""Add-on parameters and the values Cloudinary takes (CLOUDINARY.md, "Add-on values"): a value it does
not know is a 400, worded as each API words it (pycloudinary's test_raw_conversion, test_categorization,
test_detection, test_background_removal; test22-test24 and test32 for the Admin API)."""

from __future__ import annotations

from typing import Any

from postupload.emulator.wire import ApiError

NAMES = ("background_removal", "categorization", "auto_tagging", "ocr", "detection", "raw_convert")

# Each add-on's values: a name, optionally followed by `:options` (a language, a mode).
KNOWN = {
    "background_removal": {"cloudinary_ai", "pixelz", "remove_the_background"},
    "categorization": {
        "google_tagging",
        "google_video_tagging",
        "imagga_tagging",
        "aws_rek_tagging",
        "aws_rek_video_tagging",
        "azure_video_indexer",
    },
    "detection": {
        "coco_v2",
        "coco",
        "lvis",
        "lvis_v1",
        "openimages",
        "unidet",
        "cld-fashion",
        "cld-text",
        "human-anatomy",
        "captioning",
        "adv_face",
        "aws_rek_face",
        "iqa",
        "watermark-detection",
    },
    "ocr": {"adv_ocr"},
    "raw_convert": {"aspose", "google_speech", "extract_text", "azure_video_indexer", "google_translation"},
}
# How the Upload API words a refused value; the Admin API says "Illegal value" for every one.
UPLOAD_MESSAGES = {
    "background_removal": "Background removal is invalid: {value!r}",
    "categorization": "Categorization item {value!r} is not valid",
    "detection": "Detection invalid model {value!r}",
    "ocr": "OCR is invalid: {value!r}",
    "raw_convert": "Raw convert is invalid: {value!r}",
    "auto_tagging": "Auto tagging is invalid: {value!r}, expected a number between 0 and 1",
}


def check(params: dict[str, Any], api: str) -> None:
    """Raise ApiError 400 for the first add-on value Cloudinary would refuse."""
    for name in NAMES:
        value = params.get(name)
        if value in (None, ""):
            continue
        wrong = _wrong_item(name, str(value))
        if wrong is not None:
            admin = "Illegal value {value!r} for parameter " + name
            message = UPLOAD_MESSAGES[name] if api == "upload" else admin
            raise ApiError(400, message.format(value=wrong))


def _wrong_item(name: str, value: str) -> str | None:
    if name == "auto_tagging":
        try:
            return None if 0 <= float(value) <= 1 else value
        except ValueError:
            return value
    items = value.split(",") if name in ("categorization", "detection") else [value]
    for item in items:
        if item.split(":", 1)[0].strip() not in KNOWN[name]:
            return item.strip()
    return None

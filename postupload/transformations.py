"""Eager transformations as the SDK puts them on the wire, made once when rules load."""

from __future__ import annotations

from typing import Any


def eager_text(value: Any) -> str:
    """`eager` (a string, a map, or a list of them) as the SDK sends it: `a,b|c_crop,w_200/webp`."""
    # Late import: importing the SDK parses CLOUDINARY_URL, which our config must check first.
    from cloudinary.utils import build_eager

    text: str = build_eager(value)
    return text

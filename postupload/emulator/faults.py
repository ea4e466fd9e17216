"""What goes wrong, and the Admin API rate limit: seeded, so a run can be repeated."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, fields
from typing import Any

from postupload.emulator.wire import ApiError


@dataclass
class Faults:
    """What goes wrong, and how slowly; every random choice comes from one seeded generator."""

    latency: float = 0.0  # seconds added to every API call
    latency_jitter: float = 0.0  # plus a uniform random 0..jitter seconds
    error_rate: float = 0.0  # share of API calls answered 500, 502 or 503, without effect
    timeout_rate: float = 0.0  # share of API calls that take effect but hold the answer back
    hang: float = 30.0  # how long such a call holds the connection before giving up (504)
    rate_limit_burst: int = 0  # the next N Admin API calls answer 420 (or rate_limit_status)
    rate_limit_status: int = 420  # how a spent budget is answered: 420, or 429 with Retry-After
    drop_rate: float = 0.0  # share of notifications never sent
    duplicate_rate: float = 0.0  # share of notifications sent twice
    # Notifications in the minimal shapes found verbatim (an eager body without resource_type, type or
    # asset_id; moderation_response null; an upload without the newer fields), not the richest ones.
    minimal_shapes: bool = False
    seed: int | None = None

    RATES = ("error_rate", "timeout_rate", "drop_rate", "duplicate_rate")

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Change some knobs; raise ValueError naming a bad one (nothing changes then)."""
        known = {f.name: f for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if name == "minimal_shapes":
                if not isinstance(value, bool):
                    raise ValueError("minimal_shapes: expected true or false")
            elif name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("seed: expected an integer or null")
            elif name == "rate_limit_status":
                if value not in (420, 429):
                    raise ValueError("rate_limit_status: expected 420 or 429")
            elif name == "rate_limit_burst":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("rate_limit_burst: expected a whole number ≥ 0")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}: expected a number ≥ 0")
            elif name in self.RATES and value > 1:
                raise ValueError(f"{name}: expected a share between 0 and 1")
            checked[name] = value
        for name, value in checked.items():
            setattr(self, name, value)
        if "seed" in checked:
            self.random = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RateLimit:
    """The Admin API budget: `budget` calls per fixed window, windows aligned on multiples of its length."""

    def __init__(self, budget: int = 500, window: int = 3600) -> None:
        self.budget = budget
        self.window = window
        self.window_start = 0
        self.used = 0

    def take(self, now: float, burst: bool = False, status: int = 420) -> dict[str, str]:
        """Count one call and answer its headers; raise ApiError 420 (or 429, with Retry-After) when
        the budget is spent, worded as Cloudinary's: "Rate Limit Exceeded. Limit of 500 api operations
        reached. Try again on 2024-10-04 14:00:00 UTC" (CLOUDINARY.md, "Rate limits as users report
        them")."""
        headers = self.headers(now)
        if burst or self.used >= self.budget:
            reset = self.window_start + self.window
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(reset))
            message = (
                f"Rate Limit Exceeded. Limit of {self.budget} api operations reached. Try again on {when} UTC"
            )
            extra = {"Retry-After": str(max(0, math.ceil(reset - now)))} if status == 429 else {}
            raise ApiError(status, message, {**headers, **self._remaining(0), **extra})
        self.used += 1
        return {**headers, **self._remaining(self.budget - self.used)}

    def headers(self, now: float) -> dict[str, str]:
        """The headers every Admin API answer carries, without counting a call."""
        start = int(now) - int(now) % self.window
        if start != self.window_start:
            self.window_start, self.used = start, 0
        return {
            "X-FeatureRateLimit-Limit": str(self.budget),
            "X-FeatureRateLimit-Reset": email.utils.formatdate(start + self.window, usegmt=True),
            **self._remaining(self.budget - self.used),
        }

    @staticmethod
    def _remaining(count: int) -> dict[str, str]:
        return {"X-FeatureRateLimit-Remaining": str(count)}

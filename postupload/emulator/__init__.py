"""A Cloudinary API emulator: a real HTTP server speaking the part of the Upload and Admin APIs we call.

It checks request signatures and Basic auth as Cloudinary does, enforces the documented limits
(CLOUDINARY.md), keeps assets in memory, records every call, counts the Admin API budget, plays
Cloudinary's side of notifications (the upload, and the follow-ups our own calls cause) and injects
latency and faults, reproducibly from a seed.

`wire` (signatures and encodings), `assets` (the asset model), `faults` (faults and the Admin rate
limit), `notifications` (what is sent back), `operations` (the Upload and Admin operations) and `app`
(HTTP).
"""

from postupload.emulator.app import create_app, serve
from postupload.emulator.faults import Faults
from postupload.emulator.operations import Emulator
from postupload.emulator.wire import UNSIGNED_PARAMS, string_to_sign

__all__ = ["UNSIGNED_PARAMS", "Emulator", "Faults", "create_app", "serve", "string_to_sign"]

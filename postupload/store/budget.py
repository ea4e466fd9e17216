"""The Admin API budget, shared by every worker through Redis and fed by Cloudinary's own headers.

Cloudinary counts Admin API calls per product environment per window and says, on every answer,
how many are left and when the window resets (X-FeatureRateLimit-*). Each worker takes a call from
the shared count before calling; when none is left it waits for the reset (the caller schedules the
work for then). While the count is unknown (at start, or after a reset) one call at a time probes it.
"""

from __future__ import annotations

import redis

from postupload.core.client import RateLimit
from postupload.store import keys

PROBE_WAIT = 1.0  # seconds to wait while another worker's call is learning the budget
# A call taken this close to its window's reset may reach Cloudinary after it and be counted in the
# next window, which the workers then believe has one more call left than it has (a 420 was seen in
# a loaded test run): such a call waits for the reset instead.
BOUNDARY = 1.0

_TAKE = """
local reset = tonumber(redis.call('hget', KEYS[1], 'reset') or '0')
local now = tonumber(ARGV[1])
if reset <= now then
  if redis.call('set', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return '0' end
  return '-1'
end
if reset - now < tonumber(ARGV[3]) then return tostring(reset) end
local remaining = tonumber(redis.call('hget', KEYS[1], 'remaining') or '0')
if remaining > 0 then
  redis.call('hincrby', KEYS[1], 'remaining', -1)
  return '0'
end
return tostring(reset)
"""

_LEARN = """
local reset = tonumber(redis.call('hget', KEYS[1], 'reset') or '0')
local new_reset, new_remaining = tonumber(ARGV[1]), tonumber(ARGV[2])
if new_reset > reset then
  redis.call('hset', KEYS[1], 'reset', ARGV[1], 'remaining', ARGV[2])
elseif new_reset == reset then
  local remaining = tonumber(redis.call('hget', KEYS[1], 'remaining') or ARGV[2])
  if new_remaining < remaining then redis.call('hset', KEYS[1], 'remaining', ARGV[2]) end
end
redis.call('del', KEYS[2])
return 1
"""


class AdminBudget:
    def __init__(self, connection: redis.Redis, cloud_name: str, call_timeout: float | None = None) -> None:
        """`call_timeout`: the probing call's timeout. A probe holds the others back that long and
        ADMIN_PROBE_MARGIN at most, so a process killed in mid-probe delays every Admin call
        (moderation, a backfill's listing) no longer; a minute when it is not given."""
        self.connection = connection
        self.keys = list(keys.admin_budget(cloud_name))
        probe_ttl = keys.ADMIN_PROBE_TTL if call_timeout is None else call_timeout + keys.ADMIN_PROBE_MARGIN
        self.probe_timeout_ms = int(probe_ttl * 1000)
        self._take = connection.register_script(_TAKE)
        self._learn = connection.register_script(_LEARN)

    def take(self, now: float) -> float:
        """0 if a call may go now (and it is counted), else the unix time to try again at."""
        answer = float(self._take(keys=self.keys, args=[now, self.probe_timeout_ms, BOUNDARY]))
        if answer < 0:
            return now + PROBE_WAIT
        return answer

    def learn(self, rate_limit: RateLimit | None) -> None:
        """Record what an answer's headers said (a later window replaces; the same one only lowers)."""
        if rate_limit is None:
            self.connection.delete(self.keys[1])
            return
        self._learn(keys=self.keys, args=[rate_limit.reset, rate_limit.remaining])

    def spent(self, reset: float) -> None:
        """Cloudinary answered 420/429: nothing is left until `reset`."""
        self._learn(keys=self.keys, args=[reset, 0])

    def release(self) -> None:
        """A call failed without telling us anything: let the next probe go."""
        self.connection.delete(self.keys[1])

"""How long to wait before trying again, in one place: redis-py's own backoff policies (already a
dependency; the ones its reconnects use), one per kind of wait."""

from redis.backoff import EqualJitterBackoff, ExponentialBackoff

# A job, or a batch of tag changes, that failed for a transient reason: 2-4 s, 4-8 s, 8-16 s, ...
# Jittered per draw so that the jobs a Cloudinary outage failed together do not come back together.
RETRY = EqualJitterBackoff(cap=3600.0, base=4.0)

# A backfill's page of the Admin API listing that failed: 2-4 s, 4-8 s, ... at most a minute.
LISTING = EqualJitterBackoff(cap=60.0, base=2.0)

# A worker whose RQ loop ended on an error starts again after 1, 2, 4, ... at most 30 s.
RESTART = ExponentialBackoff(cap=30.0, base=1.0)

# A process waiting for Redis to answer looks again after 0.2, 0.4, ... at most 5 s.
REDIS_POLL = ExponentialBackoff(cap=5.0, base=0.2)

"""The last good rule set, kept in Redis, so that a process starting after a bad edit runs what its
siblings run instead of nothing (or, before, an answer that differed from process to process)."""

from __future__ import annotations

import json
import logging
import time

import redis

from postupload.core.ruleset import RuleSet
from postupload.errors import RuleSetError
from postupload.rules.loading import load_sources
from postupload.store import keys

log = logging.getLogger(__name__)


class LastGood:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def remember(self, ruleset: RuleSet) -> None:
        """Keep this set's files, unless they are what is kept already."""
        try:
            if self.connection.hget(keys.LAST_GOOD_RULES, "version") == ruleset.version.encode():
                return
            self.connection.hset(
                keys.LAST_GOOD_RULES,
                mapping={
                    "version": ruleset.version,
                    "sources": json.dumps(ruleset.sources),
                    "at": str(time.time()),
                },
            )
        except redis.RedisError as error:
            log.warning("the last good rule set could not be kept in Redis: %s", error)

    def recall(self) -> RuleSet | None:
        """The set kept last, loaded again; None when none is kept (or Redis does not answer)."""
        try:
            sources = self.connection.hget(keys.LAST_GOOD_RULES, "sources")
        except redis.RedisError as error:
            log.warning("the last good rule set could not be read from Redis: %s", error)
            return None
        if sources is None:
            return None
        try:
            return load_sources(json.loads(sources))
        except (RuleSetError, ValueError) as error:  # kept by another version of postupload
            log.warning("the last good rule set kept in Redis does not load here: %s", error)
            return None

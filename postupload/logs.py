"""Log lines that notification data cannot forge: one event, one line, control characters escaped."""

from __future__ import annotations

import logging

# \r, \n, \t as themselves; other control characters as \xNN (printed, never acted on by a terminal).
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), 127]} | {9: "\\t", 10: "\\n", 13: "\\r"}


def printable(text: str) -> str:
    """`text` with every control character escaped: safe for a log line or a terminal."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message (where notification data ends up). A traceback
    attached to the record keeps its lines, each indented, so no line of it can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *(f"  {printable(line)}" for line in rest)])


# RQ's registry upkeep, logged at INFO every few seconds even on an idle stack (rq/worker/base.py).
UPKEEP = ("Worker %s: cleaning registries", "Worker %s: cleaning group registries")


class UpkeepAtDebug(logging.Filter):
    """Shows RQ's periodic upkeep as what it is, DEBUG: an operator reading the log at INFO sees
    events, not a line every 5 s that nothing happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(UPKEEP):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure(level: int = logging.INFO) -> None:
    """The root logger of every postupload process."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    handler.addFilter(UpkeepAtDebug())
    logging.basicConfig(level=level, handlers=[handler])

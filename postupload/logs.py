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


# RQ's lines that say nothing an operator acts on: its registry upkeep, every few seconds even on an
# idle stack, and four lines per job (taken, OK, result discarded, completed), which the worker's own
# one line per notification replaces (rq/worker/base.py).
ROUTINE = (
    "Worker %s: cleaning registries",
    "Worker %s: cleaning group registries",
    "Worker %s: %s: %s",
    "Worker %s: job %s result",
    "Successfully completed",
)

# What a line is about, where it applies: given as `extra=` to a log call, a field of its own in the
# JSON format (the readable form says the same in its words).
CONTEXT = ("notification", "job", "cloud", "type", "asset", "rule", "outcome", "reason")


class RoutineAtDebug(logging.Filter):
    """Shows RQ's routine lines as what they are, DEBUG: an operator reading the log at INFO sees
    events, not a line every 5 s that nothing happened, nor four lines per job."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time, level, logger, process, message, and the CONTEXT fields given."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=True,
    )


def configure(level: str | int = logging.INFO, form: str = "text") -> None:
    """The root logger of every postupload process: `form` text (for a terminal) or json."""
    handler = logging.StreamHandler()
    if form == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    handler.addFilter(RoutineAtDebug())
    logging.basicConfig(level=level, handlers=[handler])
    # What no line shows is not looked up for each one (the logging HOWTO's "Optimization"): the
    # caller's file and line (a walk up the stack), the thread (under gevent a stand-in thread is
    # made for each request's greenlet) and the multiprocessing name. A tenth of the web's log cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False

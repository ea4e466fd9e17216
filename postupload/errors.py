"""One exception hierarchy; each exception carries the data its callers need to answer."""

from __future__ import annotations

from dataclasses import dataclass


class PostuploadError(Exception):
    """Base of every error postupload raises on purpose. `permanent`: trying again cannot help, so
    a job that fails with it is not retried (each class says which it is)."""

    permanent: bool = True


class ConfigError(PostuploadError):
    """An environment variable holds a value we cannot use."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.problem = message


class RequestRejected(PostuploadError):
    """A webhook request that we answer with a 4xx; `code` is stable, `message` says what to do."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignatureError(RequestRejected):
    status = 401


class BodyTooLarge(RequestRejected):
    status = 413


class UnsupportedMediaType(RequestRejected):
    status = 415


class BadNotification(RequestRejected):
    status = 400


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule file, with enough position to find it."""

    file: str
    message: str
    code: str
    rule: str | None = None
    path: str = ""
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        rule = f" rule {self.rule}:" if self.rule else ""
        path = f" {self.path}:" if self.path else ""
        return f"{self.file}:{self.line}:{self.column}:{rule}{path} {self.message} [{self.code}]"


class RuleSetError(PostuploadError):
    """A rule set that cannot be loaded; every problem found is listed. `hints` are the set's own
    warnings when what failed is its tests: a did-you-mean there is usually why a test fails."""

    def __init__(self, problems: list[Problem], hints: list[Problem] | None = None) -> None:
        self.problems = problems
        self.hints = hints or []
        first = str(problems[0]) if problems else "no problems"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = f"; the rule files warn: {self.hints[0]}" if self.hints else ""
        super().__init__(first + more + hint)

    # A job met no valid rule set: ops fix the files, and the job is tried again with the fixed set.
    permanent = False


class ActionError(PostuploadError):
    """An action that failed; `permanent` ones are not retried."""

    def __init__(
        self, message: str, *, permanent: bool, status: int | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status  # Cloudinary's HTTP status, when it answered
        self.reason = reason or (str(status) if status else "error")  # a metric label: few values


class RateLimitError(ActionError):
    """The Admin API budget is spent (420/429): wait until `reset` (unix seconds), then try again."""

    def __init__(self, message: str, reset: float) -> None:
        super().__init__(message, permanent=False, status=420)
        self.reset = reset

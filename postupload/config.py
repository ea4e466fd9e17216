"""The one reader of the environment. Nothing else in postupload looks at os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from postupload.errors import ConfigError
from postupload.redis_urls import check_url

ALGORITHMS = frozenset({"sha1", "sha256"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
URL_FORM = "cloudinary://API_KEY:API_SECRET@CLOUD_NAME[?upload_prefix=http://host:port]"


@dataclass(frozen=True)
class Account:
    """One Cloudinary product environment: the credentials the SDK needs for each call."""

    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)
    upload_prefix: str | None = None

    @classmethod
    def from_url(cls, url: str, variable: str = "CLOUDINARY_URL") -> Account:
        """Parse `cloudinary://KEY:SECRET@CLOUD?upload_prefix=...` as the official SDK reads it."""
        parts = urlsplit(url.strip())
        if parts.scheme != "cloudinary" or not (parts.username and parts.password and parts.hostname):
            raise ConfigError(variable, f"expected {URL_FORM}, got a value of another form")
        query = parse_qs(parts.query)
        prefix = query.get("upload_prefix", [None])[0]
        if prefix is not None and urlsplit(prefix).scheme not in {"http", "https"}:
            raise ConfigError(variable, f"upload_prefix must be an http(s) URL, got {prefix!r}")
        # hostname is lower-cased by urlsplit; cloud names are case-sensitive, so read netloc.
        cloud_name = parts.netloc.rsplit("@", 1)[1]
        return cls(cloud_name, parts.username, parts.password, prefix)

    def to_url(self) -> str:
        """The CLOUDINARY_URL that describes this account."""
        url = f"cloudinary://{quote(self.api_key)}:{quote(self.api_secret)}@{self.cloud_name}"
        return f"{url}?upload_prefix={self.upload_prefix}" if self.upload_prefix else url

    def sdk_options(self) -> dict[str, str]:
        """Per-call SDK options: the SDK's own config is process-global, ours travels with each call."""
        options = {"cloud_name": self.cloud_name, "api_key": self.api_key, "api_secret": self.api_secret}
        if self.upload_prefix:
            options["upload_prefix"] = self.upload_prefix
        return options


# Jobs a worker process runs at once. A job mostly waits for Cloudinary (~0.3 s a call), so one
# process keeps this many calls in flight for about the CPU and memory of one job at a time.
DEFAULT_CONCURRENCY = 48

# The account that `postupload run` gives the emulator, web and worker when CLOUDINARY_URL is unset.
DEV_ACCOUNT = Account("postupload-dev", "123456789012345", "dev-secret-not-for-production")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment."""

    account: Account | None = None  # CLOUDINARY_URL's: the one served at the bare webhook path
    accounts: tuple[Account, ...] = ()  # POSTUPLOAD_ACCOUNTS': each at /webhooks/cloudinary/<cloud_name>
    redis_url: str | None = None
    redis_replicas: int = 0  # replicas that must confirm a notification before it is answered 200
    rules_dir: Path = Path("rules")
    rules_require_tests: bool = True
    signature_tolerance: int = 7200
    signature_algorithms: frozenset[str] = ALGORITHMS
    console_token: str | None = None
    trusted_proxies: int = 0  # proxies in front of the web whose X-Forwarded-For/-Proto are believed
    preview_keep: int = 10_000
    preview_days: float = 7.0
    preview_megabytes: float = 256.0
    max_body: int = 1_048_576
    api_timeout: float = 30.0
    retries: int = 6
    asset_action_cap: int = 100
    worker_concurrency: int = DEFAULT_CONCURRENCY

    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object a line, for log pipelines

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable; a bad value raises ConfigError naming it. An unset variable
        takes the field's default, written once, above."""
        env = os.environ if environ is None else environ
        default: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        url = env.get("CLOUDINARY_URL") or None
        account, accounts = Account.from_url(url) if url else None, _accounts(env)
        for other in accounts:
            if account and other.cloud_name == account.cloud_name and other != account:
                raise ConfigError(
                    "POSTUPLOAD_ACCOUNTS",
                    f"{other.cloud_name!r} is also in CLOUDINARY_URL, with other credentials: give it once",
                )

        def number(name: str, variable: str, minimum: int = 0) -> int:
            return _int(env, variable, default[name], minimum)

        def seconds(name: str, variable: str) -> float:
            return _float(env, variable, default[name])

        return cls(
            account=account,
            accounts=accounts,
            redis_url=_redis_url(env),
            redis_replicas=number("redis_replicas", "POSTUPLOAD_REDIS_REPLICAS"),
            rules_dir=Path(env.get("POSTUPLOAD_RULES_DIR") or default["rules_dir"]),
            rules_require_tests=_flag(env, "POSTUPLOAD_RULES_REQUIRE_TESTS", default["rules_require_tests"]),
            signature_tolerance=number("signature_tolerance", "POSTUPLOAD_SIGNATURE_TOLERANCE"),
            signature_algorithms=_algorithms(env),
            console_token=_console_token(env),
            trusted_proxies=number("trusted_proxies", "POSTUPLOAD_TRUSTED_PROXIES"),
            preview_keep=number("preview_keep", "POSTUPLOAD_PREVIEW_KEEP"),
            preview_days=seconds("preview_days", "POSTUPLOAD_PREVIEW_DAYS"),
            preview_megabytes=seconds("preview_megabytes", "POSTUPLOAD_PREVIEW_MB"),
            max_body=number("max_body", "POSTUPLOAD_MAX_BODY", minimum=1),
            api_timeout=seconds("api_timeout", "POSTUPLOAD_API_TIMEOUT"),
            retries=number("retries", "POSTUPLOAD_RETRIES"),
            asset_action_cap=number("asset_action_cap", "POSTUPLOAD_ASSET_ACTION_CAP"),
            worker_concurrency=number("worker_concurrency", "POSTUPLOAD_WORKER_CONCURRENCY", minimum=1),
            log_level=_choice(env, "POSTUPLOAD_LOG_LEVEL", default["log_level"], LOG_LEVELS, upper=True),
            log_format=_choice(env, "POSTUPLOAD_LOG_FORMAT", default["log_format"], LOG_FORMATS),
        )

    def all_accounts(self) -> dict[str, Account]:
        """Every product environment served, by cloud name: CLOUDINARY_URL's, then POSTUPLOAD_ACCOUNTS'."""
        accounts = {account.cloud_name: account for account in self.accounts}
        return {self.account.cloud_name: self.account, **accounts} if self.account else accounts

    def default_cloud_name(self) -> str:
        """The product environment a preview assumes when none is named: the only or CLOUDINARY_URL's
        one ('' when that cannot be told: rules on cloud_name then match nothing)."""
        try:
            return self.require_account().cloud_name
        except ConfigError:
            return ""

    def require_account(self, cloud_name: str | None = None) -> Account:
        """The product environment named (or, unnamed, the only or CLOUDINARY_URL's one), or a
        ConfigError saying how to give it."""
        accounts = self.all_accounts()
        if cloud_name:
            if cloud_name not in accounts:
                known = ", ".join(sorted(accounts)) or "none"
                raise ConfigError(
                    "POSTUPLOAD_ACCOUNTS",
                    f"no product environment {cloud_name!r} is configured (known: {known})",
                )
            return accounts[cloud_name]
        if self.account is not None:
            return self.account
        if len(accounts) == 1:
            return next(iter(accounts.values()))
        if accounts:
            raise ConfigError(
                "POSTUPLOAD_ACCOUNTS",
                f"serves {len(accounts)} product environments: name one ({', '.join(sorted(accounts))})",
            )
        raise ConfigError("CLOUDINARY_URL", f"not set; set it to {URL_FORM} (or POSTUPLOAD_ACCOUNTS)")

    def require_redis_url(self) -> str:
        """The Redis URL, or a ConfigError saying how to give one."""
        if self.redis_url is None:
            raise ConfigError("REDIS_URL", "not set; set it to redis://host:port/db, or use `postupload run`")
        return self.redis_url


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, f"must be more than 0, got {raw}")
    return value


def _choice(
    env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], upper: bool = False
) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
    return value


def environment(written_by_run: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment over the values `postupload run` wrote for the other commands (so
    that `postupload history` finds the local stack): what the CLI reads, and what children inherit."""
    return {**(written_by_run or {}), **os.environ}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected on or off (1/0, true/false, yes/no), got {raw!r}")


def _console_token(env: Mapping[str, str]) -> str | None:
    raw = env.get("POSTUPLOAD_CONSOLE_TOKEN") or None
    if raw is not None and len(raw) < 16:
        raise ConfigError(
            "POSTUPLOAD_CONSOLE_TOKEN",
            "must be at least 16 characters; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())'",
        )
    return raw


def _accounts(env: Mapping[str, str]) -> tuple[Account, ...]:
    """POSTUPLOAD_ACCOUNTS: CLOUDINARY_URL-style entries separated by commas, or @PATH naming a file
    with one a line (blank lines and # comments skipped)."""
    raw = (env.get("POSTUPLOAD_ACCOUNTS") or "").strip()
    if not raw:
        return ()
    where = "POSTUPLOAD_ACCOUNTS"
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(where, f"cannot read the accounts file {str(path)!r}: {error}") from None
        entries = [(f"{path}:{n}", line.strip()) for n, line in enumerate(lines, 1)]
        entries = [(place, line) for place, line in entries if line and not line.startswith("#")]
    else:
        entries = [(f"entry {n}", item.strip()) for n, item in enumerate(raw.split(","), 1) if item.strip()]
    accounts: dict[str, Account] = {}
    for place, entry in entries:
        try:
            account = Account.from_url(entry, where)
        except ConfigError as error:
            raise ConfigError(where, f"{place}: {error.problem}") from None
        if account.cloud_name in accounts:
            raise ConfigError(where, f"{place}: product environment {account.cloud_name!r} is given twice")
        accounts[account.cloud_name] = account
    if not accounts:
        raise ConfigError(where, f"no entry found; expected {URL_FORM}, comma-separated, or @PATH")
    return tuple(accounts.values())


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("REDIS_URL") or None
    problem = None if raw is None else check_url(raw)
    if problem is not None:
        raise ConfigError("REDIS_URL", problem)
    return raw


def _algorithms(env: Mapping[str, str]) -> frozenset[str]:
    raw = env.get("POSTUPLOAD_SIGNATURE_ALGORITHMS")
    if not raw:
        return ALGORITHMS
    names = frozenset(name.strip().lower() for name in raw.split(",") if name.strip())
    unknown = names - ALGORITHMS
    if unknown or not names:
        raise ConfigError(
            "POSTUPLOAD_SIGNATURE_ALGORITHMS",
            f"expected a comma list of sha1, sha256; got {raw!r}",
        )
    return names

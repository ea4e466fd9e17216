"""The environment, read in one place, with errors that name the variable and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from postupload.config import Account, Settings
from postupload.errors import ConfigError


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings.account is None
    assert settings.redis_url is None
    assert settings.rules_dir == Path("rules")
    assert settings.signature_tolerance == 7200
    assert settings.signature_algorithms == {"sha1", "sha256"}
    assert settings.max_body == 1_048_576


def test_cloudinary_url_as_the_sdk_reads_it() -> None:
    settings = Settings.from_env(
        {"CLOUDINARY_URL": "cloudinary://123:abc-DEF@My-Cloud?upload_prefix=http://127.0.0.1:9000"}
    )
    assert settings.account == Account("My-Cloud", "123", "abc-DEF", "http://127.0.0.1:9000")
    assert Account.from_url(settings.require_account().to_url()) == settings.account


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CLOUDINARY_URL", "https://123:abc@cloud", "cloudinary://API_KEY:API_SECRET@CLOUD_NAME"),
        ("CLOUDINARY_URL", "cloudinary://123@cloud", "cloudinary://API_KEY:API_SECRET@CLOUD_NAME"),
        (
            "CLOUDINARY_URL",
            "cloudinary://1:2@c?upload_prefix=ftp://x",
            "upload_prefix must be an http(s) URL",
        ),
        ("POSTUPLOAD_SIGNATURE_TOLERANCE", "2h", "expected a whole number"),
        ("POSTUPLOAD_SIGNATURE_ALGORITHMS", "md5", "sha1, sha256"),
        ("POSTUPLOAD_MAX_BODY", "0", "at least 1"),
        ("POSTUPLOAD_API_TIMEOUT", "-3", "more than 0"),
    ],
)
def test_bad_values_name_the_variable_and_the_expected_form(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable}: ")
    assert says in str(caught.value)


def test_missing_account_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match="CLOUDINARY_URL: not set; set it to cloudinary://"):
        Settings.from_env({}).require_account()


def test_secret_is_not_in_repr() -> None:
    assert "abc" not in repr(Account("c", "k", "abc"))


def test_a_redis_url_without_its_scheme_is_named() -> None:
    with pytest.raises(ConfigError, match=r"REDIS_URL: expected redis://\[:password@\]host:port/db"):
        Settings.from_env({"REDIS_URL": "localhost:6379"})


def test_a_command_that_needs_redis_says_in_one_line_when_it_does_not_answer() -> None:
    from click.testing import CliRunner

    from postupload.cli import main
    from tests.conftest import free_port

    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "CLOUDINARY_URL": "cloudinary://k:s@c"}
    for command in (["failed", "list"], ["history", "x"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1
        (line,) = result.output.strip().splitlines()
        assert line.startswith("postupload: error: Redis (REDIS_URL) does not answer: ")

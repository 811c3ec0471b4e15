"""SQS credentials are settled once at the edge and handed to actors explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.backends.sqs import MissingCredentials, with_credentials
from cluster.config import SqsBackendConfig

REMOTE = "https://sqs.eu-west-1.amazonaws.com"


@pytest.fixture
def no_aws_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This shell has no credentials at all (no variables, no profile, no metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_anywhere")
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_loopback_endpoint_needs_no_credentials_from_the_user(host: str) -> None:
    settings = with_credentials(SqsBackendConfig(endpoint_url=f"http://{host}:4566"))
    assert settings.aws_access_key_id is not None
    assert settings.aws_secret_access_key is not None


@pytest.mark.usefixtures("no_aws_anywhere")
def test_a_remote_endpoint_without_credentials_is_one_clear_line() -> None:
    with pytest.raises(MissingCredentials) as caught:
        with_credentials(SqsBackendConfig(endpoint_url=REMOTE))
    message = str(caught.value)
    assert "\n" not in message
    assert REMOTE in message
    assert "aws_access_key_id" in message


@pytest.mark.usefixtures("no_aws_anywhere")
def test_credentials_found_where_raybus_starts_are_passed_on_explicitly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-example")
    settings = with_credentials(SqsBackendConfig(endpoint_url=REMOTE))
    assert settings.aws_access_key_id is not None
    assert settings.aws_access_key_id.get_secret_value() == "AKIDEXAMPLE"
    assert settings.aws_session_token is not None
    assert settings.aws_session_token.get_secret_value() == "token-example"


def test_credentials_in_the_config_are_kept_and_must_come_in_pairs() -> None:
    given = SqsBackendConfig(
        endpoint_url=REMOTE, aws_access_key_id="mine", aws_secret_access_key="also-mine"
    )
    assert with_credentials(given) is given
    with pytest.raises(ValueError, match="both"):
        SqsBackendConfig(endpoint_url=REMOTE, aws_access_key_id="only-half")

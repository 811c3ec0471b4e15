"""SQS credentials are settled once at the edge and handed to actors explicitly."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
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


def write_profiles(path: Path) -> Path:
    path.write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n"
        "[ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = ops-secret\n"
        "aws_session_token = ops-token\n"
    )
    return path


@pytest.mark.usefixtures("no_aws_anywhere")
@pytest.mark.parametrize(
    ("profile", "key"), [(None, "AKIDDEFAULT"), ("ops", "AKIDOPS")], ids=["default", "named"]
)
def test_keys_of_a_profile_file_are_settled_and_the_profile_dropped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, profile: str | None, key: str
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(write_profiles(tmp_path / "creds")))
    settings = with_credentials(SqsBackendConfig(endpoint_url=REMOTE, aws_profile=profile))
    assert settings.aws_access_key_id is not None
    assert settings.aws_access_key_id.get_secret_value() == key
    # Actors on other nodes have no such file: they get the keys, not the profile's name.
    assert settings.aws_profile is None


@pytest.mark.usefixtures("no_aws_anywhere")
def test_a_missing_profile_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(write_profiles(tmp_path / "creds")))
    for endpoint in (REMOTE, "http://127.0.0.1:4566"):
        with pytest.raises(MissingCredentials) as caught:
            with_credentials(SqsBackendConfig(endpoint_url=endpoint, aws_profile="nope"))
        message = str(caught.value)
        assert "\n" not in message
        assert "'nope' (sqs.aws_profile)" in message


class _ContainerCredentials(http.server.BaseHTTPRequestHandler):
    """The ECS/EKS container credentials endpoint, as botocore's provider reads it."""

    def do_GET(self) -> None:
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        body = json.dumps(
            {
                "AccessKeyId": "ASIAROLE",
                "SecretAccessKey": "role-secret",
                "Token": "role-token",
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def container_role(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real container credentials endpoint on 127.0.0.1, named as ECS names it."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _ContainerCredentials)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.mark.usefixtures("no_aws_anywhere", "container_role")
def test_role_credentials_are_left_to_each_process_to_renew() -> None:
    given = SqsBackendConfig(endpoint_url=REMOTE)
    settled = with_credentials(given)
    # Found (so no MissingCredentials), but not copied: a copy would expire with the role's
    # session, while botocore renews them where each actor runs.
    assert settled.aws_access_key_id is None
    assert settled == given

"""How raybus's Kafka clients authenticate and encrypt: TLS and SASL, as brokers run in
production (Confluent Cloud, Amazon MSK, Aiven, Strimzi, a company's own cluster).

:class:`KafkaSecurity` holds the settings; :meth:`KafkaSecurity.client_options` turns them
into the keyword arguments every aiokafka producer, consumer and admin client raybus
creates is given. The default is PLAINTEXT with no SASL, what a local broker speaks.

Validated where the configuration is loaded, so a mistake is one line naming the field
and never a broker that silently refuses later: a SASL protocol without a mechanism, a
mechanism without its credentials, a password without a user, TLS files on a plaintext
protocol, a CA, certificate or key that does not load. Passwords, client secrets and
tokens are :class:`~pydantic.SecretStr` (never in a repr, a status or an error);
``"${NAME}"`` reads one from the environment at load.

Imports no aiokafka (loading a bus configuration must not cost a Ray bus the broker
client): the OAUTHBEARER token provider lives in ``transports.kafka.oauth``, the
diagnosis of a refused connection in ``transports.kafka.admin``, which word their one
line with :func:`describe_failure`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from transports.env_refs import from_env

if TYPE_CHECKING:
    from aiokafka.abc import AbstractTokenProvider

__all__ = [
    "KafkaOAuth",
    "KafkaSecurity",
    "SaslMechanism",
    "SecurityProtocol",
    "describe_failure",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
# Why a broker closes a connection before answering, by "the client speaks TLS".
_CLOSED_HINTS = {
    False: " (a TLS listener closes plaintext clients: check security_protocol)",
    True: " (a listener requiring client certificates closes clients without one: ssl_certfile)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaOAuth(_Strict):
    """Where SASL/OAUTHBEARER tokens come from: a static token, or the OAuth 2.0 client
    credentials grant (RFC 6749 section 4.4) against the identity provider's token URL."""

    token: SecretStr | None = Field(None, description="a ready token, e.g. '${KAFKA_TOKEN}'")
    token_url: str | None = Field(None, description="the identity provider's token endpoint")
    client_id: str | None = None
    client_secret: SecretStr | None = Field(None, description="the secret, or '${NAME}'")
    scope: str | None = Field(None, description="space-separated scopes to ask for")
    timeout_s: float = Field(10.0, gt=0, le=120, description="bound on one token request")

    @field_validator("token", "client_secret", mode="before")
    @classmethod
    def _from_env(cls, value: Any) -> Any:
        return from_env(value)

    @field_validator("token_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("token_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        grant = (self.token_url, self.client_id, self.client_secret)
        if self.token is not None:
            if any(part is not None for part in grant):
                raise ValueError("give token, or token_url with client_id and client_secret")
            return self
        missing = [
            name
            for name, part in zip(("token_url", "client_id", "client_secret"), grant, strict=True)
            if part is None
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing: give token, or all three")
        return self

    def provider(self) -> AbstractTokenProvider:
        """An aiokafka token provider, fetching (and caching) as configured."""
        from transports.kafka.oauth import TokenProvider  # loads aiokafka: only when used

        return TokenProvider(self)


def _loadable_file(value: str | None, what: str) -> str | None:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"{what} {value!r} does not exist or is not a file")
    return value


class KafkaSecurity(_Strict):
    """TLS and SASL settings of raybus's Kafka clients (aiokafka's names, one level).

    Raises (at validation): ValueError naming the field for every inconsistent choice.
    """

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = Field(None, description="needed by SASL_* protocols")
    sasl_username: str | None = Field(None, description="PLAIN and SCRAM-* user")
    sasl_password: SecretStr | None = Field(None, description="the password, or '${NAME}'")
    sasl_oauth: KafkaOAuth | None = Field(None, description="OAUTHBEARER's token source")
    ssl_cafile: str | None = Field(None, description="PEM CA bundle; None = the system's CAs")
    ssl_certfile: str | None = Field(None, description="PEM client certificate (mutual TLS)")
    ssl_keyfile: str | None = Field(None, description="PEM key of ssl_certfile")
    ssl_key_password: SecretStr | None = Field(None, description="if ssl_keyfile is encrypted")
    ssl_check_hostname: bool = Field(True, description="the broker's name must match its cert")

    @field_validator("sasl_password", "ssl_key_password", mode="before")
    @classmethod
    def _from_env(cls, value: Any) -> Any:
        return from_env(value)

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        return _loadable_file(value, "file")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if protocol in _SASL_PROTOCOLS and mechanism is None:
            raise ValueError(f"sasl_mechanism is required with security_protocol {protocol}")
        if protocol not in _SASL_PROTOCOLS:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_oauth"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs security_protocol SASL_SSL or SASL_PLAINTEXT")
        if self.sasl_password is not None and self.sasl_username is None:
            raise ValueError("sasl_password is set without sasl_username")
        if mechanism == "OAUTHBEARER":
            if self.sasl_oauth is None:
                raise ValueError("sasl_oauth is required with sasl_mechanism OAUTHBEARER")
            if self.sasl_username is not None:
                raise ValueError("sasl_username is not used by OAUTHBEARER: give sasl_oauth")
        elif mechanism is not None:
            if self.sasl_username is None or self.sasl_password is None:
                raise ValueError(f"sasl_username and sasl_password are required with {mechanism}")
            if self.sasl_oauth is not None:
                raise ValueError(f"sasl_oauth is only for OAUTHBEARER, not {mechanism}")
        tls_files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
        if protocol not in _TLS_PROTOCOLS:
            for name in tls_files:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs security_protocol SSL or SASL_SSL")
        else:
            if self.ssl_keyfile is not None and self.ssl_certfile is None:
                raise ValueError("ssl_keyfile is set without ssl_certfile")
            self.ssl_context()  # loads every file now, so a bad one is named at load
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in _TLS_PROTOCOLS

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the CA (or the system's), hostname checks, client cert.

        Raises:
            ValueError: a file does not load (naming the field and the reason).
        """
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ssl_cafile {self.ssl_cafile!r} does not load: {_why(exc)}") from None
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            password = self.ssl_key_password
            try:
                context.load_cert_chain(
                    self.ssl_certfile,
                    self.ssl_keyfile,
                    password.get_secret_value() if password is not None else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"ssl_certfile {self.ssl_certfile!r} and its key do not load: {_why(exc)}"
                ) from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka producer, consumer or admin client.

        Build them once per client (or per group of clients sharing a token cache): the
        TLS context is loaded and an OAUTHBEARER provider created on each call.
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_mechanism == "OAUTHBEARER":
            assert self.sasl_oauth is not None
            options["sasl_oauth_token_provider"] = self.sasl_oauth.provider()
        elif self.sasl_mechanism is not None:
            assert self.sasl_password is not None
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def describe(self) -> str:
        """How clients connect, for logs and status: protocol, mechanism, user; no secret."""
        parts: list[str] = [self.security_protocol]
        if self.sasl_mechanism is not None:
            parts.append(self.sasl_mechanism)
        if self.sasl_username is not None:
            parts.append(f"as {self.sasl_username!r}")
        return " ".join(parts)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def describe_failure(host: str, port: str, protocol: str, exc: BaseException) -> str:
    """One line on why a direct connection to ``host:port`` over ``protocol`` failed."""
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} over {protocol}"
    if isinstance(exc, ssl.SSLError):
        hint = " (is ssl_cafile the CA of the broker's certificate?)"
        verify = isinstance(exc, ssl.SSLCertVerificationError)
        return f"TLS with {host}:{port} failed: {_why(exc)}{hint if verify else ''}"
    reason = _why(exc)
    if "closed" in reason.lower():
        reason += _CLOSED_HINTS[protocol in _TLS_PROTOCOLS]
    return f"{host}:{port} refused the {protocol} connection: {reason}"

"""The bus configuration: YAML in, validated pydantic models out, built once at the edge.

Example::

    name: demo
    pools:
      - name: everything
        server: "cluster.examples.testkit:server"   # or command: [...], tools: "pkg.mod", url: ...
        min_workers: 1
        max_workers: 8

A bad file fails at start with :class:`ConfigError` naming the field and the reason.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from actors.autoscaler import AutoscaleConfig
from actors.router.core import RouterConfig
from actors.router.regions import region_problem
from cluster.encryption import EncryptionConfig
from cluster.gateway.policy.settings import PolicyConfig
from cluster.idempotency import IdempotencyConfig
from cluster.tasks.settings import PoolTasksConfig, TasksConfig
from cluster.triggers.settings import TriggerConfig, trigger_problem
from cluster.upstream import resolve_headers, shown_url, url_problem
from cluster.worker_options import (
    RuntimeEnvConfig,
    default_max_concurrency,
    parse_memory,
    ray_option_problem,
    redacted_env,
)
from transports.errors import BusError
from transports.kafka.security import KafkaSecurity
from transports.labels import checked_labels

__all__ = [
    "AutoscalerConfig",
    "BusConfig",
    "ConfigError",
    "DiscoveryConfig",
    "GatewayConfig",
    "KafkaBackendConfig",
    "PoolConfig",
    "SqsBackendConfig",
    "field_path",
    "load_config",
    "parse_config",
    "read_config_data",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Tool names are [A-Za-z0-9_.-] (MCP 2025-11-25, tool names): so are the parts we add.
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SEPARATOR = re.compile(r"^[_.-]{1,4}$")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(BusError):
    """The configuration is invalid; the message names each bad field and why."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        return f"invalid configuration in {self.source}:\n  " + "\n  ".join(self.problems)


class _FieldProblem(ValueError):
    """A problem found by a whole-config check, with the path of the field it is about."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Strict):
    """One pool of identical workers hosting the same MCP server."""

    name: str
    server: str | None = Field(None, description="official-SDK server object, 'pkg.module:attr'")
    command: list[str] | None = Field(None, description="stdio server command line")
    tools: str | None = Field(None, description="module whose public functions are tools")
    url: str | None = Field(None, description="a remote server's Streamable HTTP endpoint")
    # Sent upstream instead of anything a caller sent; "${VAR}" is read from the
    # environment where the configuration is built (see cluster.upstream).
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="HTTP headers sent to the url's server"
    )
    # Travels with the pool's configuration, never through Ray's runtime_env (whose agent
    # logs env_vars on every node): the place for secrets. Shown by name only.
    env: dict[str, str] = Field(
        default_factory=dict, description="environment of the server (command or worker process)"
    )
    min_workers: int = Field(1, ge=0)
    max_workers: int = Field(4, ge=1)
    # Unset: 32, or 2 per CPU of a pool that declares num_cpus (default_max_concurrency).
    max_concurrency: int = Field(32, ge=1, description="calls one worker runs at once")
    # 0 declares the server I/O-bound (it mostly waits on something else), Ray's own
    # default for a running actor: the pool has no resource ceiling. CPU-bound servers
    # declare what one worker uses, so the autoscaler never starts more of them than the
    # cluster can run at once.
    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved per worker actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per worker actor")
    memory: int | None = Field(
        None, ge=0, description="heap memory reserved per worker: bytes, or '512MiB', '2GiB'"
    )
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="custom Ray resources per worker, e.g. {accel: 1}"
    )
    # Ray's label selector: a worker runs only on a node whose labels match, e.g.
    # {"ray.io/accelerator-type": "A100", "zone": "in(us-a,us-b)", "market": "!spot"}.
    label_selector: dict[str, str] = Field(
        default_factory=dict, description="labels a worker's node must have"
    )
    # Route calls (README "Regions"): with router.regions, a request labelled region=eu
    # runs only on pools labelled region: eu. Placement is label_selector's job.
    labels: dict[str, str] = Field(default_factory=dict, description="e.g. {region: eu}")
    # Spares are started, server loaded and handshaken, but not routed: a scale-up
    # activates one in tens of milliseconds instead of starting a process (~1.5 s).
    warm_spares: int = Field(
        1, ge=0, description="started, unrouted workers ready for a scale-up (autoscaled pools)"
    )
    # A deadline for every call, so a tool that never returns (``nap(1e9)``) ends with
    # 1001 and is cancelled on its server instead of holding a slot forever. A caller's
    # own deadline can only shorten it; pools of long tools raise it.
    timeout_s: float = Field(300.0, gt=0, description="per-call deadline on this pool")
    # A synchronous call (not a task) ends with 1001 after this, its message naming the
    # task mode, instead of holding its caller for the whole timeout_s.
    max_sync_s: float | None = Field(
        None, gt=0, description="bound of a synchronous call (default timeout_s)"
    )
    tasks: PoolTasksConfig | None = Field(None, description="tools that run as tasks")
    runtime_env: RuntimeEnvConfig = Field(
        default_factory=RuntimeEnvConfig,
        description="Ray runtime_env of each worker (pip, env_vars, working_dir URI, ...)",
    )
    autoscale: AutoscaleConfig = AutoscaleConfig()
    # README "Tool namespaces and filters": names shown as '<namespace><separator><name>'; filters
    # match the server's own tool names (exact or glob), before the namespace is added.
    namespace: str | None = Field(None, description="prefix of the pool's tool/prompt names")
    include: list[str] = Field(default_factory=list, description="tools shown (names, globs)")
    exclude: list[str] = Field(default_factory=list, description="tools hidden (names, globs)")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _NAMESPACE.match(value):
            raise ValueError(f"namespace {value!r} must match {_NAMESPACE.pattern}")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_labels(value)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if not all(pattern.strip() for pattern in value):
            raise ValueError("tool names and patterns must not be empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_concurrency") is None:
            data = {**data, "max_concurrency": default_max_concurrency(data.get("num_cpus"))}
        headers = data.get("headers") if isinstance(data, dict) else None
        if not isinstance(headers, dict):
            return data
        return {**data, "headers": resolve_headers(str(data.get("name")), headers, os.environ)}

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_size(cls, value: Any) -> Any:
        return parse_memory(value)

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        own_fields = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
        for name in value:
            if name in own_fields:
                raise ValueError(f"{name!r} is not a custom resource: use {own_fields[name]}")
            if not name.strip():
                raise ValueError("resource names must not be empty")
        return value

    @field_validator("num_cpus", "num_gpus", "memory", "resources", "label_selector")
    @classmethod
    def _ray_accepts(cls, value: Any, info: ValidationInfo) -> Any:
        problem = ray_option_problem(str(info.field_name), value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _NAME.match(self.name):
            raise ValueError(f"pool name {self.name!r} must match {_NAME.pattern}")
        sources = [s for s in (self.server, self.command, self.tools, self.url) if s]
        if len(sources) != 1:
            raise ValueError("give exactly one of server, command, tools or url")
        if self.url is not None and (problem := url_problem(self.url)) is not None:
            raise ValueError(problem)
        if self.headers and self.url is None:
            raise ValueError("headers are sent to a url's server: give url too")
        if self.env and self.url is not None:
            raise ValueError("env is for a server the pool runs; a url's server runs elsewhere")
        if self.command is not None and not all(self.command):
            raise ValueError("command must be a non-empty list of non-empty strings")
        if self.server is not None and ":" not in self.server:
            raise ValueError("server must look like 'package.module:attribute'")
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) exceeds max_workers ({self.max_workers})"
            )
        if self.max_sync_s is not None and self.max_sync_s > self.timeout_s:
            raise ValueError(
                f"max_sync_s ({self.max_sync_s:g}) must not exceed timeout_s ({self.timeout_s:g})"
            )
        return self

    @property
    def worker_resources(self) -> dict[str, float]:
        """What one worker reserves, by Ray resource name (only amounts above zero)."""
        amounts = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float(self.memory or 0)}
        return {name: amount for name, amount in {**amounts, **self.resources}.items() if amount}

    def actor_options(self) -> dict[str, Any]:
        """The Ray actor options that place and size one worker."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.memory:
            options["memory"] = self.memory
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        # Ray ships the pool's code and environment to whichever node runs it.
        options["runtime_env"] = self.runtime_env.as_ray()
        return options

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A configuration may end up in a log line: the env's values never do, nor a
        # url's query (where some services take keys); headers are SecretStr.
        for name, value in super().__repr_args__():
            if name == "url" and value:
                value = shown_url(value)
            yield name, redacted_env(value) if name == "env" else value


class DiscoveryConfig(_Strict):
    heartbeat_interval_s: float = Field(1.0, gt=0)
    ttl_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ttl_s <= self.heartbeat_interval_s:
            raise ValueError("ttl_s must be longer than heartbeat_interval_s")
        return self


class AutoscalerConfig(_Strict):
    enabled: bool = True
    interval_s: float = Field(0.5, gt=0, description="how often signals are read")
    decisions_kept: int = Field(500, ge=1)


class GatewayTls(_Strict):
    """HTTPS on the gateway: a PEM certificate (chain) and its private key."""

    certfile: str
    keyfile: str

    @model_validator(mode="after")
    def _loads(self) -> Self:
        # Loaded here, so `raybus up` and `raybus config check` name a bad pair at once
        # instead of a replica failing after Ray and the pools started.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"cannot load certificate {self.certfile!r} and its key: {reason}"
            raise ValueError(message) from None
        return self


class GatewayConfig(_Strict):
    """Where and how standard MCP clients reach the bus (``raybus up``)."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    path: str = "/mcp"
    allowed_origins: list[str] = Field(
        default_factory=list, description="extra Origin values to accept besides loopback"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    call_timeout_s: float = Field(300.0, gt=0)
    # A session whose client vanished after its initialize was answered (a reset the
    # server could not see in time) holds a bus session until this idle period ends;
    # clients that come back later get 404 and initialize again, as the spec provides.
    session_idle_timeout_s: float = Field(600.0, gt=0, description="idle handshake sessions end")
    # Slow clients (slowloris) would otherwise hold connections forever: a request's head,
    # and then its body, must each arrive within this, or the client gets 408.
    request_read_timeout_s: float = Field(
        30.0, gt=0, description="a request's head, then its body, must arrive within this"
    )
    # Longer than clients' own idle expiry (httpx 5 s, aiohttp 15 s): a client closes an
    # idle connection before the gateway does, so it never sends a request on a connection
    # the gateway is closing at that moment (a reset the client cannot retry safely).
    keep_alive_timeout_s: int = Field(
        30, ge=1, description="an idle connection between requests is closed after this"
    )
    # A client whose SSE stream broke reconnects with Last-Event-ID within half a second
    # (the retry the gateway announces); a finished stream's events wait this long for it,
    # then leave (see cluster/gateway/event_store.py).
    resume_window_s: float = Field(
        30.0, gt=0, description="a finished response stream's events are kept for resuming"
    )
    policy: PolicyConfig = PolicyConfig()
    tls: GatewayTls | None = Field(None, description="serve HTTPS with this certificate and key")

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def url(self, port: int) -> str:
        """The MCP endpoint's URL on ``port``."""
        return f"{self.scheme}://{self.host}:{port}{self.path}"


class KafkaBackendConfig(KafkaSecurity):
    """Kafka between clients (gateway) and workers: one request topic per pool.

    TLS and SASL settings (``security_protocol``, ``sasl_*``, ``ssl_*``) sit beside
    ``bootstrap``, as aiokafka names them: see :class:`~transports.kafka.security.KafkaSecurity`.
    """

    bootstrap: str
    topic_prefix: str | None = Field(None, description="default: '<bus name>.'")
    partitions: int = Field(4, ge=1, description="of each pool's request topic")
    replication_factor: int = Field(1, ge=1)
    # Acks of one interval share a commit: a crash redelivers at most that interval's
    # answered requests, which the ledger answers again without running them (+30% calls/s).
    commit_interval_ms: int = Field(20, ge=0)
    ledger_ttl_s: float = Field(600.0, gt=0, description="how long a request key is remembered")
    duplicate_wait_s: float = Field(
        60.0, gt=0, description="how long a redelivered call waits for another worker's run"
    )
    # How long a durable client's answers wait in its reply topic (retention.ms).
    response_retention_s: int = Field(86_400, ge=1, description="durable clients' answers kept")

    @property
    def security(self) -> KafkaSecurity:
        """The client security settings alone (validated with this section)."""
        fields = {name: getattr(self, name) for name in KafkaSecurity.model_fields}
        return KafkaSecurity.model_construct(**fields)


class SqsBackendConfig(_Strict):
    """SQS between clients (gateway) and workers: one request queue per pool."""

    endpoint_url: str | None = Field(None, description="None = AWS's endpoint for region")
    region: str = "us-east-1"
    queue_prefix: str | None = Field(None, description="default: '<bus name>-'")
    visibility_timeout_s: int = Field(30, ge=1, le=43_200)
    max_receive_count: int = Field(5, ge=1, description="receives before the DLQ")
    wait_time_seconds: int = Field(1, ge=0, le=20, description="long-poll wait")
    fifo: bool = Field(False, description="FIFO queues: ordered per client, deduplicated by key")
    aws_access_key_id: SecretStr | None = Field(
        None, description="None: a loopback endpoint gets moto's dummy keys; AWS's, yours"
    )
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_profile: str | None = Field(None, description="profile of the shared AWS files")
    # Existing request queues (e.g. made by Terraform): used as they are, never created or
    # reconfigured, so the bus needs no sqs:CreateQueue for them.
    queue_urls: dict[str, str] = Field(
        default_factory=dict, description="pool -> URL of its existing request queue"
    )
    ledger_ttl_s: float = Field(600.0, gt=0)
    duplicate_wait_s: float = Field(60.0, gt=0)
    # How long a durable client's answers wait in its queue (SQS MessageRetentionPeriod).
    response_retention_s: int = Field(86_400, ge=60, le=1_209_600)

    @field_validator("queue_urls")
    @classmethod
    def _queue_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for pool, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname or not parts.path[1:]:
                raise ValueError(f"{pool}: {url!r} is not a queue URL (https://host/account/name)")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("give both aws_access_key_id and aws_secret_access_key, or neither")
        for pool, url in self.queue_urls.items():
            if url.endswith(".fifo") != self.fifo:
                kind = "a FIFO" if self.fifo else "a standard"
                raise ValueError(f"queue_urls.{pool}: fifo is {self.fifo}, so give {kind} queue")
        return self

    @property
    def is_local(self) -> bool:
        """Is the endpoint on this machine (moto from ``raybus services up``, LocalStack)?"""
        host = urlsplit(self.endpoint_url).hostname if self.endpoint_url else None
        return host in _LOOPBACK_HOSTS

    @property
    def has_credentials(self) -> bool:
        return self.aws_access_key_id is not None


class BusConfig(_Strict):
    name: str = "default"
    backend: Literal["ray", "kafka", "sqs"] = "ray"
    kafka: KafkaBackendConfig | None = None
    sqs: SqsBackendConfig | None = None
    # End-to-end keys between clients and workers on kafka/sqs (cluster.encryption).
    encryption: EncryptionConfig | None = None
    pools: list[PoolConfig] = Field(min_length=1)
    router: RouterConfig = RouterConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    gateway: GatewayConfig = GatewayConfig()
    autoscaler: AutoscalerConfig = AutoscalerConfig()
    drain_timeout_s: float = Field(60.0, gt=0)
    tasks: TasksConfig = TasksConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()  # README "Idempotency keys"
    namespace_separator: str = Field("_", description="between a pool's namespace and a name")
    # Records on a Kafka topic that call a tool (cluster.triggers.settings).
    triggers: list[TriggerConfig] = Field(default_factory=list)

    @field_validator("namespace_separator")
    @classmethod
    def _separator(cls, value: str) -> str:
        if not _SEPARATOR.match(value):
            raise ValueError(f"must be 1 to 4 of the characters _ . - (got {value!r})")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _NAME.match(self.name):
            raise ValueError(f"bus name {self.name!r} must match {_NAME.pattern}")

        if self.backend == "kafka" and self.kafka is None:
            raise ValueError("backend 'kafka' needs a kafka section with a bootstrap address")
        if self.backend == "sqs" and self.sqs is None:
            raise ValueError("backend 'sqs' needs an sqs section (endpoint_url, region)")
        if self.encryption is not None and self.backend == "ray":
            raise ValueError("encryption applies to the kafka and sqs backends, not to ray")
        names = [p.name for p in self.pools]
        if strays := sorted(set(self.sqs.queue_urls if self.sqs else ()) - set(names)):
            raise ValueError(f"sqs.queue_urls names no pool of this bus: {', '.join(strays)}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicates)}")
        regions = self.router.regions
        if (problem := region_problem(regions, self.pools)) is not None:
            raise _FieldProblem(*problem)
        for i, token in enumerate(self.gateway.policy.tokens):
            pinned = token.labels.get(regions.label) if regions is not None else None
            if (
                regions is not None
                and pinned is not None
                and pinned not in regions.regions(self.pools)
            ):
                path = f"gateway.policy.tokens[{i}].labels.{regions.label}"
                raise _FieldProblem(path, f"no pool carries region {pinned!r}")
        label, known = (regions.label, regions.regions(self.pools)) if regions else (None, ())
        problem = trigger_problem(
            self.triggers,
            has_kafka=self.kafka is not None,
            has_sqs=self.sqs is not None,
            region_label=label,
            regions=known,
        )
        if problem is not None:
            raise _FieldProblem(*problem)
        if regions is not None:
            # The rule travels inside router (to the router, clients and workers) with each
            # pool's region: derived here, once, so every reader agrees.
            router = self.router.model_copy(update={"regions": regions.derived(self.pools)})
            object.__setattr__(self, "router", router)  # frozen: set once, while validating
        return self

    def pool(self, name: str) -> PoolConfig:
        return next(p for p in self.pools if p.name == name)


def field_path(loc: tuple[int | str, ...]) -> str:
    """Where a value sits in the file, as a reader writes it: ``pools[1].min_workers``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "(top level)"


# pydantic prefixes what a validator raised; the field path already says where it is.
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def _problems(exc: ValidationError) -> list[str]:
    """One line per problem, ``pools[0].num_gpus: <why>``; never the offending value
    (it may be a secret)."""
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"]
        for prefix in _VALIDATOR_PREFIXES:
            message = message.removeprefix(prefix)
        cause = error.get("ctx", {}).get("error")
        path = cause.path if isinstance(cause, _FieldProblem) else field_path(error["loc"])
        out.append(f"{path}: {message}")
    return out


def parse_config(data: Any, source: str = "<config>") -> BusConfig:
    """Validate already-parsed YAML/JSON data.

    Raises:
        ConfigError: naming every invalid field.
    """
    try:
        return BusConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def read_config_data(path: str | Path) -> Any:
    """Read a YAML configuration file into plain data, not validated yet.

    Raises:
        ConfigError: unreadable, not YAML, or empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [_yaml_problem(exc)]) from None
    if data is None:
        raise ConfigError(str(path), ["the file is empty: a bus needs at least 'pools:'"])
    return data


def load_config(path: str | Path) -> BusConfig:
    """Read and validate a YAML configuration file.

    Raises:
        ConfigError: unreadable, not YAML, or invalid (naming every bad field).
    """
    return parse_config(read_config_data(path), str(path))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where the YAML broke (1-based, as editors count) and why."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"not valid YAML at {where}: {exc.problem or exc.context}"
    return f"not valid YAML: {' '.join(str(exc).split())}"

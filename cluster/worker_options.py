"""What a pool's workers ask Ray for: resources, node labels and a runtime environment.

The pool's fields (``num_cpus``, ``num_gpus``, ``memory``, ``resources``,
``label_selector``, ``runtime_env``; see :class:`cluster.config.PoolConfig`) are checked
when the configuration is read, by Ray's own option rules where Ray exports them, so a
value Ray would refuse fails at start with the field's name instead of on every worker.

Workers are created by the detached supervisor, possibly on another machine than the one
that read the file: everything here must mean the same there. That is why a runtime
environment may not name local paths (``working_dir``, ``py_modules``, a ``pip``
requirements file): Ray uploads those only for a driver's own job.

Secrets: Ray's runtime-env agent writes every runtime environment it creates, its
``env_vars`` included, to its log on each node. The pool's ``env`` travels with the
pool's configuration instead and is never logged; raybus shows only the names of either
(:func:`env_names`, and the redacted ``repr`` of the configuration).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.telemetry import EXPORTER_VARIABLE, TracingSetupError, check_exporter

__all__ = [
    "IO_BOUND_MAX_CONCURRENCY",
    "RuntimeEnvConfig",
    "default_max_concurrency",
    "env_names",
    "parse_memory",
    "ray_option_problem",
    "redacted_env",
]

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_HIDDEN = "<hidden>"
IO_BOUND_MAX_CONCURRENCY = 32


def default_max_concurrency(num_cpus: Any) -> int:
    """How many calls one worker runs at once when its pool does not say.

    An I/O-bound server (no ``num_cpus``) mostly waits, so many calls share a worker. A
    CPU-bound one gains nothing from running more calls than its CPUs (one interpreter
    lock), and every call a worker holds beyond those waits there instead of in the
    router's queue, where a worker added by the autoscaler would take it: measured on a
    burst (B3 of ``raybus bench``), 32 per worker left the new worker idle while the
    first held 59 calls. Two per declared CPU keeps one ready while one runs.
    """
    if isinstance(num_cpus, int | float) and not isinstance(num_cpus, bool) and num_cpus > 0:
        return max(2, math.ceil(2 * num_cpus))
    return IO_BOUND_MAX_CONCURRENCY


def parse_memory(value: Any) -> Any:
    """Bytes from ``2147483648``, ``"2GiB"``, ``"2Gi"``, ``"512MB"``, ``"1.5G"``.

    Anything else is returned unchanged for the field's own type check to refuse.

    Raises:
        ValueError: a string that is not a size.
    """
    if not isinstance(value, str):
        return value
    match = _MEMORY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size: give bytes, or e.g. '512MiB', '2GiB', '1.5G'")
    number, unit = match.group(1), (match.group(2) or "").upper()
    prefix = unit[:1] if unit != "B" else ""
    scale = _BINARY[prefix] if "I" in unit else _UNITS[prefix]
    return int(float(number) * scale)


def ray_option_problem(option: str, value: Any) -> str | None:
    """Why Ray would refuse ``value`` for the actor option ``option`` (None: it accepts).

    Uses Ray's own validation where it is importable (it is not public API: without it,
    Ray checks again when the worker is created, and the start reports that).
    """
    try:
        from ray._common.ray_option_utils import validate_actor_options
    except ImportError:  # pragma: no cover - another Ray layout
        return None
    try:
        validate_actor_options({option: value}, in_options=True)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


class PipSpec(BaseModel):
    """Ray's dict form of ``pip``: packages plus installer settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    packages: list[str] = Field(min_length=1)
    pip_check: bool | None = None
    pip_version: str | None = None
    pip_install_options: list[str] | None = None


class RuntimeEnvConfig(BaseModel):
    """A Ray ``runtime_env`` for each worker of a pool.

    The fields raybus checks are typed; any other Ray field (``conda``, ``uv``,
    ``image_uri``, ``config``...) is passed to Ray as given.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    env_vars: dict[str, str] = Field(
        default_factory=dict, description="set by Ray in the worker process (and logged by Ray)"
    )
    pip: PipSpec | None = Field(None, description="packages Ray installs (a list, or Ray's dict)")
    working_dir: str | None = Field(None, description="a URI (s3://, gs://, https://...)")
    py_modules: list[str] | None = Field(None, description="URIs of modules or packages")

    @field_validator("env_vars")
    @classmethod
    def _exporter_is_known(cls, value: dict[str, str]) -> dict[str, str]:
        exporter = value.get(EXPORTER_VARIABLE)
        if exporter:
            try:
                check_exporter(exporter)
            except TracingSetupError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("pip", mode="before")
    @classmethod
    def _pip_is_not_a_file(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "a requirements file is read where workers are created (the supervisor, "
                "maybe on another machine): list the packages instead"
            )
        # One shape to check, so a mistake reads as one line, not one per union member.
        return {"packages": value} if isinstance(value, list) else value

    @field_validator("working_dir")
    @classmethod
    def _working_dir_is_a_uri(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(_LOCAL_PATHS.format(paths=[value]))
        return value

    @field_validator("py_modules")
    @classmethod
    def _py_modules_are_uris(cls, value: list[str] | None) -> list[str] | None:
        local = [p for p in value or [] if "://" not in p]
        if local:
            raise ValueError(_LOCAL_PATHS.format(paths=local))
        return value

    def as_ray(self) -> dict[str, Any] | None:
        """The dict Ray's ``runtime_env`` option takes (None when empty)."""
        data = self.model_dump(exclude_none=True, exclude_defaults=True)
        if self.pip is not None and self.pip.model_fields_set == {"packages"}:
            data["pip"] = list(self.pip.packages)  # as the user wrote it
        return data or None

    def get(self, field: str) -> Any:
        """A field's value, typed or passed through (``None`` when unset)."""
        value = getattr(self, field, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(field)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redacted_env(value) if name == "env_vars" else value


_LOCAL_PATHS = (
    "needs URIs (s3://, gs://, https://...), not local paths {paths}: upload them, or "
    "put them on PYTHONPATH via runtime_env.env_vars"
)


def redacted_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every value replaced: the names show, the values never."""
    return dict.fromkeys(env, _HIDDEN)


def env_names(env: Mapping[str, str], runtime_env: RuntimeEnvConfig) -> list[str]:
    """The names of every variable a pool's workers get (values never leave the config)."""
    return sorted({*env, *runtime_env.env_vars})

"""Task configuration: the bus-wide ``tasks`` section and each pool's ``tasks`` opt-in.

::

    tasks:                      # bus-wide, all optional
      ttl_s: 3600               # how long a task and its outcome are kept after creation
      max_ttl_s: 86400
      poll_interval_ms: 2000
      max_result_bytes: 1048576
      max_open_tasks: 10000
      max_open_per_principal: 100
    pools:
      - name: risk
        server: "models.risk:server"
        timeout_s: 300          # bound of every call of the pool, as before
        max_sync_s: 60          # bound of a call run synchronously (default: timeout_s)
        tasks:
          tools:                # public tool names (after the namespace); "*" = every tool
            risk_model: required
            compliance_check: optional
          input_first: [confirm_then_run]  # gathers input (MRTR) before it becomes a task
          run_timeout_s: 3600   # bound of a task's run (default 3600)
          rerun_lost: auto      # auto (idempotentHint/readOnlyHint) | never | always
          max_attempts: 2

A tool runs as a task when its pool lists it (exact name before ``"*"``), else when its
server declares ``execution.taskSupport`` in its ``tools/list``; otherwise it is
``forbidden`` and runs synchronously only.

An ``input_first`` tool asks for its input before it becomes a task (SEP-2663's
"resolve all MRTR exchanges synchronously before responding with a CreateTaskResult"):
a 2026-07-28 call of it without ``inputResponses`` runs synchronously (the tool answers
``input_required``), and the call that carries them becomes the task. Nothing on the
wire tells the gateway that a tool works this way, so the pool says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.tasks.spec import TaskSettings

if TYPE_CHECKING:
    from cluster.config import BusConfig

__all__ = [
    "PoolTasksConfig",
    "TaskSupport",
    "TasksConfig",
    "rerun_allowed",
    "runs_tasks",
    "task_support",
]

TaskSupport = Literal["forbidden", "optional", "required"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolTasksConfig(_Strict):
    """Which of a pool's tools run as tasks, and how their runs are bounded."""

    tools: dict[str, TaskSupport] = Field(
        default_factory=dict, description="tool name (or '*') -> forbidden|optional|required"
    )
    input_first: frozenset[str] = Field(
        default_factory=frozenset,
        description="tools that gather their input (MRTR) synchronously, then become tasks",
    )
    run_timeout_s: float = Field(3600.0, gt=0, description="deadline of a task's run")
    rerun_lost: Literal["auto", "never", "always"] = "auto"
    max_attempts: int = Field(2, ge=1, le=10, description="runs of a task whose worker died")

    @field_validator("tools")
    @classmethod
    def _names(cls, value: dict[str, TaskSupport]) -> dict[str, TaskSupport]:
        if not all(name.strip() for name in value):
            raise ValueError("tool names must not be empty")
        return value


class TasksConfig(_Strict):
    """The bus's task store: retention and limits."""

    ttl_s: float = Field(3600.0, gt=0, description="kept this long after creation")
    max_ttl_s: float = Field(86_400.0, gt=0)
    poll_interval_ms: int = Field(2000, ge=100, description="suggested polling interval")
    max_result_bytes: int = Field(1 << 20, ge=1024)
    max_open_tasks: int = Field(10_000, ge=1)
    max_open_per_principal: int = Field(100, ge=1)

    def settings(self) -> TaskSettings:
        return TaskSettings(
            ttl_s=min(self.ttl_s, self.max_ttl_s),
            max_ttl_s=self.max_ttl_s,
            poll_interval_ms=self.poll_interval_ms,
            max_result_bytes=self.max_result_bytes,
            max_open_tasks=self.max_open_tasks,
            max_open_per_principal=self.max_open_per_principal,
        )


def task_support(tasks: PoolTasksConfig | None, tool: dict[str, Any]) -> TaskSupport:
    """A tool's effective task support: the pool's config, else the server's own
    ``execution.taskSupport``, else ``forbidden``."""
    name = str(tool.get("name", ""))
    if tasks is not None:
        if name in tasks.tools:
            return tasks.tools[name]
        if "*" in tasks.tools:
            return tasks.tools["*"]
    execution = tool.get("execution")
    declared = execution.get("taskSupport") if isinstance(execution, dict) else None
    if declared in ("optional", "required"):
        return "optional" if declared == "optional" else "required"
    return "forbidden"


def rerun_allowed(tasks: PoolTasksConfig | None, tool: dict[str, Any]) -> bool:
    """May a task of this tool run again when its worker died mid-call?"""
    policy = tasks.rerun_lost if tasks is not None else "auto"
    if policy != "auto":
        return policy == "always"
    annotations = tool.get("annotations")
    if not isinstance(annotations, dict):
        return False
    return bool(annotations.get("idempotentHint") or annotations.get("readOnlyHint"))


def runs_tasks(config: BusConfig) -> bool:
    """Does the bus's configuration let any pool run a tool as a task?"""
    return any(pool.tasks is not None and pool.tasks.tools for pool in config.pools)

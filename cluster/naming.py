"""Where raybus actors live: their names, their namespace, and a cache of handles.

Control actors are named and detached so a bus outlives the driver that started it and
any process on the cluster can attach to it by the bus name.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import ray

from transports.errors import ConnectionClosed

__all__ = [
    "NAMESPACE",
    "ControlPart",
    "HandleCache",
    "actor_names",
    "get_actor",
    "get_actor_async",
    "process_of",
]

logger = logging.getLogger(__name__)

NAMESPACE = "raybus"

# The control actors that share one process (``cluster.ray_actors.control``): none is
# on a call's path, and each process of its own cost a second of CPU at every start.
CONTROL_PARTS = ("discovery", "supervisor", "autoscaler")


class ControlPart:
    """A handle to one part of a bus's control process, used like that actor's handle:
    ``part.method.remote(...)`` calls ``method`` of that part (in that process)."""

    def __init__(self, control: Any, part: str) -> None:
        self.control = control  # the process's own Ray handle (to kill it)
        self.part = part

    def __getattr__(self, method: str) -> _PartMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _PartMethod(self.control, self.part, method)

    def __repr__(self) -> str:
        return f"ControlPart({self.control!r}, {self.part!r})"


class _PartMethod:
    def __init__(self, control: Any, part: str, method: str) -> None:
        self._control = control
        self._part = part
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._control.call.remote(self._part, self._method, *args, **kwargs)


def process_of(handle: Any) -> Any:
    """The Ray actor handle behind ``handle`` (what ``ray.kill`` takes): a part's
    control process, or the handle itself."""
    return handle.control if isinstance(handle, ControlPart) else handle


class actor_names:
    @staticmethod
    def router(bus: str) -> str:
        return f"raybus/{bus}/router"

    @staticmethod
    def discovery(bus: str) -> str:
        return f"raybus/{bus}/discovery"

    @staticmethod
    def supervisor(bus: str) -> str:
        return f"raybus/{bus}/supervisor"

    @staticmethod
    def control(bus: str, *, autoscaled: bool) -> str:
        """The one process hosting a bus's discovery, supervisor and (``autoscaled``)
        autoscaler (``cluster.ray_actors.control``): whether it hosts an autoscaler is in
        its name, so a lookup of a bus's autoscaler fails at once when it has none."""
        return f"raybus/{bus}/control" + ("+autoscaler" if autoscaled else "")

    @staticmethod
    def control_part(name: str) -> tuple[str, str] | None:
        """``(bus, part)`` if ``name`` is one of the parts a control process hosts."""
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "raybus" and parts[2] in CONTROL_PARTS:
            return parts[1], parts[2]
        return None

    @staticmethod
    def ledger(bus: str) -> str:
        return f"raybus/{bus}/ledger"

    @staticmethod
    def keys(bus: str) -> str:
        """The keyring state of an encrypted bus (``cluster.ray_actors.keys``)."""
        return f"raybus/{bus}/keys"

    @staticmethod
    def autoscaler(bus: str) -> str:
        return f"raybus/{bus}/autoscaler"

    @staticmethod
    def tasks(bus: str) -> str:
        """The bus's task store (long-running tools run as tasks)."""
        return f"raybus/{bus}/tasks"

    @staticmethod
    def trigger(bus: str, trigger: str, replica: int) -> str:
        """One replica of an event trigger (``cluster.ray_actors.trigger``). Its last
        part names the replica's client on a broker backend (its reply topic or queue),
        so it is unique in the bus and the same after a restart."""
        return f"{actor_names.trigger_prefix(bus)}trigger-{trigger}-{replica}"

    @staticmethod
    def trigger_prefix(bus: str) -> str:
        """What the names of a bus's trigger actors start with."""
        return f"raybus/{bus}/trigger/"

    @staticmethod
    def worker(bus: str, pool: str) -> str:
        return f"raybus/{bus}/worker/{pool}/{uuid.uuid4().hex[:8]}"

    @staticmethod
    def client(bus: str) -> str:
        return f"raybus/{bus}/client/{uuid.uuid4().hex[:12]}"

    @staticmethod
    def gateway(bus: str, node_id: str) -> str:
        return f"{actor_names.gateway_prefix(bus)}{node_id[:8]}-{uuid.uuid4().hex[:6]}"

    @staticmethod
    def gateway_prefix(bus: str) -> str:
        """What the names of a bus's gateway replicas start with."""
        return f"raybus/{bus}/gateway/"

    @staticmethod
    def bus_of_router(name: str) -> str | None:
        """The bus whose router has this actor name (None: not a router's name)."""
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "raybus" and parts[2] == "router":
            return parts[1]
        return None


def get_actor(name: str) -> Any:
    """The handle of a named raybus actor.

    Raises:
        ConnectionClosed: no live actor has that name.
    """
    hosted = actor_names.control_part(name)
    if hosted is not None:
        bus, part = hosted
        # A bus's autoscaler lives only in the control process named for one.
        for autoscaled in (True,) if part == "autoscaler" else (True, False):
            try:
                control = ray.get_actor(
                    actor_names.control(bus, autoscaled=autoscaled), namespace=NAMESPACE
                )
            except ValueError:
                continue
            return ControlPart(control, part)
        # else: maybe a bus started by a raybus whose control actors had a process each
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ConnectionClosed(f"no raybus actor named {name!r} is running") from None


# A GCS lookup is milliseconds on a quiet machine; on a loaded 2-core one with Ray
# starting workers it was seen past 15 s. A missing actor answers at once regardless.
_LOOKUP_TIMEOUT_S = 60.0


async def get_actor_async(name: str, timeout_s: float = _LOOKUP_TIMEOUT_S) -> Any:
    """:func:`get_actor` off the event loop, bounded (a lookup blocks on the GCS).

    Raises:
        ConnectionClosed: no such actor, or the cluster did not answer in time.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(get_actor, name)
    except TimeoutError:
        raise ConnectionClosed(f"the Ray cluster did not answer a lookup of {name!r}") from None


class HandleCache:
    """Actor handles by name, looked up once (a lookup is a blocking GCS round trip)."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = get_actor(name)
        return handle

    async def get_async(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = await get_actor_async(name)
            self._handles[name] = handle
        return handle

    def put(self, name: str, handle: Any) -> None:
        self._handles[name] = handle

    def forget(self, name: str) -> None:
        self._handles.pop(name, None)

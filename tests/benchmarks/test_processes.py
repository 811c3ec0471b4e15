"""The process tree the bench reads CPU and memory from (Linux ``/proc``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import (
    ProcessInfo,
    cpu_seconds,
    descendants,
    snapshot,
    thread_cpu_seconds,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


async def test_a_grandchild_is_a_descendant_labelled_by_its_module() -> None:
    # The child starts `python -m json.tool`, which waits on the stdin they share.
    spawn = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'json.tool'])"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", spawn, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:

        def grandchildren() -> list[ProcessInfo]:
            return [p for p in snapshot(descendants()) if p.label == "json.tool"]

        await wait_until(lambda: bool(grandchildren()))
        (grandchild,) = grandchildren()
        assert grandchild.pid != child.pid
        assert grandchild.rss_mib > 0
        assert cpu_seconds(grandchild.pid) is not None
    finally:
        assert child.stdin is not None
        child.stdin.close()
        async with asyncio.timeout(60):
            await child.wait()


def test_a_process_that_is_gone_has_no_figures() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()

    assert cpu_seconds(child.pid) is None
    assert snapshot([child.pid]) == []
    assert child.pid not in descendants()


def test_a_named_threads_cpu_is_counted_and_no_other() -> None:
    import os
    import threading
    import time

    spun, release = threading.Event(), threading.Event()

    def spinner() -> None:
        # Python does not name OS threads (3.11); a thread may name itself in /proc.
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("bench-spinner")
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass
        spun.set()
        release.wait(60)  # alive while measured: the figures are of live threads

    thread = threading.Thread(target=spinner)
    thread.start()
    try:
        assert spun.wait(60)
        assert thread_cpu_seconds(os.getpid(), "bench-spin") >= 0.25
        assert thread_cpu_seconds(os.getpid(), ("nope", "bench-spin")) >= 0.25
        assert thread_cpu_seconds(os.getpid(), "no-such-thread") == 0.0
    finally:
        release.set()
        thread.join(60)

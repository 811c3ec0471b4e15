"""The resident memory of this process, for tests that show memory stays flat."""

from __future__ import annotations

import gc
import os
from pathlib import Path

_STATM = Path("/proc/self/statm")


def resident_mib() -> float:
    """Resident set size now, in MiB, after a full collection (Linux ``/proc``).

    Collecting first keeps cyclic garbage that is merely waiting for the collector out
    of the figure: what remains is memory something still holds.
    """
    gc.collect()
    resident_pages = int(_STATM.read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20

"""``python -m benchmarks [--only B1,B4] [--duration-s S] [--rounds N] [--json]``.

The same as ``raybus bench`` (kept for those who ran benchmarks this way).
"""

import sys

from cluster.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))

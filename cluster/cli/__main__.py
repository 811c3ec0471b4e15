"""``python -m cluster.cli``: the ``raybus`` command."""

import sys

from cluster.cli import main

sys.exit(main())

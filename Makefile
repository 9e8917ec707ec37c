# Two commands on a fresh machine:  make demo  (one export against the local sandbox tenant)
#                                   make test  (the test suite)
# Both install what they need first: a virtualenv from requirements-dev.txt and Azurite from package-lock.json.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
USERS  ?= 10000

.PHONY: demo test install sandbox clean

demo: install
	$(PY) -m sandbox demo --users $(USERS)

test: install
	$(PY) -m pytest

# Start the sandbox tenant + Azurite and print the settings that point at it (Ctrl+C stops it).
sandbox: install
	$(PY) -m sandbox serve --users $(USERS)

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .sandbox .pytest_cache exports

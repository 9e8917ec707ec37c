"""The engine layer: one worker process for the session, started and indexed as the Functions host starts it.

Runs on Python 3.13 in .venv-engine (``make test-engine``); tests/conftest.py's Azurite, sandbox and
``export_env`` fixtures serve it as they serve the integration layer.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO

from .host import Host


@pytest.fixture(scope="session")
def worker():
    """A started worker: init (which indexes function_app.py), metadata and load done, as the host does them."""
    host = Host(REPO)
    host.init_response = host.start()
    host.metadata_response = host.metadata()
    host.load_responses = [host.load(function) for function in host.functions]
    yield host
    host.stop()

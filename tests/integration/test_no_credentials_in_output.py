"""No credential reaches any output (issue 20, items 1 and 2), in whole runs over real sockets.

The export writes to Azurite through a connection string with a real account SAS
(``BlobEndpoint=…;SharedAccessSignature=…``). Every byte the CLI prints with ``--debug`` (a full run, a
rerun that is skipped, two delta slots that follow a real ``$deltatoken``, a Graph failure that urllib3
retries, a SAS storage refuses), and everything a function invocation logs under the Functions
worker's root logger at INFO, the text of the exceptions it hands the host, and every telemetry
envelope it sends, are searched for the SAS signature, the delta tokens (read from ``state/delta.json``
after each slot), the client secret, private-key material and JWTs (access tokens, assertions: "eyJ").

On b28d639 the --debug and the function tests fail: urllib3's DEBUG lines (``--debug``: ``sig=…``,
``$deltatoken=…``) and its WARNING "Retrying" lines (the worker's INFO root: ``$deltatoken=…``) carry the
URL with its query. The first test, a SAS run without --debug, passes there: the summary's ``url``
already had its query dropped (``export._summary``); it guards that, on skipped and forced runs too.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from graph_export.naming import DELTA_STATE_BLOB, LATEST_BLOB
from sandbox.azurite import ACCOUNT, ACCOUNT_KEY

from .helpers import read_json, state_container

REPO = Path(__file__).resolve().parents[2]
SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
#: A query parameter that carries a credential or a Graph token, with its value not redacted.
UNREDACTED = re.compile(r"(?i)[?&;](?:\$|%24)?(?:sig|deltatoken|skiptoken|client_secret|client_assertion|"
                        r"access_token|refresh_token|code)(?:=|%3D)(?!REDACTED|latest\b)[^&\s'\"]")


def account_sas(**permissions: bool) -> str:
    """A real account SAS for Azurite's account, signed with its well-known key."""
    allowed = permissions or dict(read=True, write=True, delete=True, list=True, add=True, create=True)
    return generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(service=True, container=True, object=True),
                                AccountSasPermissions(**allowed), datetime.now(timezone.utc) + timedelta(hours=2))


def sas_storage(azurite, sas: str) -> str:
    return f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"


def signature_of(sas: str) -> str:
    return parse_qs(sas)["sig"][0]  # decoded (base64 with + / =)


def spellings(value: str) -> set[str]:
    """A secret as it may appear: as is, percent-encoded, percent-decoded."""
    return {value, quote(value, safe=""), unquote(value)} - {""}


def delta_token(env: dict) -> str:
    """The token of the deltaLink the last delta slot saved."""
    link = json.loads(state_container(env).download_blob(DELTA_STATE_BLOB).readall())["delta_link"]
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    assert token.lower() != "latest"
    return token


def find_leaks(outputs: dict[str, str], secrets: dict[str, set[str]]) -> list[str]:
    """Each (output, secret) pair where the secret shows, with a little context; [] when clean."""
    found = []
    for where, text in outputs.items():
        for what, values in secrets.items():
            for value in values:
                at = text.find(value)
                if at >= 0:
                    found.append(f"{what} in {where}: …{text[max(0, at - 120):at + len(value) + 20]}…")
                    break
        if (match := UNREDACTED.search(text)) is not None:
            found.append(f"an unredacted query parameter in {where}: …{text[max(0, match.start() - 120):match.end() + 40]}…")
    return found


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph_export", "run", *args], cwd=REPO,
                          env=env if env is not None else dict(os.environ), capture_output=True, text=True,
                          timeout=180)


def output_of(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def base_secrets(sandbox, sas: str) -> dict[str, set[str]]:
    return {"the SAS signature": spellings(signature_of(sas)), "the client secret": {sandbox.client_secret},
            "private-key material": {"PRIVATE KEY"}, "a JWT (access token or assertion)": {"eyJ"}}


# --- item 1: a SAS connection string works, and its signature never leaves the process --------------

def test_an_export_works_with_a_sas_connection_string_and_prints_no_signature(export_env, azurite, sandbox,
                                                                              monkeypatch):
    sas = account_sas()
    monkeypatch.setenv("EXPORT_STORAGE", sas_storage(azurite, sas))
    env = {**export_env, "EXPORT_STORAGE": os.environ["EXPORT_STORAGE"]}
    first = run_cli("--slot", "2026-03-07T02:00:00Z")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["status"] == "succeeded" and summary["users"] == 2_500
    assert "?" not in summary["url"] and summary["url"].endswith(summary["blob"])
    assert read_json(env, LATEST_BLOB)["blob"] == summary["blob"]  # published through the SAS
    again = run_cli("--slot", "2026-03-07T02:00:00Z")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "skipped"
    forced = run_cli("--slot", "2026-03-07T02:00:00Z", "--force", "--quiet")
    assert forced.returncode == 0 and json.loads(forced.stdout)["status"] == "succeeded"
    # A SAS that may read but not write: the run fails as storage refusing it, and says nothing of the SAS.
    monkeypatch.setenv("EXPORT_STORAGE", sas_storage(azurite, account_sas(read=True, list=True)))
    refused = run_cli("--slot", "2026-03-08T02:00:00Z")
    assert refused.returncode == 5, refused.stderr
    outputs = {"full run": output_of(first), "skipped run": output_of(again), "forced run": output_of(forced),
               "refused run": output_of(refused)}
    for where, text in outputs.items():
        assert "sig=" not in text and "SharedAccessSignature" not in text, where
    secrets = base_secrets(sandbox, sas) | {"the read-only SAS": spellings(signature_of(
        os.environ["EXPORT_STORAGE"].split("SharedAccessSignature=", 1)[1]))}
    assert find_leaks(outputs, secrets) == []


# --- item 2: --debug, whole runs: full, delta (following a real $deltatoken), failing ----------------

def test_debug_output_of_full_delta_and_failing_runs_carries_no_credential(export_env, azurite, sandbox, monkeypatch):
    sas = account_sas()
    monkeypatch.setenv("EXPORT_STORAGE", sas_storage(azurite, sas))
    monkeypatch.setenv("EXPORT_MODE", "delta")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    env = {**export_env, "EXPORT_STORAGE": os.environ["EXPORT_STORAGE"]}
    rng = random.Random(20)
    outputs: dict[str, str] = {}
    tokens: set[str] = set()

    first = run_cli("--debug", "--slot", "2026-03-07T02:00:00Z")  # no delta state yet: full, with a link for now
    assert first.returncode == 0, first.stderr[-3000:]
    outputs["first delta slot (full)"] = output_of(first)
    tokens.add(delta_token(env))
    outputs["rerun (skipped)"] = output_of(skipped := run_cli("--debug", "--slot", "2026-03-07T02:00:00Z"))
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["status"] == "skipped"

    sandbox.directory.random_changes(rng, 40)
    second = run_cli("--debug", "--slot", "2026-03-08T02:00:00Z")  # follows the first slot's $deltatoken
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout)["mode"] == "delta"
    outputs["second delta slot"] = output_of(second)
    tokens.add(delta_token(env))
    assert "DEBUG urllib3" in second.stderr and "/v1.0/users/delta" in second.stderr  # the lines that leaked

    sandbox.directory.random_changes(rng, 40)
    sandbox.faults.add("graph", path_contains="/users/delta", drop=True)  # urllib3 retries, then gives up
    failed = run_cli("--debug", "--slot", "2026-03-09T02:00:00Z")
    assert failed.returncode == 4, failed.stderr[-3000:]
    assert "Traceback" in failed.stderr and "Retrying" in failed.stderr
    outputs["failing delta slot"] = output_of(failed)
    sandbox.faults.clear()

    secrets = base_secrets(sandbox, sas) | {"a delta token": set().union(*map(spellings, tokens))}
    assert find_leaks(outputs, secrets) == []


# --- items 1 and 2 under the Functions worker: logs at INFO, exception text, telemetry envelopes -------

_FUNCTION_RUNS = r"""
import json, logging, os, sys, traceback

# The worker's logging: its handler on the root logger at INFO, installed before the app is loaded.
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

from tests.integration.ingestion import serve
from tests.integration.helpers import invocation_context

received = serve()
from azure.functions.timer import TimerRequest
import function_app
from opentelemetry._logs import get_logger_provider

function = function_app.app.get_functions()[0].get_user_function()
timer = TimerRequest(schedule_status={"Next": sys.argv[1]})
raised = []
for attempt in range(3):  # fails (Graph drops the delta requests twice), then exports, then is skipped
    try:
        function(timer, invocation_context())
    except Exception as exc:  # what the worker hands the host: the message and the formatted traceback
        raised.append(f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)))
get_logger_provider().force_flush()
print(json.dumps({"raised": raised, "envelopes": received}))
"""


def test_function_logs_exceptions_and_telemetry_carry_no_credential(export_env, azurite, sandbox, monkeypatch):
    sas = account_sas()
    monkeypatch.setenv("EXPORT_STORAGE", sas_storage(azurite, sas))
    monkeypatch.setenv("EXPORT_MODE", "delta")
    monkeypatch.setenv("GRAPH_MAX_RETRIES_PER_PAGE", "1")
    env = {**export_env, "EXPORT_STORAGE": os.environ["EXPORT_STORAGE"]}
    first = run_cli("--quiet", "--slot", "2026-03-07T02:00:00Z")  # the delta state the function's slot follows
    assert first.returncode == 0, first.stderr
    token = delta_token(env)
    sandbox.directory.random_changes(random.Random(21), 40)
    # urllib3 tries each delta request twice (GRAPH_MAX_RETRIES_PER_PAGE=1): the first invocation fails.
    sandbox.faults.add("graph", path_contains="/users/delta", drop=True, count=2)
    done = subprocess.run([sys.executable, "-c", _FUNCTION_RUNS, "2026-03-08T02:00:00+00:00"], cwd=REPO,
                          env={**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
                               "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    captured = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(captured["raised"]) == 1 and "GraphError" in captured["raised"][0]
    assert "Retrying" in done.stderr and "Export failed" in done.stderr and "Export succeeded" in done.stderr
    assert "was already exported" in done.stderr
    envelopes = "\n".join(json.dumps(e) for e in captured["envelopes"])
    for status in ("failed", "succeeded", "skipped"):
        assert f'"export_status": "{status}"' in envelopes or f'"export_status":"{status}"' in envelopes, status
    tokens = {token, delta_token(env)}
    outputs = {"the function's log (root at INFO)": done.stderr, "the exception handed to the host":
               "\n".join(captured["raised"]), "the telemetry envelopes": envelopes}
    secrets = base_secrets(sandbox, sas) | {"a delta token": set().union(*map(spellings, tokens))}
    assert find_leaks(outputs, secrets) == []

"""``python -m sandbox demo``: one export against the local sandbox tenant, start to finish.

Starts the sandbox (Entra ID, managed identity, Key Vault, Graph) and Azurite, runs
``python -m graph_export run`` in a child process with only settings pointing at them (the same
code the timer runs in Azure), checks what it published, copies the export next to the repo so it
can be opened, and stops everything. With ``--delta``: two daily slots in delta mode, 1% of the
tenant changed in between, the second snapshot made from the changes and checked against the tenant.

Each demo starts from an empty Azurite: what an earlier demo left in the work dir (its exports, its
``users/latest.json`` pointing at a later slot, its delta state for another tenant) is removed first, as the
sandbox tenant is a new one every time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from azure.storage.blob import BlobServiceClient, ContainerClient

from . import Sandbox
from .azurite import Azurite

REPO_ROOT = Path(__file__).resolve().parent.parent

# Variables from the machine that would steer the export elsewhere (a real identity, a real vault).
_AMBIENT = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AzureWebJobsStorage",
            "AzureWebJobsStorage__blobServiceUri", "EXPORT_STORAGE__blobServiceUri")


def run_demo(users: int, workdir: Path, exports_dir: Path, delta: bool = False) -> int:
    """Run the demo; returns the export's exit code (0 on success)."""
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"demo: starting the sandbox tenant ({users:,} users) and Azurite under {workdir}", file=sys.stderr)
    with Sandbox(users=users, workdir=workdir / "tenant") as sandbox, Azurite(workdir / "azurite") as azurite:
        env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
        env.update(sandbox.settings)
        env.update({"EXPORT_STORAGE": azurite.connection_string, "EXPORT_CONTAINER": "graph-exports"})
        if not _start_clean(azurite.connection_string, workdir / "azurite"):
            return 1
        slots: list[str | None] = [None]
        if delta:
            env["EXPORT_MODE"] = "delta"
            today = datetime.combine(datetime.now(timezone.utc).date(), time(2), timezone.utc)
            slots = [f"{today - timedelta(days=d):%Y-%m-%dT%H:%M:%SZ}" for d in (2, 1)]
        for n, slot in enumerate(slots):
            if n:
                changed = max(1, users // 100)
                sandbox.directory.random_changes(random.Random(n), changed)
                print(f"demo: {changed:,} changes in the tenant (updates, new, deleted and restored users); "
                      f"the next slot reads only those", file=sys.stderr)
            print(f"demo: running `python -m graph_export run{f' --slot {slot}' if slot else ''}` against it"
                  f"{' (EXPORT_MODE=delta)' if delta else ''}", file=sys.stderr)
            command = [sys.executable, "-m", "graph_export", "run", *(["--slot", slot] if slot else [])]
            result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=1800)
            if result.returncode != 0:
                print(f"demo: the export failed with exit code {result.returncode} (its error is above)",
                      file=sys.stderr)
                return result.returncode
            summary = json.loads(result.stdout)
            print(f"demo: {summary['mode']} export of {summary['users']:,} users{_changes_read(env, summary)} in "
                  f"{summary['pages']} Graph pages, {summary['duration_s']} s", file=sys.stderr)
        print(json.dumps(summary, indent=2))
        local = _download_and_check(env, summary, exports_dir)
        if delta and _users_by_id(local) != {u["id"]: u for u in sandbox.expected_users(
                json.loads((exports_dir / Path(summary["manifest"]).name).read_text())["properties"])}:
            raise SystemExit("demo: the snapshot made from changes differs from the tenant")
    print(f"demo: the export blob was {summary['url']} (container {summary['container']} in Azurite; "
          "stopped now)", file=sys.stderr)
    print(f"demo: a verified copy is at {local} ({summary['users']:,} users, sha256 matches the manifest); "
          f"look inside with: zcat {local} | head -3", file=sys.stderr)
    return 0


def _start_clean(connection_string: str, location: Path) -> bool:
    """Remove every container an earlier demo left in this Azurite; False (having said why) if that fails."""
    service = BlobServiceClient.from_connection_string(connection_string)
    try:
        left = [c.name for c in service.list_containers()]
        for name in left:
            service.delete_container(name)
    except Exception as error:  # noqa: BLE001 - said in one line; the demo cannot be trusted on old data
        print(f"demo: could not empty the Azurite data an earlier demo left under {location} "
              f"({type(error).__name__}); delete that directory (or pass another --workdir) and run again",
              file=sys.stderr)
        return False
    if left:
        print(f"demo: removed what an earlier demo left in Azurite under {location} (container "
              f"{', '.join(left)}): each demo starts from a clean container", file=sys.stderr)
    return True


def _changes_read(env: dict[str, str], summary: dict) -> str:
    """`` from N changes read`` for a slot made from changes (its manifest says how many), else nothing."""
    if summary.get("mode") != "delta":
        return ""
    container = ContainerClient.from_connection_string(env["EXPORT_STORAGE"], summary["container"])
    applied = json.loads(container.download_blob(summary["manifest"]).readall()).get("delta") or {}
    records = applied.get("change_records")
    return f" from {records:,} changes read" if isinstance(records, int) else ""


def _download_and_check(env: dict[str, str], summary: dict, exports_dir: Path) -> Path:
    """Copy the export out of Azurite and check it against its manifest, as a consumer would."""
    container = ContainerClient.from_connection_string(env["EXPORT_STORAGE"], summary["container"])
    data = container.download_blob(summary["blob"]).readall()
    manifest = json.loads(container.download_blob(summary["manifest"]).readall())
    lines = gzip.decompress(data).count(b"\n")
    if hashlib.sha256(data).hexdigest() != manifest["sha256"] or lines != manifest["users"]:
        raise SystemExit("demo: the downloaded export does not match its manifest")
    exports_dir.mkdir(parents=True, exist_ok=True)
    local = exports_dir / Path(summary["blob"]).name
    local.write_bytes(data)
    (exports_dir / Path(summary["manifest"]).name).write_bytes(json.dumps(manifest, indent=2).encode())
    return local


def _users_by_id(export: Path) -> dict[str, dict]:
    users = [json.loads(line) for line in gzip.decompress(export.read_bytes()).splitlines()]
    return {u["id"]: u for u in users}

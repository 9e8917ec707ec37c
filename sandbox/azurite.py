"""Azurite (the Storage emulator from npm) as a managed child process: Blob and Queue storage.

Started from the repo's ``node_modules`` (``npm ci`` installs it) as one ``azurite`` process serving
the blob and the queue service, each on a free loopback port, with its data under the given work dir,
in its own process group so stopping it never touches anything else. The table service cannot be left
out of that process (``azurite`` has no option to skip one), so it listens on a free port too, unused.
``--skipApiVersionCheck`` is required: azure-storage-blob and azure-storage-queue send an
``x-ms-version`` newer than Azurite knows. ``--disableTelemetry`` keeps it from trying to reach the
internet. With TLS, ``--cert``/``--key`` and ``--oauth basic`` apply to every service of the process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .ca import TlsFiles
from .server import LOOPBACK

ACCOUNT = "devstoreaccount1"
#: The well-known, public development key every Azurite and Azure Storage emulator uses.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_REPO_ROOT = Path(__file__).resolve().parent.parent


class AzuriteError(RuntimeError):
    """Azurite is not installed, did not start, or exited early."""


class Azurite:
    """Azurite's blob and queue services on ``127.0.0.1:<free ports>``; :attr:`connection_string` reaches both."""

    def __init__(self, workdir: Path | str, repo_root: Path | str | None = None, *,
                 startup_timeout_s: float = 20.0, tls: TlsFiles | None = None) -> None:
        """With ``tls`` (the sandbox's certificate), Azurite serves HTTPS and accepts OAuth bearer
        tokens (``--oauth basic``), so identity-based access can be exercised like in Azure."""
        self.workdir = Path(workdir)
        self.tls = tls
        self.repo_root = Path(repo_root) if repo_root is not None else _REPO_ROOT
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None          # the blob service's
        self.queue_port: int | None = None
        self.table_port: int | None = None    # bound because azurite starts it; nothing here uses it
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def executable(self) -> Path:
        return self.repo_root / "node_modules" / ".bin" / "azurite"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def blob_endpoint(self) -> str:
        self._require_port()
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        self._require_port()
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """Explicit BlobEndpoint and QueueEndpoint: ``UseDevelopmentStorage=true`` would assume 10000/10001."""
        scheme = "https" if self.tls else "http"
        return (f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};")

    def start(self) -> "Azurite":
        """Start Azurite and wait (bounded) until its port accepts connections."""
        if self._proc is not None:
            raise AzuriteError("Azurite is already started")
        if not self.executable.exists():
            raise AzuriteError(f"Azurite is not installed ({self.executable} is missing): run `npm ci` "
                               f"in {self.repo_root}")
        location = self.workdir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        self.port, self.queue_port, self.table_port = _free_ports(3)
        log_path = self.workdir / "azurite.log"
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [str(self.executable), "--blobHost", LOOPBACK, "--blobPort", str(self.port),
                 "--queueHost", LOOPBACK, "--queuePort", str(self.queue_port),
                 "--tableHost", LOOPBACK, "--tablePort", str(self.table_port),
                 "--location", str(location), "--skipApiVersionCheck", "--disableTelemetry", "--silent",
                 *self._tls_args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.repo_root), start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise AzuriteError(f"Azurite exited with code {code} during start-up: "
                                   f"{_tail(log_path)}")
            if _accepts(self.port) and _accepts(self.queue_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise AzuriteError(f"Azurite did not accept connections on ports {self.port} and {self.queue_port} within "
                           f"{self.startup_timeout_s:.0f} s: {_tail(log_path)}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group we created, wait, then SIGKILL it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)  # our own session: pgid == pid of the child we started
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                continue
        proc.poll()

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--cert", str(self.tls.cert_file), "--key", str(self.tls.key_file), "--oauth", "basic"]

    def _require_port(self) -> None:
        if self.port is None:
            raise AzuriteError("Azurite is not started")


def _free_ports(count: int) -> tuple[int, ...]:
    """``count`` distinct ports the OS considers free right now (Azurite binds them a moment later): all held
    open at once while choosing, so the OS cannot hand out one of them twice."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return tuple(int(s.getsockname()[1]) for s in sockets)
    finally:
        for s in sockets:
            s.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 500) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no log)"
    return " ".join(text[-limit:].split()) or "(empty log)"

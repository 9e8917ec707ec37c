"""A TLS endpoint whose certificate the client does not trust, counting the connections made to it.

Its certificate comes from a CA generated for it alone; the client is made to trust another freshly
generated CA (``REQUESTS_CA_BUNDLE``), so every handshake fails certificate verification, as it does
when a machine lacks a private CA or a TLS-inspecting proxy re-signs the traffic.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from sandbox.ca import generate_tls
from sandbox.server import tls_context


class UntrustedTls:
    def __init__(self, workdir: Path) -> None:
        served = generate_tls(workdir / "served")
        #: A CA that did not sign the served certificate: what the client is told to trust.
        self.other_ca = generate_tls(workdir / "other").ca_file
        self._context = tls_context(served.cert_file, served.key_file)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = self._socket.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        #: TCP connections accepted: 1 means the client did not retry.
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name="untrusted-tls")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(5)
            try:
                self._context.wrap_socket(conn, server_side=True).close()
            except (OSError, ValueError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._socket.close()

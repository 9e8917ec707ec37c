"""A local Application Insights ingestion endpoint for tests (and the scripts they run in a subprocess):
it records every envelope it is sent and accepts them all."""

from __future__ import annotations

import gzip
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve() -> list[dict[str, Any]]:
    """Start the endpoint, point APPLICATIONINSIGHTS_CONNECTION_STRING at it; the list it fills."""
    received: list[dict[str, Any]] = []

    class Ingestion(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.extend(json.loads(body))
            answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint=http://127.0.0.1:{server.server_address[1]}/")
    return received

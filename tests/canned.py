"""A requests adapter that answers every request with one canned response: a service's refusal, at the SDK's seam."""

from __future__ import annotations

import io

import requests


class Canned(requests.adapters.BaseAdapter):
    """Answers every request with ``status``, ``body`` and ``headers`` (mount it on the SDK's session)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__()
        self.status, self.body, self.headers = status, body, headers

    def send(self, request, **kwargs):
        response = requests.Response()
        response.status_code, response.url, response.request = self.status, request.url, request
        response.raw = io.BytesIO(self.body)
        response.headers.update(self.headers)
        return response

    def close(self) -> None:
        pass

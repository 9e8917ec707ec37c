"""A Storage queue in memory: the QueueClient calls graph_export makes, with Azure's visibility rules.

A received message is invisible for its visibility timeout and counts one more dequeue; ``update_message``
sets when it is visible again (its pop receipt changes, as in Azure); ``delete_message`` needs the latest pop
receipt; ``approximate_message_count`` counts invisible messages too. Content is kept as the text sent (the
base64 policies of the real client are the SDK's, exercised on Azurite by tests/storage/test_queues.py, which
also holds this fake to Azurite's answers).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage, QueueProperties


def _error(kind: type[HttpResponseError], status: int, code: str, message: str) -> HttpResponseError:
    error = kind(message)
    error.status_code, error.error_code = status, code  # type: ignore[assignment]
    return error


@dataclass
class _Held:
    id: str
    content: str
    visible_at: float
    dequeue_count: int = 0
    pop_receipt: str | None = None


class MemoryQueue:
    """One queue; ``clock`` gives seconds (monotonic by default)."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic, exists: bool = True) -> None:
        self.queue_name = name
        self.clock = clock
        self._held: list[_Held] = []
        self._exists = exists
        self._lock = threading.Lock()

    def create_queue(self, **kwargs: Any) -> None:
        if self._exists:
            raise ResourceExistsError("The specified queue already exists.")
        self._exists = True

    def send_message(self, content: str, *, visibility_timeout: int | None = None, **kwargs: Any) -> QueueMessage:
        self._require()
        with self._lock:
            held = _Held(secrets.token_hex(8), str(content), self.clock() + (visibility_timeout or 0))
            self._held.append(held)
            return self._message(held)

    def receive_message(self, *, visibility_timeout: int | None = None, **kwargs: Any) -> QueueMessage | None:
        self._require()
        with self._lock:
            now = self.clock()
            held = next((h for h in self._held if h.visible_at <= now), None)
            if held is None:
                return None
            held.dequeue_count += 1
            held.pop_receipt = secrets.token_hex(8)
            held.visible_at = now + (30 if visibility_timeout is None else visibility_timeout)
            return self._message(held)

    def update_message(self, message: QueueMessage | str, pop_receipt: str | None = None, content: object = None, *,
                       visibility_timeout: int | None = None, **kwargs: Any) -> QueueMessage:
        with self._lock:
            held = self._find(message, pop_receipt)
            held.pop_receipt = secrets.token_hex(8)
            held.visible_at = self.clock() + (visibility_timeout or 0)
            if content is not None:
                held.content = str(content)
            return self._message(held)

    def delete_message(self, message: QueueMessage, pop_receipt: str | None = None, **kwargs: Any) -> None:
        with self._lock:
            self._held.remove(self._find(message))

    def get_queue_properties(self, **kwargs: Any) -> QueueProperties:
        self._require()
        properties = QueueProperties()
        properties.approximate_message_count = len(self._held)
        return properties

    def contents(self) -> list[str]:
        """Every message's text, visible or not, in the order sent."""
        return [h.content for h in self._held]

    def _find(self, message: QueueMessage | str, pop_receipt: str | None = None) -> _Held:
        """The held message by id, if ``pop_receipt`` (or the message's own) is its latest: by a QueueMessage or
        its id and receipt, as the SDK takes them."""
        message_id = message if isinstance(message, str) else message.id
        receipt = pop_receipt or (None if isinstance(message, str) else message.pop_receipt)
        held = next((h for h in self._held if h.id == message_id), None)
        if held is None:
            raise _error(ResourceNotFoundError, 404, "MessageNotFound", "The specified message does not exist.")
        if held.pop_receipt != receipt:  # received again, or updated, since: as Azurite answers
            raise _error(HttpResponseError, 400, "PopReceiptMismatch",
                         "The specified pop receipt did not match the pop receipt for a dequeued message.")
        return held

    def _message(self, held: _Held) -> QueueMessage:
        message = QueueMessage(content=held.content)
        message.id, message.pop_receipt, message.dequeue_count = held.id, held.pop_receipt, held.dequeue_count
        return message

    def _require(self) -> None:
        if not self._exists:
            raise ResourceNotFoundError("The specified queue does not exist.")

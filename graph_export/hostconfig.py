"""What the Functions host does with queue messages, read from the one place that says it: host.json.

The queue trigger's retries are the host's (``extensions.queues`` in host.json): a failed message becomes
visible again after ``visibilityTimeout`` and, once it has been dequeued ``maxDequeueCount`` times, the host
moves it to ``<queue>-poison``. ``python -m graph_export work`` does the same locally, with these numbers, so
both doors count attempts alike. Defaults are the Storage Queues extension's (QueuesOptions: maxDequeueCount
5, visibilityTimeout 0; https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#host-json).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: host.json beside function_app.py: the deployment package's root (.funcignore keeps both).
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
_TIMESPAN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class QueueOptions:
    """The host's queue options this app relies on."""

    #: Attempts of one message before it is moved to the poison queue.
    max_dequeue_count: int
    #: Seconds a failed message stays invisible before its next attempt.
    visibility_timeout_s: int


def queue_options(path: Path = HOST_JSON) -> QueueOptions:
    """host.json's ``extensions.queues`` as this app reads it; ValueError if a value is not what the host takes."""
    queues = json.loads(path.read_text(encoding="utf-8")).get("extensions", {}).get("queues", {})
    count = queues.get("maxDequeueCount", 5)
    if type(count) is not int or count < 1:
        raise ValueError(f"{path.name}: extensions.queues.maxDequeueCount is {count!r}: expected a whole number >= 1")
    return QueueOptions(max_dequeue_count=count, visibility_timeout_s=_seconds(queues.get("visibilityTimeout", "00:00:00")))


def _seconds(timespan: object) -> int:
    match = _TIMESPAN.match(str(timespan))
    if match is None:
        raise ValueError(f"host.json: extensions.queues.visibilityTimeout is {timespan!r}: expected hh:mm:ss")
    hours, minutes, seconds = map(int, match.groups())
    return hours * 3600 + minutes * 60 + seconds

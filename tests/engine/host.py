"""The Functions host's side of a Python 3.13 worker, for driving function_app.py through the real engine.

For Python 3.13+ the host starts its thin proxy worker (shipped with the host, not on PyPI), which
loads PyPI's ``azure-functions-runtime`` (the engine: indexing, bindings, invocation) and hands it each
gRPC message through the runtime's ``handle_event`` coroutines, as a ``WorkerRequest`` whose
``request`` is the host's ``StreamingMessage`` and whose ``properties`` carry the generated protobuf
module. :class:`Host` does the proxy's part without the gRPC channel: it builds the messages the host
sends (serialized and parsed again, as they would cross the channel), awaits the same coroutines, and
parses what they answer. Its :class:`RpcLogHandler` does what the proxy's logging handler on the root
logger does: each record becomes the ``RpcLog`` the host receives, with the invocation id looked up as
the proxy looks it up (the running task's, then the runtime's ``invocation_id_cv``, then the one the
proxy registered for the thread it dispatches on; its "last invocation" fallback is only for runtimes
without that variable, and its own thread-local is never set). A record without one is not shown with
the invocation. For the worker of Python 3.12 and earlier (bundled with the host), which reads
``context.thread_local_storage.invocation_id`` instead, each captured log also notes that value.

The protobuf module is the one generated from the host's FunctionRpc.proto that PyPI's
``azure-functions-runtime-v1`` wheel ships (as ``tests/protos``, a name this repository's own
``tests`` package would clash with): ``make install-engine`` unpacks it into ``.venv-engine/rpc``,
and :func:`load_protos` imports it from there under the name ``functions_rpc``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import azure_functions_runtime as runtime
from azure_functions_runtime.bindings import context as runtime_context

#: Where ``make install-engine`` unpacks azure-functions-runtime-v1 (for its generated protobuf module).
RPC_DIR = Path(sys.prefix) / "rpc" / "tests" / "protos"
#: The host version the messages claim (Functions host 4.x, as on Flex Consumption).
HOST_VERSION = "4.1054.0"


def load_protos() -> ModuleType:
    """The generated FunctionRpc protobuf package, imported from :data:`RPC_DIR` as ``functions_rpc``."""
    if "functions_rpc" in sys.modules:
        return sys.modules["functions_rpc"]
    init = RPC_DIR / "__init__.py"
    if not init.is_file():
        raise RuntimeError(f"{init} is missing: run `make install-engine` (it unpacks azure-functions-runtime-v1)")
    spec = importlib.util.spec_from_file_location("functions_rpc", init, submodule_search_locations=[str(RPC_DIR)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["functions_rpc"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class HostLog:
    """One RpcLog as the host receives it, and what the ≤3.12 worker would have tied the record to."""

    level: str
    category: str
    message: str
    invocation_id: str | None
    thread: str
    #: ``context.thread_local_storage.invocation_id`` on the thread that logged (the ≤3.12 worker's rule).
    thread_local_id: str | None


class RpcLogHandler(logging.Handler):
    """The proxy worker's root handler: every record becomes an RpcLog, tied to an invocation if it can be."""

    def __init__(self, host: "Host") -> None:
        super().__init__()
        self._host = host
        self.logs: list[HostLog] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        protos = self._host.protos
        pb2 = protos.FunctionRpc_pb2
        message = pb2.StreamingMessage(request_id=self._host.request_id, rpc_log=pb2.RpcLog(
            level=_rpc_level(pb2, record.levelno), message=self.format(record), category=record.name,
            log_category=pb2.RpcLog.RpcLogCategory.Value(
                "System" if record.name.startswith(("proxy_worker", "azure_functions_runtime", "azure.functions"))
                else "User"),
            invocation_id=self._host.current_invocation_id() or ""))
        sent = pb2.StreamingMessage.FromString(message.SerializeToString()).rpc_log  # as it crosses the channel
        with self._lock:
            self.logs.append(HostLog(
                level=pb2.RpcLog.Level.Name(sent.level), category=sent.category, message=sent.message,
                invocation_id=sent.invocation_id or None, thread=threading.current_thread().name,
                thread_local_id=getattr(runtime_context._invocation_id_local, "invocation_id", None)))


def _rpc_level(pb2: Any, levelno: int) -> int:
    for threshold, name in ((logging.CRITICAL, "Critical"), (logging.ERROR, "Error"), (logging.WARNING, "Warning"),
                            (logging.INFO, "Information"), (logging.DEBUG, "Debug")):
        if levelno >= threshold:
            return int(pb2.RpcLog.Level.Value(name))
    return int(pb2.RpcLog.Level.Value("None"))


class _InvocationTask(asyncio.Task):
    """The proxy's task class: a task knows the invocation it serves, and so do the tasks it creates."""

    invocation_id: str | None = None

    def __init__(self, coro: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(coro, loop=loop, **kwargs)
        parent = asyncio.current_task(loop)
        self.invocation_id = getattr(parent, "invocation_id", None)


@dataclass(frozen=True)
class Invocation:
    """What the host got back for one invocation, and the logs tied to it."""

    invocation_id: str
    status: str
    exception: str | None
    logs: list[HostLog]


class Host:
    """One worker process as the host drives it: init (which indexes), metadata, load, then invocations."""

    def __init__(self, app_directory: Path) -> None:
        self.protos = load_protos()
        self.pb2 = self.protos.FunctionRpc_pb2
        self.app_directory = app_directory
        self.request_id = uuid.uuid4().hex
        self.loop = asyncio.new_event_loop()
        self.loop.set_task_factory(lambda loop, coro, **kw: _InvocationTask(coro, loop=loop, **kw))
        self._thread_invocations: dict[int, str] = {}
        self.handler = RpcLogHandler(self)
        self.functions: list[Any] = []

    # -- the proxy's invocation id lookup ------------------------------------------------------------------

    def current_invocation_id(self) -> str | None:
        """The proxy's order: the running task's id, the runtime's context variable, this thread's registration."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            task = None
        if (found := getattr(task, "invocation_id", None)) is not None:
            return str(found)
        if (found := runtime.invocation_id_cv.get()) is not None:
            return str(found)
        return self._thread_invocations.get(threading.get_ident())

    # -- the messages ----------------------------------------------------------------------------------------

    def _send(self, handler: Any, name: str, **fields: Any) -> Any:
        """``name``: the StreamingMessage field; awaited as the proxy awaits it; the parsed answer."""
        message = self.pb2.StreamingMessage(request_id=self.request_id, **fields)
        received = self.pb2.StreamingMessage.FromString(message.SerializeToString())
        request = _WorkerRequest(name, received, {"protos": self.protos, "host": "127.0.0.1"})
        answer = self.loop.run_until_complete(self.loop.create_task(handler(request)))
        return type(answer).FromString(answer.SerializeToString())

    def start(self) -> Any:
        """Attach the log handler (root at INFO, as the proxy sets it), start the thread pool, init the worker."""
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(self.handler)
        runtime.start_threadpool_executor()
        return self._send(runtime.worker_init_request, "WorkerInitRequest", worker_init_request=self.pb2.WorkerInitRequest(
            host_version=HOST_VERSION, worker_directory=str(Path(runtime.__file__).parent),
            function_app_directory=str(self.app_directory),
            capabilities={"RpcHttpBodyOnly": "true", "TypedDataCollection": "true"}))

    def metadata(self) -> Any:
        response = self._send(runtime.functions_metadata_request, "FunctionsMetadataRequest",
                              functions_metadata_request=self.pb2.FunctionsMetadataRequest(
                                  function_app_directory=str(self.app_directory)))
        self.functions = list(response.function_metadata_results)
        return response

    def load(self, metadata: Any) -> Any:
        return self._send(runtime.function_load_request, "FunctionLoadRequest",
                          function_load_request=self.pb2.FunctionLoadRequest(
                              function_id=metadata.function_id, metadata=metadata))

    def invoke(self, function: Any, timer_json: str, *, retry_count: int = 0, max_retry_count: int = 0) -> Invocation:
        """One timer invocation with the host's TimerInfo JSON; its answer and the logs tied to it."""
        return self._invoke(function, [self.pb2.ParameterBinding(name="timer", data=self.pb2.TypedData(json=timer_json))],
                            {}, retry_count=retry_count, max_retry_count=max_retry_count)

    def invoke_queue(self, function: Any, text: str, *, dequeue_count: int = 1) -> Invocation:
        """One queue trigger invocation as the host sends it: the message's text (already base64-decoded by the
        host's queue extension) as a string input, and the message's properties as trigger metadata (the names
        the Python library's QueueMessageInConverter reads: Id, DequeueCount, PopReceipt, the three times).

        DequeueCount is sent as JSON, which the library decodes like an int (azure.functions.meta
        ``_decode_typed_data``); the host's exact TypedData kind for it was not checked against the host's source.
        """
        now = "2026-12-03T02:00:00+00:00"
        metadata = {
            "Id": self.pb2.TypedData(string=str(uuid.uuid4())),
            "DequeueCount": self.pb2.TypedData(json=str(dequeue_count)),
            "PopReceipt": self.pb2.TypedData(string=uuid.uuid4().hex),
            "InsertionTime": self.pb2.TypedData(json=json.dumps(now)),
            "ExpirationTime": self.pb2.TypedData(json=json.dumps("2026-12-10T02:00:00+00:00")),
            "NextVisibleTime": self.pb2.TypedData(json=json.dumps(now)),
            "QueueTrigger": self.pb2.TypedData(string=text),
        }
        return self._invoke(function, [self.pb2.ParameterBinding(name="message", data=self.pb2.TypedData(string=text))],
                            metadata)

    def _invoke(self, function: Any, inputs: list[Any], metadata: dict[str, Any], *, retry_count: int = 0,
                max_retry_count: int = 0) -> Invocation:
        invocation_id = str(uuid.uuid4())
        before = len(self.handler.logs)
        request = self.pb2.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id, input_data=inputs,
            trigger_metadata=metadata,
            trace_context=self.pb2.RpcTraceContext(
                trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01", trace_state=""),
            retry_context=self.pb2.RetryContext(retry_count=retry_count, max_retry_count=max_retry_count))

        async def dispatch(handler: Any) -> Any:  # what the proxy does before handing the request on
            task = asyncio.current_task()
            assert isinstance(task, _InvocationTask)
            task.invocation_id = invocation_id
            self._thread_invocations[threading.get_ident()] = invocation_id
            return await handler

        message = self.pb2.StreamingMessage(request_id=self.request_id, invocation_request=request)
        received = self.pb2.StreamingMessage.FromString(message.SerializeToString())
        coroutine = runtime.invocation_request(_WorkerRequest("FunctionInvocationRequest", received, None))
        answer = self.loop.run_until_complete(self.loop.create_task(dispatch(coroutine)))
        answer = type(answer).FromString(answer.SerializeToString())
        status = self.pb2.StatusResult.Status.Name(answer.result.status)
        exception = answer.result.exception.message if answer.result.HasField("exception") else None
        logs = [log for log in self.handler.logs[before:] if log.invocation_id == invocation_id]
        return Invocation(invocation_id, status, exception, logs)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        runtime.stop_threadpool_executor()
        self.loop.close()


@dataclass
class _WorkerRequest:
    """The proxy's ``WorkerRequest``: the message's name, the message, and what the runtime needs with it."""

    name: str
    request: Any
    properties: dict[str, Any] | None


def timer_info(*, last: str | None, next_: str, last_updated: str | None, past_due: bool = False,
               status: bool = True) -> str:
    """The TimerInfo JSON the host sends (Json.NET: 7-digit fractions, offsets); ``status=False``: no status yet."""
    schedule_status = {"Last": last, "Next": next_, "LastUpdated": last_updated} if status else None
    return json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": schedule_status, "IsPastDue": past_due})

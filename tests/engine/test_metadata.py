"""What the host learns when it starts the worker: init, the indexed function's metadata, load.

Checked as the host checks them (its function metadata validation: the function's name, its
bindings' names, its language and its retry options) and against the binding the README documents.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

# The host's name rules (Microsoft.Azure.WebJobs.Script.Utility): a function name, and a binding name.
FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$(?<!^host$)", re.IGNORECASE)
BINDING_NAME = re.compile(r"^([a-zA-Z][a-zA-Z0-9]{0,127}|\$return)$")


def the_function(worker, name="export_users"):
    assert sorted(f.name for f in worker.functions) == ["export_tenant", "export_users"]
    return next(f for f in worker.functions if f.name == name)


def test_the_worker_starts_and_indexes_the_app(worker):
    assert worker.pb2.StatusResult.Status.Name(worker.init_response.result.status) == "Success", \
        worker.init_response.result.exception.message
    assert worker.pb2.StatusResult.Status.Name(worker.metadata_response.result.status) == "Success"
    assert worker.metadata_response.use_default_metadata_indexing is False  # the worker indexed it itself
    assert [worker.pb2.StatusResult.Status.Name(r.result.status) for r in worker.load_responses] == ["Success"] * 2


def test_the_functions_pass_the_hosts_validation(worker):
    for name in ("export_users", "export_tenant"):
        function = the_function(worker, name)
        assert FUNCTION_NAME.match(function.name)
        assert function.language == "python" and function.script_file.endswith("function_app.py")
        assert function.bindings and all(BINDING_NAME.match(binding) for binding in function.bindings)
        assert function.properties["worker_indexed"] == "True"


def test_the_timer_binding_is_the_documented_one(worker):
    function = the_function(worker)
    assert [json.loads(raw) for raw in function.raw_bindings] == [{
        "direction": "IN", "type": "timerTrigger", "name": "timer",
        "schedule": "%EXPORT_SCHEDULE%", "runOnStartup": False, "useMonitor": True,
    }]
    binding = function.bindings["timer"]
    assert binding.type == "timerTrigger" and worker.pb2.BindingInfo.Direction.Name(binding.direction) == "in"


def test_a_failed_invocation_is_retried_within_the_hosts_bounds(worker):
    retry = the_function(worker).retry_options
    assert worker.pb2.RpcRetryOptions.RetryStrategy.Name(retry.retry_strategy) == "exponential_backoff"
    assert retry.max_retry_count == 3  # >= -1 (-1: forever) is what the host accepts
    minimum, maximum = retry.minimum_interval.ToTimedelta(), retry.maximum_interval.ToTimedelta()
    assert (minimum, maximum) == (timedelta(minutes=1), timedelta(minutes=15))
    assert timedelta(0) <= minimum <= maximum  # the host refuses a negative or inverted pair


def test_the_queue_binding_reads_export_queue_with_the_export_storage_connection(worker):
    function = the_function(worker, "export_tenant")
    assert [json.loads(raw) for raw in function.raw_bindings] == [{
        "direction": "IN", "type": "queueTrigger", "name": "message",
        "queueName": "%EXPORT_QUEUE%", "connection": "EXPORT_STORAGE",
    }]
    # No function-level retry: the queue's own (host.json maxDequeueCount, then the poison queue) retries it.
    assert not function.HasField("retry_options")

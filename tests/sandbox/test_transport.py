"""The HTTP transport: retry policy, run budget, and the request-sent signal, against a real local server."""

import contextlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from graph_export import transport


def session_of(backoff_base_s, retries, budget, announce=None):
    """A session with Graph's retry policy, as WarmClients builds it."""
    return transport.make_session(transport.budgeted_retry(backoff_base_s, retries, budget), announce=announce)


@contextlib.contextmanager
def serving(answer):
    """A local HTTP/1.1 server answering each GET with the status ``answer()`` gives and a 2-byte body; its URL."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(answer())
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    """A local HTTP server whose handler answers only once the test's ``sent`` event is set (or 5 s pass)."""
    sent = threading.Event()
    statuses = []

    def answer():
        statuses.append(200 if sent.wait(5.0) else 504)
        return statuses[-1]

    with serving(answer) as url:
        yield f"{url}/", sent, statuses


def test_the_callback_runs_once_the_request_is_written_before_any_response(server):
    url, sent, statuses = server
    signal = transport.RequestSignal()
    session = session_of(0.01, 2, transport.RetryBudget(5), announce=signal)
    calls = []
    with signal.armed(lambda: (calls.append(1), sent.set())):
        response = session.get(url, timeout=10)
    # The server held its answer until the callback ran: the callback came before the response.
    assert statuses == [200] and response.status_code == 200 and calls == [1]


def test_the_callback_runs_on_leaving_when_nothing_was_sent():
    calls = []
    signal = transport.RequestSignal()
    with pytest.raises(ValueError):
        with signal.armed(lambda: calls.append(1)):
            raise ValueError("failed before sending")
    assert calls == [1]
    session = session_of(0.01, 0, transport.RetryBudget(5), announce=signal)
    with pytest.raises(requests.ConnectionError):
        with signal.armed(lambda: calls.append(2)):
            session.get("http://127.0.0.1:9/", timeout=1)  # refused: never written
    assert calls == [1, 2]


def test_the_callback_is_for_this_thread_only(server):
    url, sent, statuses = server
    signal = transport.RequestSignal()
    session = session_of(0.01, 2, transport.RetryBudget(5), announce=signal)
    calls = []
    with signal.armed(lambda: calls.append("mine")):
        other = threading.Thread(target=lambda: calls.append(session.get(url, timeout=10).status_code))
        sent.set()
        other.start()
        other.join()
        assert calls == [200]  # another thread's request did not run this thread's callback
    assert calls == [200, "mine"]


def test_a_signal_hears_only_the_session_it_was_given_to(server):
    """The signal travels with its session, not through a module-level side channel."""
    url, sent, statuses = server
    signal = transport.RequestSignal()
    session_of(0.01, 2, transport.RetryBudget(5), announce=signal)  # another session holds the signal
    plain = session_of(0.01, 2, transport.RetryBudget(5))
    calls = []
    sent.set()
    with signal.armed(lambda: calls.append(len(statuses))):
        assert plain.get(url, timeout=10).status_code == 200
    assert calls == [1]  # called on leaving, after the answer: the plain session never announced


def test_a_spent_run_budget_names_the_request_it_stopped():
    session = session_of(0.0, 5, transport.RetryBudget(1))
    with pytest.raises(requests.ConnectionError) as info:
        session.get("http://127.0.0.1:9/users?page=2", timeout=1)  # refused: retried once, then the budget is out
    stopped = info.value.args[0]
    assert isinstance(stopped.reason, transport.RunBudgetExhausted)
    assert stopped.url == "/users?page=2"  # urllib3 passes the url positionally; it must not be lost


class _Throttling(BaseHTTPRequestHandler):
    """429 with Retry-After: 1 the first time, then 200."""

    protocol_version = "HTTP/1.1"
    answered = 0

    def do_GET(self):
        type(self).answered += 1
        throttled = type(self).answered == 1
        self.send_response(429 if throttled else 200)
        if throttled:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_each_wait_before_a_retry_is_told_to_the_runs_listener_while_it_lasts():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    budget = transport.RetryBudget(5)
    heard = []

    class Listener:
        @contextlib.contextmanager
        def waiting(self, reason, seconds, throttled):
            heard.append((reason, seconds, throttled, budget.throttled_s))
            yield
            heard.append("over")

    budget.listener = Listener()
    try:
        response = session_of(0.01, 3, budget).get(f"http://127.0.0.1:{httpd.server_address[1]}/",
                                                               timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert response.status_code == 200
    assert heard == [("HTTP 429, Retry-After 1 s", 1, True, 0.0), "over"]  # heard before it slept
    assert 0.9 <= budget.throttled_s < 2


def test_a_request_retrying_for_more_than_a_few_seconds_says_so_on_each_wait(monkeypatch, caplog):
    from graph_export import retrying

    answers = [503, 503, 200]
    # "A few seconds", shortened: the first retry goes at once (not announced), the second after 0.02-0.03 s.
    monkeypatch.setattr(retrying, "PROGRESS_AFTER_S", 0.015)
    with serving(lambda: answers.pop(0)) as url:
        response = session_of(0.01, 5, transport.RetryBudget(5)).get(f"{url}/v1.0/users?$skiptoken=secret",
                                                                      timeout=10)
    assert response.status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("graph_export")]
    assert [w.getMessage().split(" in ")[0] for w in warnings] == [
        f"Graph at {url} answered HTTP 503; retry 2"]
    assert "secret" not in caplog.text

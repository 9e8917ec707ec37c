"""The HTTP transport without a server: retry policy, run budget, a short wait not announced, urllib3's range.

The request-sent signal and the announced waits, against a real local server: tests/sandbox/test_transport.py.
"""

import logging

from graph_export import transport


def session_of(backoff_base_s, retries, budget, announce=None):
    """A session with Graph's retry policy, as WarmClients builds it."""
    return transport.make_session(transport.budgeted_retry(backoff_base_s, retries, budget), announce=announce)


def test_retry_policy_covers_throttling_and_honours_retry_after():
    session = session_of(0.5, 7, transport.RetryBudget(10))
    retry = session.get_adapter("https://graph.example").max_retries
    assert {429, 503, 504}.issubset(retry.status_forcelist)
    assert retry.respect_retry_after_header and retry.backoff_factor == 0.5
    assert retry.total == 7 and retry.raise_on_status is False


def test_the_run_budget_is_shared_by_every_request_and_can_run_out():
    budget = transport.RetryBudget(2)
    assert budget.spend() and budget.spend() and not budget.spend()
    assert budget.exhausted and budget.used == 2


def test_the_installed_urllib3_is_in_the_range_the_request_signal_was_checked_against():
    """transport.py subclasses urllib3's connections and pools: a urllib3 outside requirements.txt's range
    may call them differently (the signal tests above check the behaviour on the installed one)."""
    import pathlib

    import urllib3
    from packaging.requirements import Requirement

    lines = (pathlib.Path(__file__).parents[2] / "requirements.txt").read_text().splitlines()
    pinned = next(Requirement(line) for line in lines if line.startswith("urllib3"))
    assert str(pinned.specifier) == "<3,>=2"
    assert pinned.specifier.contains(urllib3.__version__)
    manager = session_of(0.01, 0, transport.RetryBudget(1), announce=lambda: None).get_adapter("http://x").poolmanager
    assert {"http", "https"} <= set(manager.pool_classes_by_scheme)  # the hook urllib3 2.x offers


def test_a_short_wait_is_not_announced(caplog):
    retry = transport.BudgetedRetry(total=3, backoff_factor=0.0)
    retry.sleep()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

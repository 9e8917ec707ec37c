"""Completeness: Graph's /users/$count around a run against the snapshot's users, in memory (no sockets).

The range rule on its own (``UserCount``, ``completeness.check``); ``GraphUsers.count`` against the
memory Graph (refusals, a byte order mark, a 401); and ``run_export`` with the memory clients: a lost
page or a drifted delta snapshot is not published, the checkpoint goes, the delta state stays; a
refused count is recorded as unknown; a resumed run keeps the count its checkpoint saved. The
manifests it writes validate against schemas/ (format 4, and format 3 still reads).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonschema import Draft202012Validator

from graph_export import checkpoint, completeness, naming
from graph_export.errors import GraphError, IncompleteExport
from graph_export.export import run_export
from graph_export.naming import DELTA_STATE_BLOB, LATEST_BLOB, slot_pointer_name, slot_prefix
from graph_export.records import MANIFEST_FORMAT, Manifest, RecordError, UserCount
from graph_export.transport import RetryBudget
from tests.unit.memory_clients import MemoryClients
from tests.unit.memory_graph import (
    Answer,
    Fault,
    GraphRequest,
    count_request,
    make_users,
    unavailable,
    users_page,
)
from tests.unit.orchestration import SLOT0, SLOT1, SLOT2, USERS, blob, document, memory, settings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def names(clients: MemoryClients) -> set[str]:
    return {name for _, name in clients.storage.contents()}


def emptied(when: Callable[[GraphRequest], bool]) -> Fault:
    """The normal page with its users taken out (its nextLink kept): the client silently gets a page fewer."""
    def answer(request: GraphRequest, normal: Answer) -> Answer:
        body = json.loads(normal.body)
        body["value"] = []
        return Answer(normal.status, json.dumps(body).encode(), normal.headers)
    return Fault(answer, when, None)


def refused(status: int, code: str, message: str) -> Fault:
    def answer(request: GraphRequest, normal: Answer) -> Answer:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return Answer(status, body, {"Content-Type": "application/json", "request-id": "req-1"})
    return Fault(answer, count_request, None)


def answering(body: bytes) -> Fault:
    return Fault(lambda request, normal: Answer(200, body, {"Content-Type": "text/plain"}), count_request, None)


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


MANIFEST_SCHEMA, MANIFEST_3_SCHEMA = validator("manifest.schema.json"), validator("manifest-3.schema.json")


# -- the range rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("before, after, tolerance, allowed", [
    (20_000, 20_000, 5, (19_995, 20_005)),
    (20_000, 20_010, 5, (19_995, 20_015)),   # users added during the run: anything in between
    (20_010, 20_000, 0, (20_000, 20_010)),   # or removed
    (None, 20_000, 5, (19_995, 20_005)),     # one end unknown: the other alone
    (20_000, None, 5, (19_995, 20_005)),
    (None, None, 5, None),                   # neither: nothing to check
    (3, 2, 5, (0, 8)),                       # never below no users at all
])
def test_the_allowed_range_is_the_known_counts_widened_by_the_tolerance(before, after, tolerance, allowed):
    assert UserCount(before, after, tolerance).allowed() == allowed


@pytest.mark.parametrize("users, complete", [(19_994, False), (19_995, True), (20_000, True), (20_011, True),
                                             (20_015, True), (20_016, False), (19_001, False)])
def test_a_snapshot_is_complete_exactly_within_the_range_edges_included(users, complete):
    count = UserCount(20_000, 20_010, 5)
    assert count.holds(users) is complete
    if complete:
        completeness.check(count, users)
    else:
        with pytest.raises(IncompleteExport):
            completeness.check(count, users)


def test_the_error_is_one_line_with_the_three_numbers_and_what_to_do():
    with pytest.raises(IncompleteExport) as raised:
        completeness.check(UserCount(20_000, 20_001, 5), 19_001)
    line = str(raised.value)
    assert line.startswith("Graph counted 20000 users at the start and 20001 at the end, but the snapshot holds "
                           "19001 (tolerance 5): not published; latest.json is unchanged")
    assert "Run again" in line and "USER_COUNT_TOLERANCE" in line and "\n" not in line
    assert raised.value.exit_code == 8
    with pytest.raises(IncompleteExport, match="an unknown number users at the start and 20001 at the end"):
        completeness.check(UserCount(None, 20_001, 0), 20_000)


def test_with_neither_count_known_any_snapshot_passes_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        completeness.check(UserCount(None, None, 5), 0)
    assert "unknown at both ends" in caplog.text


# -- the record and its schema -----------------------------------------------------------------------------------


def test_the_count_section_reads_back_and_validates():
    clients = memory()
    summary = run_export(clients.settings, SLOT1, clients=clients)
    written = document(clients, summary.manifest)
    assert written["format"] == MANIFEST_FORMAT == "graph-users-export/4"
    assert written["count"] == {"before": USERS, "after": USERS, "tolerance": 5}
    assert list(MANIFEST_SCHEMA.iter_errors(written)) == []
    assert Manifest.parse(written).count == UserCount(USERS, USERS, 5)
    for before, after in ((None, USERS), (None, None)):
        unknown = {**written, "count": {"before": before, "after": after, "tolerance": 0}}
        assert list(MANIFEST_SCHEMA.iter_errors(unknown)) == [] and Manifest.parse(unknown).count.before is None
    for wrong in ({"before": -1, "after": 3, "tolerance": 5}, {"before": 3, "after": "3", "tolerance": 5},
                  {"before": 3, "after": 3}, "3"):
        bad = {**written, "count": wrong}
        assert list(MANIFEST_SCHEMA.iter_errors(bad)) != []
        with pytest.raises(RecordError):
            Manifest.parse(bad)
    assert list(MANIFEST_SCHEMA.iter_errors({**written, "count": {**written["count"], "extra": 1}})) != []
    # a format 3 manifest (before the counts) has its own schema and still reads, with no count
    older = {k: v for k, v in {**written, "format": "graph-users-export/3"}.items() if k != "count"}
    assert list(MANIFEST_3_SCHEMA.iter_errors(older)) == [] and list(MANIFEST_SCHEMA.iter_errors(older)) != []
    assert Manifest.parse(older).count is None
    assert list(MANIFEST_3_SCHEMA.iter_errors(written)) != []


# -- GraphUsers.count ------------------------------------------------------------------------------------------


def count_of(clients: MemoryClients) -> int | None:
    with clients.graph_users(RetryBudget(100)) as graph:
        return graph.count()


def test_the_count_is_asked_with_consistency_level_eventual_and_read_as_text():
    clients = memory()
    assert count_of(clients) == USERS
    asked = [r for r in clients.graph.requests if r.kind == "count"]
    assert len(asked) == 1 and asked[0].url == "https://graph.memory.invalid/v1.0/users/$count"
    # what the memory Graph (like Graph) answers without the header: the client never asks that way
    answer = clients.graph.answer("GET", asked[0].url, {"Authorization": "Bearer x"})
    assert answer.status == 401
    token = clients.tokens.get()
    refused_answer = clients.graph.answer("GET", asked[0].url, {"Authorization": f"Bearer {token}"})
    assert refused_answer.status == 400 and b"$count is not currently supported." in refused_answer.body


@pytest.mark.parametrize("body, expected", [(b"230", 230), (b"\xef\xbb\xbf230", 230), (b" 230\r\n", 230),
                                            (b"", None), (b"-3", None), (b"2.5e3", None), (b'{"count": 230}', None),
                                            (b"\xd9\xa3", None)])
def test_a_count_body_must_be_a_whole_number(body, expected, caplog):
    clients = memory()
    clients.graph.script(answering(body))
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        assert count_of(clients) == expected
    assert ("something other than a whole number" in caplog.text) is (expected is None)


@pytest.mark.parametrize("status, code", [(403, "Authorization_RequestDenied"), (400, "Request_BadRequest"),
                                          (404, "Request_ResourceNotFound")])
def test_a_refused_count_is_one_warning_and_unknown(status, code, caplog):
    clients = memory()
    clients.graph.script(refused(status, code, "No."))
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        assert count_of(clients) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"HTTP {status} ({code}: No.)" in warnings[0]
    assert "completeness check is skipped for this end" in warnings[0] and "req-1" in warnings[0]
    assert all(token not in caplog.text for token in clients.sign_in.issued)


def test_a_count_failing_after_retries_is_unknown_and_spends_the_runs_budget(caplog):
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_PAGE="2"))
    clients.graph.script(unavailable(None, when=count_request))
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        assert count_of(clients) is None
    assert "HTTP 503" in caplog.text and len([r for r in clients.graph.requests if r.kind == "count"]) == 3


def test_a_rejected_token_is_refreshed_once_for_the_count():
    clients = memory()
    stale = clients.tokens.get()
    clients.sign_in._tokens.discard(stale)  # revoked before MSAL expected
    assert count_of(clients) == USERS
    assert [r.authorized for r in clients.graph.requests if r.kind == "count"] == [False, True]


# -- run_export --------------------------------------------------------------------------------------------------


def test_a_page_lost_on_the_way_is_caught_and_nothing_is_published():
    clients = memory()
    good = run_export(clients.settings, SLOT0, clients=clients)
    published = {**{n: d for (_, n), d in clients.storage.contents().items() if n.startswith(slot_prefix(SLOT0))},
                 LATEST_BLOB: blob(clients, LATEST_BLOB)}
    clients.graph.script(emptied(users_page(2)))

    with pytest.raises(IncompleteExport) as raised:
        run_export(clients.settings, SLOT1, clients=clients)

    assert str(raised.value).startswith(f"Graph counted {USERS} users at the start and {USERS} at the end, but the "
                                        f"snapshot holds {USERS - 50} (tolerance 5)")
    assert {n for n in names(clients) if n.startswith(slot_prefix(SLOT1))} == set()  # no file, no manifest
    assert slot_pointer_name(SLOT1) not in names(clients)
    assert naming.checkpoint_blob_name(SLOT1) not in names(clients)  # the next run starts over
    assert naming.ids_blob_name(SLOT1) not in names(clients)
    assert {**{n: d for (_, n), d in clients.storage.contents().items() if n.startswith(slot_prefix(SLOT0))},
            LATEST_BLOB: blob(clients, LATEST_BLOB)} == published
    assert document(clients, LATEST_BLOB)["manifest"] == good.manifest

    clients.graph.faults.clear()
    again = run_export(clients.settings, SLOT1, clients=clients)
    assert again.status == "succeeded" and again.users == USERS
    assert document(clients, again.manifest)["resumed"] is False
    assert document(clients, LATEST_BLOB)["manifest"] == again.manifest


def test_a_drifted_delta_snapshot_is_caught_and_the_delta_state_stays():
    clients = memory(settings(EXPORT_MODE="delta"))
    first = run_export(clients.settings, SLOT1, clients=clients)
    state = blob(clients, DELTA_STATE_BLOB)
    for user in make_users(60, start=USERS):
        clients.graph.directory.add(user)
    clients.graph.script(emptied(lambda r: r.kind == "delta" and r.page == 1 and "latest" not in r.url))

    with pytest.raises(IncompleteExport, match=f"{USERS + 60} at the end, but the snapshot holds {USERS + 10} "):
        run_export(clients.settings, SLOT2, clients=clients)

    assert blob(clients, DELTA_STATE_BLOB) == state  # the next slot replays the same changes
    assert document(clients, LATEST_BLOB)["manifest"] == first.manifest
    assert {n for n in names(clients) if n.startswith(slot_prefix(SLOT2))} == set()
    clients.graph.faults.clear()
    again = run_export(clients.settings, SLOT2, clients=clients)
    manifest = document(clients, again.manifest)
    assert (manifest["mode"], again.users, manifest["delta"]["added"]) == ("delta", USERS + 60, 60)
    assert manifest["count"] == {"before": USERS + 60, "after": USERS + 60, "tolerance": 5}


@pytest.mark.parametrize("fault", [refused(403, "Authorization_RequestDenied", "Insufficient privileges."),
                                   refused(400, "Request_BadRequest", "$count is not currently supported."),
                                   unavailable(None, when=count_request)], ids=["403", "400", "503"])
def test_a_refused_count_is_recorded_as_unknown_and_the_export_is_published(fault, caplog):
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_PAGE="1"))
    clients.graph.script(fault)
    with caplog.at_level(logging.WARNING, logger="graph_export"):
        summary = run_export(clients.settings, SLOT1, clients=clients)
    assert summary.status == "succeeded" and summary.users == USERS
    assert document(clients, summary.manifest)["count"] == {"before": None, "after": None, "tolerance": 5}
    assert "completeness check is skipped" in caplog.text and "unknown at both ends" in caplog.text


def test_only_the_end_graph_refused_is_unknown_and_the_other_still_checks():
    clients = memory()
    clients.graph.script(Fault(refused(403, "Authorization_RequestDenied", "No.").answer,
                               lambda r: r.kind == "count" and len(clients.graph.requests) > 2, None),
                         emptied(users_page(3)))
    with pytest.raises(IncompleteExport, match=f"counted {USERS} users at the start and an unknown number at the end"):
        run_export(clients.settings, SLOT1, clients=clients)


def test_users_added_during_the_run_within_the_counts_are_published():
    clients = memory()
    directory = clients.graph.directory

    def add_three(request: GraphRequest, normal: Answer) -> Answer:
        for user in make_users(3, start=10_000):
            directory.add(user)  # after the last page was made: the snapshot has 230, the end count 233
        return normal
    clients.graph.script(Fault(add_three, users_page(5), 1))
    summary = run_export(clients.settings, SLOT1, clients=clients)
    assert summary.users == USERS
    assert document(clients, summary.manifest)["count"] == {"before": USERS, "after": USERS + 3, "tolerance": 5}
    assert (summary.count_before, summary.count_after) == (USERS, USERS + 3)  # the CLI's summary and telemetry
    assert summary.fields()["export_count_after"] == USERS + 3
    skipped = run_export(clients.settings, SLOT1, clients=clients)
    assert (skipped.status, skipped.count_before, skipped.count_after) == ("skipped", USERS, USERS + 3)


def test_a_count_that_lags_beyond_the_tolerance_is_caught_and_zero_tolerance_is_strict():
    clients = memory(settings(USER_COUNT_TOLERANCE="0"))
    clients.graph.script(answering(str(USERS + 1).encode()))  # Graph's count one ahead of its listing
    with pytest.raises(IncompleteExport, match=r"holds 230 \(tolerance 0\)"):
        run_export(clients.settings, SLOT1, clients=clients)
    clients = memory(settings(USER_COUNT_TOLERANCE="1"))
    clients.graph.script(answering(str(USERS + 1).encode()))
    assert run_export(clients.settings, SLOT1, clients=clients).users == USERS


def test_a_resumed_run_keeps_the_count_its_checkpoint_saved():
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_PAGE="0"))
    clients.graph.script(unavailable(None, when=users_page(4)))
    with pytest.raises(GraphError):
        run_export(clients.settings, SLOT1, clients=clients)
    assert document(clients, naming.checkpoint_blob_name(SLOT1))["count_before"] == USERS
    clients.graph.faults.clear()
    for user in make_users(2, start=10_000):
        clients.graph.directory.add(user)  # after the killed run began: on the last page, which is still to come

    resumed = run_export(clients.settings, SLOT1, clients=clients)

    manifest = document(clients, resumed.manifest)
    assert manifest["resumed"] is True and resumed.users == USERS + 2
    assert manifest["count"] == {"before": USERS, "after": USERS + 2, "tolerance": 5}  # not the resumed run's own


def test_a_checkpoint_of_the_earlier_format_is_not_resumed():
    clients = memory(settings(GRAPH_MAX_RETRIES_PER_PAGE="0"))
    clients.graph.script(unavailable(None, when=users_page(4)))
    with pytest.raises(GraphError):
        run_export(clients.settings, SLOT1, clients=clients)
    name = naming.checkpoint_blob_name(SLOT1)
    saved = {k: v for k, v in document(clients, name).items() if k != "count_before"}
    saved["format"] = "graph-users-export-checkpoint/3"
    clients.state_container().get_blob_client(name).upload_blob(json.dumps(saved).encode(), overwrite=True)
    clients.graph.faults.clear()
    again = run_export(clients.settings, SLOT1, clients=clients)
    assert document(clients, again.manifest)["resumed"] is False and again.users == USERS


def test_the_checkpoint_is_discarded_after_the_last_one_the_writers_were_still_saving(monkeypatch):
    """Checkpoints are saved on the writers' threads, behind the pages: one still on its way when the
    check fails must not land after the discard (the next run would resume past the lost page)."""
    save = checkpoint.save

    def slow_save(*args: Any) -> None:
        time.sleep(0.05)
        save(*args)
    monkeypatch.setattr(checkpoint, "save", slow_save)
    clients = memory()
    clients.graph.script(emptied(users_page(2)))
    with pytest.raises(IncompleteExport):
        run_export(clients.settings, SLOT1, clients=clients)
    assert naming.checkpoint_blob_name(SLOT1) not in names(clients)
    assert naming.ids_blob_name(SLOT1) not in names(clients)

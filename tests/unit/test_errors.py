"""The shared helpers of errors.py: service text cut at a word boundary, and why a connection failed."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from azure.core.exceptions import ServiceRequestError
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, SSLError

from graph_export.errors import causes, certificate_failure, first_line, refused_or_unresolved, request_origin


def test_first_line_keeps_short_text_and_only_its_first_line():
    assert first_line("AADSTS90002: Tenant 'x' not found.\r\nTrace ID: 1") == "AADSTS90002: Tenant 'x' not found."
    assert first_line("  ") == first_line(None) == "no detail"


@pytest.mark.parametrize("text, limit, expected", [
    ("The resource principal named https://graph.microsoft.us was not found", 40,
     "The resource principal named\u2026"),
    ("one two three", 12, "one two\u2026"),
    ("one two, three", 12, "one two\u2026"),          # no dangling comma before the ellipsis
    ("one two three", 8, "one two\u2026"),            # the cut falls exactly on a space
    ("averyveryverylongword and more", 10, "averyvery\u2026"),  # one long word: cut, still bounded
])
def test_first_line_cuts_long_text_at_a_word_boundary_with_an_ellipsis(text, limit, expected):
    assert first_line(text, limit) == expected and len(expected) <= limit


def wrapped(error: BaseException) -> ServiceRequestError:
    """What azure-core raises: ServiceRequestError -> requests -> urllib3 -> the socket's error."""
    try:
        try:
            try:
                raise error
            except BaseException as inner:
                raise MaxRetryError(None, "/", inner) from None
        except MaxRetryError as retries:
            request = requests.Request("GET", "https://acct.blob.core.windows.net/c?sig=secret").prepare()
            raise requests.exceptions.ConnectionError(retries, request=request) from None
    except requests.exceptions.ConnectionError as outer:
        return ServiceRequestError(outer, error=outer)


def test_the_cause_of_a_failed_connection_is_found_through_every_wrapper():
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    verify.verify_message = "self-signed certificate in certificate chain"
    untrusted = wrapped(SSLError(verify))
    assert certificate_failure(untrusted) == "self-signed certificate in certificate chain"
    assert refused_or_unresolved(untrusted) is None
    assert request_origin(untrusted) == "https://acct.blob.core.windows.net"  # never the query (a SAS)

    refused = NewConnectionError(None, "Failed to establish a new connection")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert refused_or_unresolved(wrapped(refused)) == "the connection was refused"
    unknown = NameResolutionError("export.invalid", None, socket.gaierror(-2, "Name or service not known"))
    assert refused_or_unresolved(wrapped(unknown)) == "its name does not resolve"
    assert certificate_failure(wrapped(unknown)) is None


def test_causes_ends_on_a_loop():
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert list(causes(first)) == [first, second]


def test_the_graph_and_sign_in_failures_are_in_the_one_hierarchy():
    from graph_export import errors

    for name in ("PageCut", "PageTooLarge", "PageLinkRejected"):
        assert issubclass(getattr(errors, name), errors.GraphError)
    assert issubclass(errors.CredentialRejectedError, errors.AuthError)
    too_large = errors.PageTooLarge(3, "Content-Length 9", "rid", 2 * 1024 * 1024)
    assert str(too_large).startswith("Graph page 3 is larger than the 2 MiB") and "(request-id rid)" in str(too_large)
    cut = errors.PageCut(4, "ReadTimeoutError")
    assert cut.reason == "ReadTimeoutError" and "page 4 was arriving (ReadTimeoutError), twice" in str(cut)

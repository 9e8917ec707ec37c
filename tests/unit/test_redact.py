"""``graph_export.redact``: what the libraries log is printed with every credential and token replaced.

The lines here are the ones the libraries print (urllib3, azure-core, MSAL), with made-up values.
"""

from __future__ import annotations

import io
import logging

import pytest

from graph_export import redact
from graph_export.redact import REDACTED, RedactingFilter, install, redact_record, scrub_exception

SIG = "4JBYgkdmCDb1SJHhzaMzSgnfw1IdkbRBb0sXNH%2Bn7O0%3D"
TOKEN = "U0JEMQIAa5ESIQAAAABB2sPfBv-LVwAAAAAAAAAA_so5cPF"
KEY = "PRIVATE " + "KEY"  # spelled apart: no private-key header literal in the source
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize("line, secret", [
    # urllib3's DEBUG request line: a SAS in the query, then a delta and a skip token.
    (f'http://127.0.0.1:1 "GET /devstoreaccount1/c?restype=container&se=2026-12-02T02%3A52%3A08Z&sp=rwdlac'
     f'&sv=2026-10-06&sig={SIG} HTTP/1.1" 404 None', SIG),
    (f'https://127.0.0.1:2 "GET /v1.0/users/delta?$deltatoken={TOKEN} HTTP/1.1" 200 11273', TOKEN),
    (f'"GET /v1.0/users?$select=id,displayName&$top=999&$skiptoken={TOKEN} HTTP/1.1" 200 None', TOKEN),
    (f"/v1.0/users/delta?deltatoken={TOKEN}&skiptoken=x", TOKEN),
    # urllib3's WARNING when it retries, and its DEBUG retry line.
    (f"Retrying (Retry(total=0)) after connection broken by 'RemoteDisconnected()': /v1.0/users/delta?"
     f"$deltatoken={TOKEN}", TOKEN),
    (f"Incremented Retry for (url='/v1.0/users/delta?$deltatoken={TOKEN}'): Retry(total=0)", TOKEN),
    # percent-encoded, as inside another URL
    (f"next=https%3A%2F%2Fgraph%2Fv1.0%2Fusers%2Fdelta%3F%24deltatoken%3D{TOKEN}%26x%3D1", TOKEN),
    # connection strings
    (f"BlobEndpoint=https://st.blob.core.windows.net;SharedAccessSignature=sv=2020-08-04&ss=b&sig={SIG}", SIG),
    ("DefaultEndpointsProtocol=https;AccountName=st;AccountKey=Eby8vdM02xNOcqFlqUw+JPLlmEtl/K1SZFPT==;", "Eby8vd"),
    # a token request's form body, and an authorization code
    ("client_id=app&client_secret=s3cr3t~value.x&grant_type=client_credentials", "s3cr3t"),
    (f"client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion={JWT}", JWT),
    ("grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=opaque-assertion-value", "opaque-assertion"),
    ("https://app/callback?code=0.AAAA-authorization-code&state=1", "0.AAAA"),
    ("https://app/?access_token=at-value&refresh_token=rt-value", "at-value"),
    ("https://app/?access_token=at-value&refresh_token=rt-value", "rt-value"),
    # headers, JSON, bearer tokens, JWTs, keys, passwords in URLs
    ("    'Authorization': 'Bearer opaque-token-of-some-length'", "opaque-token"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("x-ms-copy-source-authorization: Bearer opaque-token-of-some-length", "opaque-token"),
    ("x-ms-encryption-key: c2VjcmV0LWtleS1ieXRlcw==", "c2VjcmV0LWtleS1ieXRlcw"),
    ("sent with Bearer abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"),
    ('{"access_token": "at-value", "token_type": "Bearer", "expires_in": 3599}', "at-value"),
    ("{'client_secret': 'secret-value', 'client_id': 'app'}", "secret-value"),
    (f"token {JWT} expired", "eyJ"),
    (f"-----BEGIN RSA {KEY}-----\nMIIEowIBAAKCAQEA\n-----END RSA {KEY}-----", KEY),
    (f"-----BEGIN ENCRYPTED {KEY}-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTAp (cut)", "MIIFHDBOBgkq"),
    ("Request URL: 'https://admin:pw-value@westeurope-5.in.applicationinsights.azure.com/v2.1/track'", "pw-value"),
    ("Request URL: 'https://admin:pw-value@westeurope-5.in.applicationinsights.azure.com/v2.1/track'", "admin"),
])
def test_each_credential_is_redacted(line, secret):
    assert secret in line
    assert secret not in redact.redact(line)
    assert REDACTED in redact.redact(line)


@pytest.mark.parametrize("line", [
    # what stays readable: the rest of a query, the header azure-core already redacted, the challenge,
    # error codes, e-mail addresses in paths, a deltaLink for "now", prose
    "GET /v1.0/users?$select=id,displayName&$top=999 HTTP/1.1",
    "    'Authorization': 'REDACTED'",
    'WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"',
    "Bearer token authentication is not permitted for non-TLS protected (non-https) URLs.",
    "Graph answered 401 InvalidAuthenticationToken (error code=401); export_exit_code=3",
    '{"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}',
    "https://graph.microsoft.com/v1.0/users/someone@contoso.com",
    "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "https://st.blob.core.windows.net/c/users/latest.json?se=REDACTED&sig=REDACTED",
])
def test_what_is_no_credential_stays_as_it_is(line):
    assert redact.redact(line) == line


def test_redacting_twice_changes_nothing_more():
    line = f"GET /c?sig={SIG} Authorization: Bearer {JWT} https://a:b@h/ AccountKey=k;"
    once = redact.redact(line)
    assert redact.redact(once) == once


def record(msg, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_a_record_is_formatted_first_then_redacted_and_stored_back():
    # urllib3 passes the URL as an argument: only the formatted message holds the whole query.
    made = record('%s://%s:%s "%s %s %s" %s %s', "https", "127.0.0.1", 443, "GET",
                  f"/v1.0/users/delta?$deltatoken={TOKEN}", "HTTP/1.1", 200, 11273)
    redact_record(made)
    assert made.args == () and TOKEN not in made.msg and "$deltatoken=REDACTED" in made.msg
    assert made.getMessage() == made.msg


def test_a_record_whose_arguments_do_not_fit_shows_the_message_alone():
    made = record("two %s %s", f"?sig={SIG}")
    redact_record(made)
    assert SIG not in made.getMessage() and "log arguments not shown" in made.getMessage()


def test_traceback_stack_and_extra_fields_are_redacted():
    try:
        raise ValueError(f"Max retries exceeded with url: /v1.0/users/delta?$deltatoken={TOKEN}")
    except ValueError:
        import sys

        made = record("failed", exc_info=sys.exc_info(), export_url=f"https://st/c/b?sig={SIG}", export_users=3)
    made.stack_info = f"Stack (most recent call last):\n  url = '/c?sig={SIG}'"
    redact_record(made)
    text = logging.Formatter().format(made)
    assert "Traceback" in text and "ValueError" in text and TOKEN not in text and SIG not in text
    assert made.export_url == "https://st/c/b?sig=REDACTED" and made.export_users == 3


def test_install_puts_one_filter_on_the_logger_and_each_handler_and_every_handler_prints_redacted(monkeypatch):
    logger = logging.getLogger("test_redact.install")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", False)
    first, second = io.StringIO(), io.StringIO()
    logger.addHandler(logging.StreamHandler(first))
    logger.addHandler(logging.StreamHandler(second))
    install(logger)
    install(logger)
    for owner in (logger, *logger.handlers):
        assert sum(isinstance(f, RedactingFilter) for f in owner.filters) == 1
    child = logging.getLogger("test_redact.install.child")  # a library's logger below it: the handlers' filter
    child.warning("Retrying after connection broken: %s", f"/v1.0/users/delta?$deltatoken={TOKEN}")
    logger.removeFilter(logger.filters[0])
    for stream in (first, second):
        assert TOKEN not in stream.getvalue() and "$deltatoken=REDACTED" in stream.getvalue()


def test_an_exception_and_what_it_chains_to_are_scrubbed_in_place():
    try:
        try:
            raise ConnectionError(f"HTTPSConnectionPool: Max retries exceeded with url: /c?sig={SIG}")
        except ConnectionError as inner:
            raise RuntimeError(f"wrapped: /v1.0/users/delta?$deltatoken={TOKEN}") from inner
    except RuntimeError as outer:
        error = outer
    assert scrub_exception(error) is error
    import traceback

    text = "".join(traceback.format_exception(error))
    assert SIG not in text and TOKEN not in text and "sig=REDACTED" in text and "$deltatoken=REDACTED" in text

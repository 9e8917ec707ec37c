import json

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError

from graph_export.credentials import Secret
from graph_export.errors import AuthError, CredentialRejectedError
from graph_export.token import (
    CONNECT_TIMEOUT_S,
    GraphTokenProvider,
    GraphTokens,
    describe_sign_in_error,
    make_sign_in_session,
)

CLIENT = "11111111-2222-3333-4444-555555555555"


def entra_error(code, error="invalid_client"):
    return {"error": error, "error_description": f"AADSTS{code}: something.\r\nTrace ID: x",
            "error_codes": [code], "correlation_id": "corr-1"}


def test_wrong_secret_explains_secret_value_versus_id():
    message = describe_sign_in_error(entra_error(7000215), CLIENT)
    assert "AADSTS7000215" in message and "value" in message and "secret's ID" in message
    assert CLIENT in message and "corr-1" in message and "\n" not in message


def test_expired_secret_says_create_a_new_one():
    assert "expired" in describe_sign_in_error(entra_error(7000222), CLIENT)


def test_unknown_app_points_at_client_and_tenant_ids():
    message = describe_sign_in_error(entra_error(700016, "unauthorized_client"), CLIENT)
    assert "CLIENT_ID" in message and "TENANT_ID" in message


def test_unknown_code_falls_back_to_entras_first_line():
    message = describe_sign_in_error(entra_error(12345, "weird"), CLIENT)
    assert "AADSTS12345: something." in message and "Trace ID" not in message


# --- every sign-in failure is one AuthError line naming TENANT_ID or AUTHORITY_HOST ---------------


HOST = "https://login.example.test"
TENANT = "9f4c2b1e-0000-4000-8000-000000000001"
AUTHORITY = f"{HOST}/{TENANT}"
SECRET = "s3cr3t~value.for-tests-only"
DISCOVERY = {
    "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
    "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
    "issuer": f"{AUTHORITY}/v2.0",
}


def answer(url, status, body, content_type="application/json"):
    response = requests.Response()
    response.status_code, response.url = status, url
    response.headers["Content-Type"] = content_type
    response._content = (body if isinstance(body, str) else json.dumps(body)).encode()
    return response


class FakeSignIn:
    """MSAL's http_client: scripted answers (or exceptions) for discovery and the token request."""

    def __init__(self, discovery=(200, DISCOVERY), token=(200, {"access_token": "tok", "token_type": "Bearer",
                                                                "expires_in": 3600})):
        self.discovery, self.token = discovery, token
        self.timeouts = []

    def _reply(self, url, scripted, kwargs):
        self.timeouts.append(kwargs.get("timeout"))
        if isinstance(scripted, BaseException):
            raise scripted
        status, body = scripted
        return answer(url, status, body, "application/json" if not isinstance(body, str) else "text/html")

    def get(self, url, **kwargs):
        return self._reply(url, self.discovery, kwargs)

    def post(self, url, **kwargs):
        return self._reply(url, self.token, kwargs)


def provider(http):
    return GraphTokenProvider(authority=AUTHORITY, client_id=CLIENT, scope="https://graph.microsoft.com/.default",
                              credential=Secret(SECRET), timeout_s=42, http_client=http)


def sign_in_error(http) -> str:
    with pytest.raises(AuthError) as raised:
        provider(http).acquire()
    message = str(raised.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_every_sign_in_request_has_a_connect_and_a_read_timeout():
    http = FakeSignIn()
    assert provider(http).acquire() == "tok"
    assert http.timeouts == [(CONNECT_TIMEOUT_S, 42), (CONNECT_TIMEOUT_S, 42)]


def test_an_unknown_tenant_names_tenant_id():
    http = FakeSignIn(discovery=(400, {"error": "invalid_tenant", "error_codes": [90002],
                                       "error_description": f"AADSTS90002: Tenant '{TENANT}' not found."}))
    message = sign_in_error(http)
    assert "AADSTS90002" in message and "TENANT_ID" in message and TENANT in message


@pytest.mark.parametrize("status, body", [
    (404, "<html>Not Found</html>"),
    (401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}}),
    (200, "<html>Welcome</html>"),
    (200, {"issuer": "https://example.com"}),
    (200, ["a", "list"]),
])
def test_a_host_that_is_not_entra_names_authority_host(status, body):
    message = sign_in_error(FakeSignIn(discovery=(status, body)))
    assert message.startswith(f"AUTHORITY_HOST {HOST} is not an Entra ID sign-in host")
    assert f"HTTP {status}" in message and "/v2.0/.well-known/openid-configuration" in message


def test_a_sign_in_host_that_keeps_failing_says_run_again_later():
    message = sign_in_error(FakeSignIn(discovery=(503, {"error": "temporarily_unavailable"})))
    assert "AUTHORITY_HOST" in message and "kept failing" in message and "run again later" in message


def test_a_token_answer_that_is_not_entra_names_authority_host_and_the_network_path():
    message = sign_in_error(FakeSignIn(token=(403, "<html>Blocked by policy</html>")))
    assert "AUTHORITY_HOST" in message and "HTTP 403" in message and "network path" in message
    assert "Blocked" not in message


@pytest.mark.parametrize("error, why", [
    (requests.exceptions.ConnectionError("refused"), "refused"),
    (requests.exceptions.ConnectTimeout("slow"), f"no connection within {CONNECT_TIMEOUT_S:g} s"),
    (requests.exceptions.ReadTimeout("slow"), "no answer within 42 s (HTTP_TIMEOUT_SECONDS)"),
    (requests.exceptions.SSLError("bad certificate"), "TLS"),
    (requests.exceptions.ConnectionError(MaxRetryError(None, "/", NameResolutionError("login.example.test", None,
                                                                                       OSError("no such name")))),
     "does not resolve"),
])
def test_an_unreachable_sign_in_host_names_authority_host(error, why):
    message = sign_in_error(FakeSignIn(discovery=error))
    assert message.startswith(f"Could not reach the sign-in service at AUTHORITY_HOST {HOST}")
    assert why in message


def test_the_sign_in_session_retries_throttling_and_cut_answers_but_not_connecting():
    retry = make_sign_in_session(0.5).get_adapter("https://login.microsoftonline.com").max_retries
    assert retry.connect == 0 and retry.read >= 1 and retry.status >= 1
    assert {429, 500, 502, 503, 504} <= set(retry.status_forcelist) and retry.respect_retry_after_header
    assert {"GET", "POST"} <= set(retry.allowed_methods) and retry.backoff_factor == 0.5


# --- GraphTokens: the vault is read again once when Entra rejects the secret ------------------------


class FakeProvider:
    """Stands in for Entra: accepts one secret value, rejects any other as AADSTS7000215."""

    def __init__(self, secret: Secret, accepted: str) -> None:
        self.secret, self.accepted = secret, accepted

    def acquire(self) -> str:
        if self.secret.reveal() != self.accepted:
            raise CredentialRejectedError("AADSTS7000215 the secret is wrong")
        return f"token-for-{self.accepted}"

    def refresh(self, rejected: str) -> str:
        return self.acquire()


class Vault:
    def __init__(self, *values: str) -> None:
        self.values, self.reads = list(values), 0

    def read(self) -> Secret:
        self.reads += 1
        return Secret(self.values[min(self.reads, len(self.values)) - 1])


def test_a_rotated_secret_is_read_again_once_and_used():
    vault = Vault("old", "new")
    tokens = GraphTokens(vault.read, lambda credential: FakeProvider(credential, accepted="new"))
    assert tokens.get() == "token-for-new" and vault.reads == 2
    assert tokens.get() == "token-for-new" and vault.reads == 2  # kept for the warm instance


def test_a_rejected_secret_the_vault_still_holds_fails_without_a_second_sign_in():
    vault = Vault("old")
    signed_in = []
    tokens = GraphTokens(vault.read, lambda credential: signed_in.append(1) or FakeProvider(credential, accepted="new"))
    with pytest.raises(CredentialRejectedError):
        tokens.get()
    assert vault.reads == 2 and len(signed_in) == 1


def test_any_other_sign_in_failure_forgets_the_secret_so_the_next_run_reads_it_again():
    vault = Vault("s")
    attempts = []

    def sign_in(credential):
        attempts.append(1)
        if len(attempts) == 1:
            raise AuthError("the tenant was not found")
        return FakeProvider(credential, accepted="s")

    tokens = GraphTokens(vault.read, sign_in)
    with pytest.raises(AuthError, match="tenant"):
        tokens.get()
    assert tokens.get() == "token-for-s" and vault.reads == 2


def test_a_credential_given_up_on_is_named_to_read_after_so_a_shared_one_is_read_again_only_once():
    vault, asked = Vault("old", "new"), []

    def read_after(forgotten):
        asked.append(forgotten.reveal())
        return vault.read()

    tokens = GraphTokens(vault.read, lambda credential: FakeProvider(credential, accepted="new"), read_after=read_after)
    assert tokens.get() == "token-for-new"
    assert asked == ["old"] and vault.reads == 2


def test_when_entra_knows_no_newest_version_an_older_one_still_valid_signs_in_and_warns(caplog):
    vault = Vault("renewed")
    tokens = GraphTokens(vault.read, lambda credential: FakeProvider(credential, accepted="previous"),
                         read_older=lambda newest: [Secret("older"), Secret("previous")])
    assert tokens.get() == "token-for-previous"
    assert tokens.get() == "token-for-previous" and vault.reads == 2  # kept for the warm instance
    assert [r.getMessage()[:40] for r in caplog.records if r.levelname == "WARNING"] == [
        "Credential expiry: the newest version of"]


def test_when_no_version_is_known_the_first_rejection_is_what_fails():
    tokens = GraphTokens(Vault("renewed").read, lambda credential: FakeProvider(credential, accepted="none of them"),
                         read_older=lambda newest: [Secret("older")])
    with pytest.raises(CredentialRejectedError, match="AADSTS7000215"):
        tokens.get()


# --- an audience Entra does not know, and Entra's own text -----------------------------------------


UNKNOWN_AUDIENCE = {
    "error": "invalid_resource", "error_codes": [500011], "correlation_id": "corr-9",
    "error_description": "AADSTS500011: The resource principal named https://graph.microsoft.us was not found in "
                         "the tenant named contoso. This can happen if the application has not been installed by the "
                         "administrator of the tenant or consented to by any user in the tenant. You might have sent "
                         "your authentication request to the wrong tenant.\r\nTrace ID: t\r\nCorrelation ID: corr-9",
}


def test_an_audience_entra_does_not_know_names_graph_endpoint():
    message = describe_sign_in_error(UNKNOWN_AUDIENCE, CLIENT, "https://graph.microsoft.us/.default")
    assert "AADSTS500011 (invalid_resource)" in message and "GRAPH_ENDPOINT" in message
    assert "no resource named https://graph.microsoft.us" in message and "https://graph.microsoft.com" in message
    assert "corr-9" in message and "\n" not in message and "Trace ID" not in message


def test_entras_own_text_is_cut_at_a_word_boundary():
    long = {**UNKNOWN_AUDIENCE, "error_codes": [12345], "error_description": "AADSTS12345: " + "word " * 100}
    message = describe_sign_in_error(long, CLIENT)
    quoted = message.split(": ", 1)[1].rsplit(" (correlation", 1)[0]
    assert quoted.endswith("word\u2026") and len(quoted) <= 300
    assert all(w in ("AADSTS12345:", "word", "word\u2026") for w in quoted.split())

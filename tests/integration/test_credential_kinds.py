"""Each way the app proves itself to Entra, through the real pipeline against the sandbox.

The sandbox's Entra verifies what it is given (the certificate assertion's signature against the
app's registered certificates, its audience, issuer, subject and times; the federated assertion's
issuer, subject and audience against the app's federated credentials), so a token here means the
assertion was right, not merely present.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest

from graph_export import AuthError, ConfigError, load_settings, run_export
from graph_export.clients import app_clients

from .helpers import blob_names, read_export

SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
LATER = datetime(2026, 3, 8, 2, tzinfo=timezone.utc)


def use(monkeypatch, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    app_clients.cache_clear()


def exported_everyone(env: dict, sandbox, summary) -> bool:
    users, sha = read_export(env, summary.blob)
    return sha == summary.sha256 and users == list(sandbox.expected_users(load_settings().user_properties))


@pytest.mark.parametrize("form", ["pkcs12", "pem"])
def test_a_certificate_in_key_vault_signs_in(export_env, sandbox, monkeypatch, form, caplog):
    caplog.set_level(logging.DEBUG)
    use(monkeypatch, sandbox.use_certificate(form=form))
    summary = run_export(load_settings(), SLOT)
    assert exported_everyone(export_env, sandbox, summary)
    assert sandbox.entra.grants == ["certificate"]
    key_pem, _ = sandbox.certificate("graph-client-certificate")
    body = b"".join(key_pem.splitlines()[1:-1]).decode()
    assert body[:40] not in caplog.text and "PRIVATE KEY" not in caplog.text and "eyJ" not in caplog.text


def test_x5c_goes_along_only_when_asked_for(export_env, sandbox, monkeypatch):
    use(monkeypatch, {**sandbox.use_certificate(), "CLIENT_CERTIFICATE_SEND_X5C": "true"})
    assert run_export(load_settings(), SLOT).users == sandbox.users
    assert sandbox.entra.grants == ["certificate"]


def test_a_certificate_the_app_registration_does_not_know_is_one_line_naming_the_fix(export_env, sandbox,
                                                                                      monkeypatch):
    use(monkeypatch, sandbox.use_certificate(register=False))
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "AADSTS700027" in message and "az ad app credential reset" in message and "\n" not in message
    assert blob_names(export_env) == []


def test_a_rotated_certificate_is_picked_up_between_two_warm_invocations(export_env, sandbox, monkeypatch, caplog):
    use(monkeypatch, sandbox.use_certificate())
    settings = load_settings()
    sandbox.token_lifetime_s = 1  # so that the second invocation must sign in again
    run_export(settings, SLOT)
    time.sleep(1.1)
    sandbox.token_lifetime_s = 3600
    sandbox.rotate_certificate()  # a new version in the vault, the old one unregistered: the warm one is stale
    before = len(sandbox.entra.sign_ins)
    caplog.set_level(logging.WARNING)
    summary = run_export(settings, LATER)
    assert exported_everyone(export_env, sandbox, summary)
    assert "Entra rejected the cached certificate" in caplog.text
    assert [s.code for s in sandbox.entra.sign_ins[before:]] == [700027, None]


def test_federated_signs_in_with_the_user_assigned_identity_and_needs_no_vault(export_env, sandbox, monkeypatch,
                                                                              caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("KEY_VAULT_URL")
    use(monkeypatch, sandbox.use_federated())
    summary = run_export(load_settings(), SLOT)
    assert exported_everyone(export_env, sandbox, summary)
    assert sandbox.entra.grants == ["federated"] and summary.credential_expires is None
    assert ("user", "api://AzureADTokenExchange") in sandbox.identity.issued_to
    assert "eyJ" not in caplog.text


def test_federated_without_a_matching_federated_credential_says_what_to_trust(export_env, sandbox, monkeypatch):
    use(monkeypatch, sandbox.use_federated(register=False))
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert "AADSTS70021" in message and "\n" not in message
    assert f"subject {sandbox.user_identity_principal_id}" in message
    assert f"issuer {sandbox.federation_issuer}" in message and "audience api://AzureADTokenExchange" in message
    assert "az ad app federated-credential create --id" in message and "a few minutes" in message
    assert blob_names(export_env) == []


def test_federated_needs_the_user_assigned_identity_named(export_env, sandbox, monkeypatch):
    monkeypatch.setenv("CLIENT_CREDENTIAL", "federated")
    with pytest.raises(ConfigError, match="MANAGED_IDENTITY_CLIENT_ID is missing"):
        load_settings()


def test_a_secret_near_its_expiry_warns_once_and_the_summary_says_when(export_env, sandbox, caplog):
    sandbox.set_secret_expiry(days=6.5)
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Credential expiry:")]
    assert len(warnings) == 1 and "the client secret 'graph-client-secret' in Key Vault" in warnings[0]
    assert "(in 6 days)" in warnings[0] and summary.credential_expires is not None
    assert sandbox.client_secret not in caplog.text


def test_an_expired_secret_fails_before_entra_is_asked(export_env, sandbox):
    sandbox.set_secret_expiry(days=-1)
    with pytest.raises(AuthError, match="expired on .*nothing was published"):
        run_export(load_settings(), SLOT)
    assert sandbox.entra.sign_ins == [] and blob_names(export_env) == []


def test_a_certificate_near_its_expiry_warns(export_env, sandbox, monkeypatch, caplog):
    use(monkeypatch, sandbox.use_certificate(days=3))
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), SLOT)
    assert "Credential expiry: the certificate 'graph-client-certificate' in Key Vault" in caplog.text
    assert summary.credential_expires is not None


def test_a_disabled_secret_says_so(export_env, sandbox):
    sandbox.vault.update_secret("graph-client-secret", enabled=False)
    with pytest.raises(AuthError, match="is disabled: enable it"):
        run_export(load_settings(), SLOT)


def test_a_renewed_certificate_not_yet_registered_falls_back_to_the_previous_version_and_warns(
        export_env, sandbox, monkeypatch, caplog):
    use(monkeypatch, sandbox.use_certificate())
    run_export(load_settings(), SLOT)
    key_pem, cert_pem = sandbox.new_certificate()
    sandbox.vault.import_certificate("graph-client-certificate", key_pem, cert_pem)  # renewed, not registered
    app_clients.cache_clear()  # a cold start reads the vault's newest version
    caplog.set_level(logging.WARNING)
    summary = run_export(load_settings(), LATER)
    assert exported_everyone(export_env, sandbox, summary)
    warning = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Credential expiry:"))
    assert "newest version of the certificate 'graph-client-certificate'" in warning
    assert "is not registered on the app registration" in warning and "--keyvault" in warning
    assert [s.code for s in sandbox.entra.sign_ins][-2:] == [700027, None]


def test_a_rejected_certificate_with_no_older_version_fails_with_the_first_rejection(export_env, sandbox,
                                                                                    monkeypatch):
    use(monkeypatch, sandbox.use_certificate())
    sandbox.entra.remove_certificates()
    with pytest.raises(AuthError, match="AADSTS700027"):
        run_export(load_settings(), SLOT)


def pem_secret(sandbox, name: str, *parts: bytes) -> dict[str, str]:
    """A PEM certificate secret as Key Vault can hold one (an imported PEM keeps its order), and its settings."""
    sandbox.vault.set_secret(name, b"".join(parts).decode(), content_type="application/x-pem-file")
    return {"CLIENT_CREDENTIAL": "certificate", "CLIENT_CERTIFICATE_NAME": name}


def test_a_pem_with_another_certificate_first_signs_in_with_the_keys_own(export_env, sandbox, monkeypatch):
    key_pem, cert_pem = sandbox.new_certificate()
    _, issuer_pem = sandbox.new_certificate(common_name="an issuing CA, listed first")
    sandbox.entra.add_certificate(cert_pem)
    use(monkeypatch, pem_secret(sandbox, "chain-first", key_pem, issuer_pem, cert_pem))
    summary = run_export(load_settings(), SLOT)
    assert exported_everyone(export_env, sandbox, summary)
    assert [s.code for s in sandbox.entra.sign_ins] == [None]  # no AADSTS700027 on the way


def test_a_key_that_does_not_match_its_certificate_fails_before_entra_is_asked(export_env, sandbox, monkeypatch):
    key_pem, _ = sandbox.new_certificate()
    _, cert_pem = sandbox.new_certificate()
    sandbox.entra.add_certificate(cert_pem)  # registered, but the key in the vault is another one's
    use(monkeypatch, pem_secret(sandbox, "mismatched", key_pem, cert_pem))
    with pytest.raises(AuthError) as info:
        run_export(load_settings(), SLOT)
    message = str(info.value)
    assert message.startswith("The private key of the certificate 'mismatched' in Key Vault ")
    assert "does not match the certificate stored with it (CN=graph-export, SHA-1 thumbprint " in message
    assert "CLIENT_CERTIFICATE_NAME" in message and "Entra was not asked" in message and "\n" not in message
    assert "AADSTS" not in message and sandbox.entra.sign_ins == [] and blob_names(export_env) == []

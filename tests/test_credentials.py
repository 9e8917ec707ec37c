import logging


from graph_export.credentials import Secret, make_secret_client


class NoCredential:
    def get_token(self, *scopes, **kwargs):  # never called: no request is made in these tests
        raise AssertionError("unexpected token request")


def test_secret_never_shows_its_value(caplog):
    secret = Secret("s3cr3t-value", version="abc")
    assert "s3cr3t-value" not in repr(secret) and "s3cr3t-value" not in str(secret)
    assert "s3cr3t-value" not in f"{secret} {secret!r} {[secret]} {({'k': secret})}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("secret is %s / %r", secret, secret)
    assert "s3cr3t-value" not in caplog.text
    assert secret.reveal() == "s3cr3t-value"


def test_secrets_compare_by_value():
    assert Secret("a") == Secret("a", version="2") and Secret("a") != Secret("b")


def test_challenge_resource_check_stays_on_for_real_vaults():
    for url in ("https://kv.vault.azure.net", "https://kv.vault.azure.cn/", "https://kv.vault.usgovcloudapi.net"):
        client = make_secret_client(url, NoCredential())
        assert client._client._config.authentication_policy._verify_challenge_resource is True, url


def test_challenge_resource_check_is_off_only_for_other_hosts():
    client = make_secret_client("https://127.0.0.1:8443", NoCredential())
    assert client._client._config.authentication_policy._verify_challenge_resource is False

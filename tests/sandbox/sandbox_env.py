"""What the sandbox tests share: the machine's variables that would steer azure-identity elsewhere, and
pointing this process at a sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache

#: Variables that would make azure-identity pick another credential or another managed identity source.
FOREIGN_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
               "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "MSI_ENDPOINT", "MSI_SECRET",
               "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST")


def point_at(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment set to the sandbox's settings (REQUESTS_CA_BUNDLE is preset on these machines:
    it must be overridden), without the variables that would steer azure-identity elsewhere."""
    # The Key Vault SDK caches challenges per vault host:port for the whole process; a port reused by a later
    # sandbox would otherwise skip the 401 challenge round trip tests look at.
    http_challenge_cache.clear()
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in sandbox.settings.items():
        monkeypatch.setenv(name, value)
    return dict(sandbox.settings)

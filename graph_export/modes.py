"""The closed sets of names settings and records use: export modes, file formats, credential kinds.

StrEnums, so a value compares, prints and serialises as the plain string operators write in settings
and consumers read in manifests; a leaf module, so records and settings can both use them.
"""

from __future__ import annotations

from enum import StrEnum


class ExportMode(StrEnum):
    """EXPORT_MODE, and a manifest's ``mode``: every user read from /users, or the previous snapshot with
    users/delta's changes applied (a delta-mode slot that falls back to a full export records ``full``)."""

    FULL = "full"
    DELTA = "delta"


class ExportFormat(StrEnum):
    """One of EXPORT_FORMATS: JSON Lines (always written) and its CSV copy."""

    JSONL = "jsonl"
    CSV = "csv"


class CredentialKind(StrEnum):
    """CLIENT_CREDENTIAL, and a credential's ``kind``: how the app registration proves itself to Entra ID."""

    SECRET = "secret"
    CERTIFICATE = "certificate"
    FEDERATED = "federated"

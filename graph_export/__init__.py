"""Export every Microsoft Graph user to Azure Blob Storage: Key Vault -> MSAL -> Graph -> Blob."""

from .errors import (
    AuthError,
    ConfigError,
    ExportError,
    GraphError,
    IncompleteExport,
    SlotBusyError,
    StorageError,
    VerifyError,
)
from .export import run_export
from .records import ExportSummary
from .settings import Settings, load_settings

__all__ = [
    "AuthError", "ConfigError", "ExportError", "GraphError", "IncompleteExport", "SlotBusyError", "StorageError",
    "VerifyError",
    "ExportSummary", "run_export", "Settings", "load_settings",
]

"""Typed, validated settings: the one place that knows every setting's name and default.

Settings come from the environment (Function App application settings, ``local.settings.json``
``Values`` under ``func start``, or a shell). Everything is validated up front and all problems are
reported together, so a misconfigured app fails before it contacts Key Vault, Entra ID or Graph.

The README's settings table and the Bicep app settings are checked against :data:`SETTINGS`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One documented setting: its name, whether it is required, its default and what it means."""

    name: str
    required: bool
    default: str | None
    description: str


DEFAULT_USER_PROPERTIES = (
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "accountEnabled",
    "userType",
    "createdDateTime",
    "jobTitle",
    "department",
    "companyName",
    "employeeId",
    "officeLocation",
    "usageLocation",
    "onPremisesSyncEnabled",
)

SETTINGS: tuple[Setting, ...] = (
    Setting("TENANT_ID", True, None, "Directory (tenant) ID GUID or verified domain of the tenant to export."),
    Setting("CLIENT_ID", True, None, "Application (client) ID of the app registration that has User.Read.All."),
    Setting("KEY_VAULT_URL", True, None, "Vault holding the client secret, e.g. `https://kv-name.vault.azure.net/`."),
    Setting("CLIENT_SECRET_NAME", False, "graph-client-secret", "Name of the Key Vault secret holding the client secret value."),
    Setting("AUTHORITY_HOST", False, "https://login.microsoftonline.com", "Entra ID sign-in host (sovereign clouds, emulators)."),
    Setting("GRAPH_ENDPOINT", False, "https://graph.microsoft.com", "Microsoft Graph base URL, without `/v1.0`."),
    Setting("EXPORT_STORAGE", False, None, "Storage connection string (`UseDevelopmentStorage=true` for Azurite). Set this or the next one; if neither, `AzureWebJobsStorage` / `AzureWebJobsStorage__blobServiceUri` is used."),
    Setting("EXPORT_STORAGE__blobServiceUri", False, None, "Blob service URI for identity-based access (DefaultAzureCredential), the Functions convention."),
    Setting("EXPORT_CONTAINER", False, "graph-exports", "Blob container for exports; created if missing."),
    Setting("EXPORT_SCHEDULE", False, "0 0 2 * * *", "NCRONTAB schedule (6 fields, UTC) read by the timer trigger binding."),
    Setting("USER_PROPERTIES", False, ",".join(DEFAULT_USER_PROPERTIES), "Comma-separated Graph user properties to `$select`; `id` is always included."),
    Setting("RETRY_BACKOFF_BASE_SECONDS", False, "1", "Base of the exponential backoff between retries of Graph, Key Vault and Blob requests (a `Retry-After` from Graph always wins)."),
    Setting("GRAPH_MAX_RETRIES_PER_PAGE", False, "8", "Retries of one Graph page (throttling, 5xx, resets, timeouts) before the run fails."),
    Setting("GRAPH_MAX_RETRIES_PER_RUN", False, "200", "Retries of all Graph requests in one run before it fails."),
    Setting("HTTP_TIMEOUT_SECONDS", False, "60", "Read timeout of each Graph and sign-in request (connecting times out after 10 s)."),
    Setting("CHECKPOINT_EVERY_PAGES", False, "10", "Save resumable progress every this many pages; a killed run's next invocation for the same slot resumes there."),
    Setting("CHECKPOINT_MAX_AGE_HOURS", False, "24", "A checkpoint older than this is discarded and the slot restarts clean."),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}

# Host storage settings the Functions runtime defines; used only as a fallback for the export target.
_HOST_STORAGE = "AzureWebJobsStorage"
_HOST_STORAGE_URI = "AzureWebJobsStorage__blobServiceUri"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")
_MULTI_TENANT_ALIASES = {"common", "organizations", "consumers"}


@dataclass(frozen=True)
class StorageTarget:
    """Where exports go: exactly one of a connection string or an identity-based blob service URI."""

    connection_string: str | None = None
    blob_service_uri: str | None = None
    source: str = ""  # the setting it came from, for messages

    def __repr__(self) -> str:
        # A connection string may carry an account key: never print it.
        where = self.blob_service_uri or "connection string"
        return f"StorageTarget({where!r} from {self.source})"


@dataclass(frozen=True)
class Settings:
    """Validated settings for one export. Hashable, so warm-instance caches can key on it."""

    tenant_id: str
    client_id: str
    key_vault_url: str
    client_secret_name: str
    authority_host: str
    graph_endpoint: str
    storage: StorageTarget
    container: str
    schedule: str
    user_properties: tuple[str, ...]
    retry_backoff_base_s: float = 1.0
    graph_retries_per_page: int = 8
    graph_retries_per_run: int = 200
    http_timeout_s: float = 60.0
    checkpoint_every_pages: int = 10
    checkpoint_max_age_h: float = 24.0

    @property
    def authority(self) -> str:
        """The tenant-specific authority MSAL signs in against (never ``common``: app-only needs a tenant)."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph_endpoint}/.default"

    @property
    def page_size(self) -> int:
        # Graph caps $top at 999, or 500 when signInActivity is selected.
        return 500 if "signInActivity" in self.user_properties else 999


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one :class:`ConfigError` naming all problems."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def get(name: str) -> str:
        return (env.get(name) or "").strip() or (_DEFAULTS.get(name) or "")

    def check(name: str, ok: bool, why: str) -> None:
        if not ok:
            problems.append(f"{name} {why}")

    tenant_id = get("TENANT_ID")
    if not tenant_id:
        problems.append("TENANT_ID is missing: set it to your directory (tenant) ID")
    elif tenant_id.lower() in _MULTI_TENANT_ALIASES:
        problems.append(f"TENANT_ID is '{tenant_id}': app-only export needs the tenant's own ID or domain, "
                        "not a multi-tenant alias")
    else:
        check("TENANT_ID", bool(_GUID.match(tenant_id) or _DOMAIN.match(tenant_id)),
              f"is '{tenant_id}': expected a GUID or a domain such as contoso.onmicrosoft.com")

    client_id = get("CLIENT_ID")
    if not client_id:
        problems.append("CLIENT_ID is missing: set it to the app registration's Application (client) ID")
    else:
        check("CLIENT_ID", bool(_GUID.match(client_id)),
              f"is '{client_id}': expected the Application (client) ID GUID")

    key_vault_url = _https_url("KEY_VAULT_URL", get("KEY_VAULT_URL"), problems, allow_path=False)
    authority_host = _https_url("AUTHORITY_HOST", get("AUTHORITY_HOST"), problems, allow_path=False)
    graph_endpoint = _https_url("GRAPH_ENDPOINT", get("GRAPH_ENDPOINT"), problems, allow_path=False)

    secret_name = get("CLIENT_SECRET_NAME")
    check("CLIENT_SECRET_NAME", bool(_SECRET_NAME.match(secret_name)),
          f"is '{secret_name}': Key Vault secret names are 1-127 letters, digits and hyphens")

    container = get("EXPORT_CONTAINER")
    check("EXPORT_CONTAINER", bool(_CONTAINER.match(container)),
          f"is '{container}': container names are 3-63 lowercase letters, digits and single hyphens")

    schedule = get("EXPORT_SCHEDULE")
    fields = schedule.split()
    check("EXPORT_SCHEDULE", len(fields) == 6 and all(_NCRONTAB_FIELD.match(f) for f in fields),
          f"is '{schedule}': expected 6-field NCRONTAB 'second minute hour day month day-of-week', e.g. '0 0 2 * * *'")

    backoff = _number("RETRY_BACKOFF_BASE_SECONDS", get("RETRY_BACKOFF_BASE_SECONDS"), problems, 0.0, 60.0)
    per_page = _number("GRAPH_MAX_RETRIES_PER_PAGE", get("GRAPH_MAX_RETRIES_PER_PAGE"), problems, 0, 100, whole=True)
    per_run = _number("GRAPH_MAX_RETRIES_PER_RUN", get("GRAPH_MAX_RETRIES_PER_RUN"), problems, 0, 100_000, whole=True)
    timeout = _number("HTTP_TIMEOUT_SECONDS", get("HTTP_TIMEOUT_SECONDS"), problems, 0.1, 600.0)
    every = _number("CHECKPOINT_EVERY_PAGES", get("CHECKPOINT_EVERY_PAGES"), problems, 1, 10_000, whole=True)
    max_age = _number("CHECKPOINT_MAX_AGE_HOURS", get("CHECKPOINT_MAX_AGE_HOURS"), problems, 0.0, 144.0)
    properties = _user_properties(get("USER_PROPERTIES"), problems)
    storage = _storage_target(env, problems)

    if problems:
        raise ConfigError("Invalid settings: " + "; ".join(problems) + ".")
    return Settings(
        tenant_id=tenant_id,
        client_id=client_id.lower(),
        key_vault_url=key_vault_url,
        client_secret_name=secret_name,
        authority_host=authority_host,
        graph_endpoint=graph_endpoint,
        storage=storage,
        container=container,
        schedule=schedule,
        user_properties=properties,
        retry_backoff_base_s=backoff,
        graph_retries_per_page=int(per_page),
        graph_retries_per_run=int(per_run),
        http_timeout_s=timeout,
        checkpoint_every_pages=int(every),
        checkpoint_max_age_h=max_age,
    )


def _https_url(name: str, value: str, problems: list[str], *, allow_path: bool) -> str:
    """Validate an https base URL and return it without a trailing slash."""
    if not value:
        problems.append(f"{name} is missing: set it to an https:// URL")
        return ""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        problems.append(f"{name} is '{value}': expected an https:// URL")
        return ""
    if not allow_path and parts.path.strip("/"):
        problems.append(f"{name} is '{value}': give the base URL only, without a path such as '{parts.path}'")
        return ""
    if parts.query or parts.fragment:
        problems.append(f"{name} is '{value}': remove the query string")
        return ""
    return f"https://{parts.netloc}"


def _number(name: str, value: str, problems: list[str], low: float, high: float, *, whole: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not low <= number <= high or (whole and not number.is_integer()):  # also rejects nan
        kind = "a whole number" if whole else "a number"
        problems.append(f"{name} is '{value}': expected {kind} from {low:g} to {high:g}")
        return low
    return number


def _user_properties(raw: str, problems: list[str]) -> tuple[str, ...]:
    names = [p.strip() for p in raw.split(",") if p.strip()]
    bad = [n for n in names if not _PROPERTY.match(n)]
    if bad:
        problems.append(f"USER_PROPERTIES has invalid property names {', '.join(repr(b) for b in bad)}: "
                        "give comma-separated Graph user property names such as 'id,displayName,mail'")
        return ()
    # id first, always: it is what makes an export line traceable to a directory object.
    ordered = ["id"] + [n for n in names if n != "id"]
    return tuple(dict.fromkeys(ordered))


def _storage_target(env: Mapping[str, str], problems: list[str]) -> StorageTarget:
    """Pick the export storage: EXPORT_STORAGE* first, then the host's AzureWebJobsStorage*."""
    for conn_name, uri_name in (("EXPORT_STORAGE", "EXPORT_STORAGE__blobServiceUri"),
                                (_HOST_STORAGE, _HOST_STORAGE_URI)):
        conn = (env.get(conn_name) or "").strip()
        uri = (env.get(uri_name) or "").strip()
        if conn and uri:
            problems.append(f"{conn_name} and {uri_name} are both set: keep only one")
            return StorageTarget()
        if conn:
            if not _looks_like_connection_string(conn):
                # Never echo the value: it may hold an account key.
                problems.append(f"{conn_name} is not a storage connection string: expected "
                                "'UseDevelopmentStorage=true' or 'DefaultEndpointsProtocol=...;AccountName=...;...'")
                return StorageTarget()
            return StorageTarget(connection_string=conn, source=conn_name)
        if uri:
            parts = urlsplit(uri)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                problems.append(f"{uri_name} is '{uri}': expected a URL such as https://account.blob.core.windows.net")
                return StorageTarget()
            return StorageTarget(blob_service_uri=uri.rstrip("/"), source=uri_name)
    problems.append("EXPORT_STORAGE__blobServiceUri (or EXPORT_STORAGE) is missing: set the export storage "
                    "account's blob URI, or a connection string such as 'UseDevelopmentStorage=true' for Azurite")
    return StorageTarget()


def _looks_like_connection_string(value: str) -> bool:
    pairs = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    keys = {k.strip().lower() for k in pairs}
    if pairs.get("UseDevelopmentStorage", "").lower() == "true":
        return True
    return bool(keys & {"accountname", "blobendpoint"})


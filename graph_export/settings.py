"""Typed, validated settings: the one place that knows every setting's name, default and check.

Settings come from the environment (Function App application settings, ``local.settings.json``
``Values`` under ``func start``, or a shell). Everything is validated up front and all problems are
reported together, so a misconfigured app fails before it contacts Key Vault, Entra ID or Graph. A
value left as a placeholder (``<your-vault-name>``, the all-zero GUID) is one of those problems; a name
that looks like a setting but is not one is a warning (:mod:`graph_export.setting_names`).

:data:`SETTINGS` is the one table: each row is a setting's name, whether it is required, its default,
its description, and the :class:`Settings` field it fills with the parser that turns its text into
that field's value. The few rules that join two settings follow it (:func:`_between_settings`). The
README's settings table and the Bicep app settings are checked against :data:`SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import SplitResult, urlsplit

from . import properties as graph_properties
from . import schedule as ncrontab
from .errors import ConfigError
from .modes import CredentialKind, ExportFormat, ExportMode
from .setting_names import misnamed_settings

log = logging.getLogger(__name__)

#: How a setting's text (its default when unset) becomes its value: ``(name, text, problems)``. A
#: problem is appended, never raised, so that one error can name every problem.
Parse = Callable[[str, str, list[str]], object]


@dataclass(frozen=True)
class Setting:
    """One documented setting: its name, whether it is required, its default, the :class:`Settings`
    field it fills and the parser that fills it, and what it means. The storage pair has neither field
    nor parser: it is read together, with the host's storage as its fallback (``_storage_target``)."""

    name: str
    required: bool
    default: str | None
    field: str
    parse: Parse | None
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

# Host storage settings the Functions runtime defines; used only as a fallback for the export target.
_HOST_STORAGE = "AzureWebJobsStorage"
_HOST_STORAGE_URI = "AzureWebJobsStorage__blobServiceUri"

# Placeholders, such as local.settings.json.example's: a value that still holds one was never filled in.
# Matched here, not read from the example (the deployment package does not ship it); tests/unit/test_settings.py
# checks that every placeholder of the example is one of these.
_NIL_GUID = "00000000-0000-0000-0000-000000000000"
_ANGLE_PLACEHOLDER = re.compile(r"<[^<>]*>")  # <your-vault-name>
#: What to put in a setting instead of its placeholder (default: the setting's own value).
_INSTEAD_OF_PLACEHOLDER = {
    "TENANT_ID": "your directory (tenant) ID",
    "CLIENT_ID": "the app registration's Application (client) ID",
    "KEY_VAULT_URL": "your vault's URL, e.g. https://kv-name.vault.azure.net/",
    "MANAGED_IDENTITY_CLIENT_ID": "the user-assigned identity's client ID",
    "EXPORT_STORAGE": "a storage connection string",
    "EXPORT_STORAGE__blobServiceUri": "your account's blob URI, e.g. https://account.blob.core.windows.net",
    _HOST_STORAGE: "a storage connection string",
    _HOST_STORAGE_URI: "your account's blob URI, e.g. https://account.blob.core.windows.net",
}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_QUEUE = re.compile(r"^(?=.{3,56}$)[a-z0-9]+(-[a-z0-9]+)*$")
_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # extension names have underscores
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_MULTI_TENANT_ALIASES = {"common", "organizations", "consumers"}
#: LIBRARY_LOG_LEVEL's values, by name.
LOG_LEVELS: dict[str, int] = {name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}
#: The audience a managed identity's token must have to be an app's federated credential, by cloud
#: (Microsoft's workload identity federation docs): AUTHORITY_HOST names the cloud.
_FEDERATED_AUDIENCE_BY_AUTHORITY = {
    "login.microsoftonline.us": "api://AzureADTokenExchangeUSGov",
    "login.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
    "login.partner.microsoftonline.cn": "api://AzureADTokenExchangeChina",
}
PUBLIC_FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
#: User properties users/delta does not return or does not track changes of (lower case).
_NOT_IN_DELTA = {"licenseassignmentstates"}

_Choice = TypeVar("_Choice", bound=StrEnum)


def federated_audience(authority_host: str) -> str:
    """The token exchange audience of ``authority_host``'s cloud (public unless US Government or China)."""
    host = (urlsplit(authority_host).hostname or "").lower()
    return _FEDERATED_AUDIENCE_BY_AUTHORITY.get(host, PUBLIC_FEDERATED_AUDIENCE)


# --- the parsers the table names: (name, text, problems) -> value -------------------------------------


def _tenant(name: str, text: str, problems: list[str]) -> str:
    if not text:
        problems.append(f"{name} is missing: set it to your directory (tenant) ID")
    elif text.lower() in _MULTI_TENANT_ALIASES:
        problems.append(f"{name} is '{text}': app-only export needs the tenant's own ID or domain, "
                        "not a multi-tenant alias")
    elif not (_GUID.match(text) or _DOMAIN.match(text)):
        problems.append(f"{name} is '{text}': expected a GUID or a domain such as contoso.onmicrosoft.com")
    return text


def _tenant_ids(name: str, text: str, problems: list[str]) -> tuple[str, ...]:
    """Comma-separated tenant GUIDs, lower-cased and de-duplicated in their order. GUIDs only, not domains:
    each id names its tenant's root in storage (``tenants/<id>/``), which must not change when a domain does."""
    ids: dict[str, None] = {}
    bad: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        (ids.__setitem__(part.lower(), None) if _GUID.match(part) else bad.append(part))
    if bad:
        problems.append(f"{name} has {', '.join(repr(b) for b in bad)}: expected comma-separated directory "
                        "(tenant) ID GUIDs")
    if text.strip() and not ids and not bad:
        problems.append(f"{name} names no tenant: give comma-separated directory (tenant) ID GUIDs, or unset it")
    return tuple(ids)


def _queue(name: str, text: str, problems: list[str]) -> str:
    # Azure's queue name rules (3-63 lowercase letters, digits, single hyphens), less the 7 characters of
    # the "-poison" suffix the Functions host appends for the poison queue.
    if not _QUEUE.match(text):
        problems.append(f"{name} is '{text}': queue names are 3-56 lowercase letters, digits and single hyphens "
                        "(the host adds '-poison' for the poison queue, and a queue name has at most 63)")
    return text


def _client_id(name: str, text: str, problems: list[str]) -> str:
    if not text:
        problems.append(f"{name} is missing: set it to the app registration's Application (client) ID")
    elif not _GUID.match(text):
        problems.append(f"{name} is '{text}': expected the Application (client) ID GUID")
    return text.lower()


def _identity_client_id(name: str, text: str, problems: list[str]) -> str | None:
    identity_client_id = text.lower() or None
    if identity_client_id is not None and not _GUID.match(identity_client_id):
        problems.append(f"{name} is '{identity_client_id}': expected the user-assigned identity's client ID GUID")
    return identity_client_id


def _one_of(choices: type[_Choice]) -> Callable[[str, str, list[str]], _Choice | None]:
    """A parser of one of ``choices``' values, in any case; None (with the problem) for any other text."""
    values = [f"'{choice.value}'" for choice in choices]
    expected = f"{', '.join(values[:-1])} or {values[-1]}"

    def parse(name: str, text: str, problems: list[str]) -> _Choice | None:
        try:
            return choices(text.lower())
        except ValueError:
            problems.append(f"{name} is '{text}': expected {expected}")
            return None
    return parse


def _flag(name: str, text: str, problems: list[str]) -> bool:
    flag = text.lower()
    if flag not in ("true", "false"):
        problems.append(f"{name} is '{flag}': expected true or false")
    return flag == "true"


def _secret_name(name: str, text: str, problems: list[str]) -> str:
    # Not echoed: a value that is no secret name may be the secret itself, pasted in the wrong setting.
    if not _SECRET_NAME.match(text):
        problems.append(f"{name} is not a valid name (value not shown, in case it is the secret itself): "
                        "Key Vault secret names are 1-127 letters, digits and hyphens")
    return text


def _certificate_name(name: str, text: str, problems: list[str]) -> str:
    if not _SECRET_NAME.match(text):
        problems.append(f"{name} is '{text}': Key Vault certificate names are 1-127 letters, digits and hyphens")
    return text


def _audience(name: str, text: str, problems: list[str]) -> str:
    """The audience given, or "" for the one AUTHORITY_HOST's cloud uses (:func:`_between_settings`)."""
    if text and not _URI.match(text):
        problems.append(f"{name} is '{text}': expected a URI such as api://AzureADTokenExchange")
    return text


def _optional_https_url(name: str, text: str, problems: list[str]) -> str:
    """An https base URL, or "" when unset (whether it may be unset is :func:`_between_settings`' rule)."""
    return _https_url(name, text, problems) if text else ""


def _container(name: str, text: str, problems: list[str]) -> str:
    if not _CONTAINER.match(text):
        problems.append(f"{name} is '{text}': container names are 3-63 lowercase letters, digits "
                        "and single hyphens")
    return text


def _optional_container(name: str, text: str, problems: list[str]) -> str | None:
    return _container(name, text, problems) if text else None


def _schedule(name: str, text: str, problems: list[str]) -> str:
    if (why := ncrontab.problem(text)) is not None:
        problems.append(f"{name} is '{text}': {why}; {ncrontab.FORM}")
    return text


def _between(low: float, high: float) -> Callable[[str, str, list[str]], float]:
    """A parser of a number from ``low`` to ``high``."""
    def parse(name: str, text: str, problems: list[str]) -> float:
        return _number(name, text, problems, low, high)
    return parse


def _whole(low: int, high: int) -> Callable[[str, str, list[str]], int]:
    """A parser of a whole number from ``low`` to ``high``."""
    def parse(name: str, text: str, problems: list[str]) -> int:
        return int(_number(name, text, problems, low, high, whole=True))
    return parse


def _formats(name: str, text: str, problems: list[str]) -> tuple[ExportFormat, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    known = set(ExportFormat)
    if not formats or not set(formats) <= known or ExportFormat.JSONL not in formats:
        problems.append(f"{name} is '{text}': expected 'jsonl' or 'jsonl,csv' (JSON Lines is the snapshot every "
                        "other format and delta mode are made from)")
        return ()
    return tuple(ExportFormat(f) for f in formats)


def _log_level(name: str, text: str, problems: list[str]) -> int:
    level = text.upper()
    if level not in LOG_LEVELS:
        problems.append(f"{name} is '{text}': expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return LOG_LEVELS.get(level, logging.WARNING)


def _https_url(name: str, value: str, problems: list[str]) -> str:
    """Validate an https base URL and return it without a trailing slash.

    User info (``user:pass@``), a query or a fragment is refused before anything echoes the value:
    requests would send the first as Basic auth, and the others are where SAS tokens ride.
    """
    if not value:
        problems.append(f"{name} is missing: set it to an https:// URL")
        return ""
    parts = _safe_url_parts(name, value, problems, "remove it and give the https:// base URL only")
    if parts is None:
        return ""
    if parts.scheme != "https" or not parts.hostname:
        problems.append(f"{name} is '{value}': expected an https:// URL")
        return ""
    if parts.path.strip("/"):
        problems.append(f"{name} is '{value}': give the base URL only, without a path such as '{parts.path}'")
        return ""
    return f"https://{parts.netloc}"


def _user_properties(setting: str, raw: str, problems: list[str]) -> tuple[str, ...]:
    """The ``$select`` list in Graph's spelling: ``id`` first, then each other property once, in order.

    Graph matches ``$select`` names case-insensitively and answers with its own spelling, so each name
    is resolved to that spelling (:func:`graph_properties.graph_spelling`): ``Department`` is
    ``department``, and ``mail,Mail`` is one property. A name that is not a v1.0 user property is an
    error (Graph would answer 400), with the closest property as a suggestion; so are relationships
    and the properties Graph returns only for a single user. A list with no names at all (``,,,``) is
    an error rather than a silent export of ids only.
    """
    names = [p.strip() for p in raw.split(",") if p.strip()]
    if not names:
        problems.append(f"{setting} names no property: give comma-separated Graph user property names "
                        "such as 'id,displayName,mail', or leave it unset for the default list")
        return ()
    bad = [n for n in names if not _PROPERTY.match(n)]
    if bad:
        problems.append(f"{setting} has invalid property names {', '.join(repr(b) for b in bad)}: "
                        "give comma-separated Graph user property names such as 'id,displayName,mail'")
        return ()
    resolved: list[str] = []
    unknown: list[str] = []
    relationships: list[str] = []
    single_user: list[str] = []
    for name in names:
        spelled = graph_properties.graph_spelling(name)
        if spelled is None:
            (relationships if graph_properties.relationship(name) else unknown).append(name)
        elif spelled in graph_properties.SINGLE_USER_ONLY:
            single_user.append(spelled)
        else:
            resolved.append(spelled)
    if unknown:
        problems.append(f"{setting} has names that are not Microsoft Graph v1.0 user properties: "
                        f"{', '.join(_unknown_property(n) for n in unknown)}: use the names of "
                        f"{graph_properties.DOCS_URL} (any case), or a directory extension "
                        "extension_<appId without dashes>_<name> (a property Graph added after this export's "
                        "table, graph_export/properties.py, must be added there)")
    if relationships:
        listed = ", ".join(repr(graph_properties.relationship(n)) for n in relationships)
        what = "a relationship of user, not a property" if len(relationships) == 1 else \
            "relationships of user, not properties"
        problems.append(f"{setting} has {listed}, {what}: of the relationships only 'manager' is exported; "
                        f"remove {_it(relationships)}")
    if single_user:
        problems.append(f"{setting} has {', '.join(repr(n) for n in single_user)}, which Graph returns only "
                        f"when reading one user, not when listing users: remove {_it(single_user)}")
    if unknown or relationships or single_user:
        return ()
    # id first, always: it is what makes an export line traceable to a directory object.
    unique = {"id": "id"}
    for name in resolved:
        unique.setdefault(name.lower(), name)
    return tuple(unique.values())


SETTINGS: tuple[Setting, ...] = (
    Setting("TENANT_ID", True, None, "tenant_id", _tenant, "Directory (tenant) ID GUID or verified domain of the tenant to export (not needed when `TENANT_IDS` is set)."),
    Setting("TENANT_IDS", False, None, "tenant_ids", _tenant_ids, "Comma-separated directory (tenant) ID GUIDs of every tenant to export with the one multi-tenant app registration (consented in each). The timer then enqueues one message per tenant on `EXPORT_QUEUE` and a queue-triggered function exports each; each tenant's exports and state live under `tenants/<tenant-id>/`. Unset: one tenant, `TENANT_ID`, at the container's root. See Many tenants."),
    Setting("CLIENT_ID", True, None, "client_id", _client_id, "Application (client) ID of the app registration that has User.Read.All."),
    Setting("KEY_VAULT_URL", True, None, "key_vault_url", _optional_https_url, "Vault holding the client secret or certificate, e.g. `https://kv-name.vault.azure.net/` (not needed when `CLIENT_CREDENTIAL=federated`)."),
    Setting("CLIENT_CREDENTIAL", False, "secret", "client_credential", _one_of(CredentialKind), "How the app registration proves itself to Entra ID: `secret` (client secret in Key Vault), `certificate` (Key Vault certificate) or `federated` (the function's user-assigned managed identity; no secret at all). See Choosing a credential."),
    Setting("CLIENT_SECRET_NAME", False, "graph-client-secret", "client_secret_name", _secret_name, "Name of the Key Vault secret holding the client secret value."),
    Setting("CLIENT_CERTIFICATE_NAME", False, "graph-client-certificate", "client_certificate_name", _certificate_name, "`certificate`: name of the Key Vault certificate whose private key signs the sign-in assertion."),
    Setting("CLIENT_CERTIFICATE_SEND_X5C", False, "false", "certificate_send_x5c", _flag, "`certificate`: also send the certificate chain (`x5c`) with each assertion, for subject name + issuer authentication."),
    Setting("MANAGED_IDENTITY_CLIENT_ID", False, None, "managed_identity_client_id", _identity_client_id, "Client ID of the function's user-assigned managed identity; required when `CLIENT_CREDENTIAL=federated`, and used for Key Vault and Storage too when set."),
    Setting("FEDERATED_TOKEN_AUDIENCE", False, None, "federated_token_audience", _audience, "`federated`: audience of the identity's token for the app (default: `api://AzureADTokenExchange`, or the US Government / China value for those clouds' AUTHORITY_HOST)."),
    Setting("CREDENTIAL_EXPIRY_WARNING_DAYS", False, "30", "credential_expiry_warning_days", _between(0, 3650), "Log a warning (and alert) when the client secret or certificate in Key Vault expires within this many days; an expired one fails the run before sign-in."),
    Setting("AUTHORITY_HOST", False, "https://login.microsoftonline.com", "authority_host", _https_url, "Entra ID sign-in host (sovereign clouds, emulators)."),
    Setting("GRAPH_ENDPOINT", False, "https://graph.microsoft.com", "graph_endpoint", _https_url, "Microsoft Graph base URL, without `/v1.0`."),
    Setting("EXPORT_STORAGE", False, None, "", None, "Storage connection string (`UseDevelopmentStorage=true` for Azurite). Set this or the next one; if neither, `AzureWebJobsStorage` / `AzureWebJobsStorage__blobServiceUri` is used."),
    Setting("EXPORT_STORAGE__blobServiceUri", False, None, "", None, "Blob service URI for identity-based access (DefaultAzureCredential), the Functions convention."),
    Setting("EXPORT_STORAGE__queueServiceUri", False, None, "", None, "`TENANT_IDS` with `EXPORT_STORAGE__blobServiceUri`: the queue service URI of the same account (the queue trigger's identity-based connection reads it too)."),
    Setting("EXPORT_CONTAINER", False, "graph-exports", "container", _container, "Blob container for exports; created if missing."),
    Setting("EXPORT_STATE_CONTAINER", False, None, "state_container_name", _optional_container, "Blob container for what changes between runs (`users/latest.json`, slot pointers, locks, checkpoints, delta state); default: `EXPORT_CONTAINER`. Set it to another container to keep the export container under an immutability (WORM) policy; created if missing."),
    Setting("EXPORT_QUEUE", False, "graph-export-tenants", "export_queue", _queue, "`TENANT_IDS`: the Storage queue (in the export storage account) that carries one message per tenant and slot; created if missing. Failed messages end in `<name>-poison` after host.json's `maxDequeueCount` attempts."),
    Setting("EXPORT_SCHEDULE", False, "0 0 2 * * *", "schedule", _schedule, "NCRONTAB schedule (6 fields, seconds first, UTC) read by the timer trigger binding; checked as the host reads it, and one that never fires is refused."),
    Setting("USER_PROPERTIES", False, ",".join(DEFAULT_USER_PROPERTIES), "user_properties", _user_properties, "Comma-separated Graph user properties to `$select` (at least one), resolved to Graph's spelling, which the export's keys, CSV header and manifest use (`Department` is `department`; names differing only in case are one property); `id` is always included, first. A name that is not a v1.0 user property is an error naming the closest one; `manager` exports each user's manager as `{\"id\": …}` (null without one; pages of 100 users); directory extensions (`extension_<appId>_<name>`, null for a user who does not have one) and schema extensions are passed on, and must match Graph's case (`python -m graph_export properties` lists the tenant's)."),
    Setting("RETRY_BACKOFF_BASE_SECONDS", False, "1", "retry_backoff_base_s", _between(0.0, 60.0), "Base of the exponential backoff between retries of Graph, Key Vault and Blob requests (a `Retry-After` from Graph always wins)."),
    Setting("GRAPH_MAX_RETRIES_PER_PAGE", False, "8", "graph_retries_per_page", _whole(0, 100), "Retries of one Graph page (throttling, 5xx, resets, timeouts) before the run fails."),
    Setting("GRAPH_MAX_RETRIES_PER_RUN", False, "200", "graph_retries_per_run", _whole(0, 100_000), "Retries of all Graph requests in one run before it fails."),
    Setting("HTTP_TIMEOUT_SECONDS", False, "60", "http_timeout_s", _between(0.1, 600.0), "Read timeout of each Graph and sign-in request (connecting times out after 10 s)."),
    Setting("CHECKPOINT_EVERY_PAGES", False, "10", "checkpoint_every_pages", _whole(1, 10_000), "Save resumable progress every this many pages; a killed run's next invocation for the same slot resumes there."),
    Setting("CHECKPOINT_MAX_AGE_HOURS", False, "24", "checkpoint_max_age_h", _between(0.0, 144.0), "A checkpoint older than this is discarded and the slot restarts clean."),
    Setting("PROGRESS_EVERY_SECONDS", False, "30", "progress_every_s", _between(1, 3600), "Log a progress line (users, pages, users/s, retries, throttled waits) at most this often during a run."),
    Setting("EXPORT_FORMATS", False, "jsonl", "export_formats", _formats, "Comma-separated: `jsonl` (gzip JSON Lines, always) and `csv` (also `users-<slot>.csv.gz`, from the same pages: one pass over Graph)."),
    Setting("CSV_EXCEL", False, "false", "csv_excel", _flag, "`csv`: start the file with a UTF-8 byte order mark, so Excel shows non-ASCII names correctly."),
    Setting("EXPORT_MODE", False, "full", "export_mode", _one_of(ExportMode), "`full` reads every user each slot; `delta` publishes the same complete snapshot from the changes since the previous one (`/users/delta`), with a full export when it must."),
    Setting("FULL_SYNC_EVERY_DAYS", False, "6", "full_sync_every_days", _between(0.0, 7.0), "Delta mode: a full export (which also measures drift) once the saved delta link is this old; Graph expires directory delta links after 7 days."),
    Setting("DELTA_MAX_CHANGES", False, "250000", "delta_max_changes", _whole(1, 10_000_000), "Delta mode: more changed users than this in one slot means a full export instead (the changes are held in memory)."),
    Setting("USER_COUNT_TOLERANCE", False, "5", "user_count_tolerance", _whole(0, 100_000), "How many users a snapshot may hold beyond the range Graph's user counts at the start and the end of the run allow (`GET /users/$count` is eventually consistent); a snapshot outside it is not published (exit 8). See Completeness."),
    Setting("LIBRARY_LOG_LEVEL", False, "WARNING", "library_log_level", _log_level, "Under the function: the lowest level of the libraries' log records (Azure SDK, MSAL, urllib3, OpenTelemetry) that reach the invocation log; `INFO` or `DEBUG` shows each request (redacted), `ERROR` or `CRITICAL` fewer. The export's own lines are INFO whatever this says; the CLI shows the libraries' records with `--debug` only."),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}
#: What every tenant's root starts with under TENANT_IDS (``Settings.tenant_root``).
TENANTS_PREFIX = "tenants/"
#: The libraries' log level until LIBRARY_LOG_LEVEL has been read (the function sets it before loading settings).
DEFAULT_LIBRARY_LOG_LEVEL = _log_level("LIBRARY_LOG_LEVEL", _DEFAULTS["LIBRARY_LOG_LEVEL"] or "", [])
# What reading the published export back needs (load_storage_settings), besides the storage pair.
_STORAGE_ROWS = tuple(s for s in SETTINGS if s.name in {"MANAGED_IDENTITY_CLIENT_ID", "EXPORT_CONTAINER",
                                                        "EXPORT_STATE_CONTAINER", "RETRY_BACKOFF_BASE_SECONDS"})


@dataclass(frozen=True)
class StorageTarget:
    """Where exports go: exactly one of a connection string or an identity-based blob service URI."""

    connection_string: str | None = None
    blob_service_uri: str | None = None
    source: str = ""  # the setting it came from, for messages
    #: With ``blob_service_uri``: the same account's queue service (EXPORT_STORAGE__queueServiceUri), if set.
    queue_service_uri: str | None = None

    def __repr__(self) -> str:
        # A connection string may carry an account key or a SAS, a URI a SAS query: never print them.
        where = _redacted_url(self.blob_service_uri) if self.blob_service_uri else "connection string"
        return f"StorageTarget({where!r} from {self.source})"


@dataclass(frozen=True)
class StorageSettings:
    """Where the export is published and how to reach it: all that reading it back needs.

    No field has a default: the defaults are :data:`SETTINGS`', and only the loaders build these.
    """

    storage: StorageTarget
    container: str
    #: EXPORT_STATE_CONTAINER when it names another container; None: the records live in ``container``.
    state_container_name: str | None
    retry_backoff_base_s: float
    managed_identity_client_id: str | None
    #: Where one tenant's export lives in both containers (``tenants/<id>/``, :meth:`for_tenant`); "" the root.
    tenant_root: str

    @property
    def state_container(self) -> str:
        return self.state_container_name or self.container

    def for_tenant(self, tenant: str) -> "StorageSettings":
        """The same storage, read at one tenant's root (``verify --tenant``); ConfigError unless a tenant GUID."""
        tenant = tenant.strip().lower()
        if not _GUID.match(tenant):
            raise ConfigError(f"--tenant is '{tenant}': expected a directory (tenant) ID GUID, as in TENANT_IDS.")
        return dataclasses.replace(self, tenant_root=f"{TENANTS_PREFIX}{tenant}/")


@dataclass(frozen=True)
class Settings:
    """Validated settings for one export. Hashable, so warm-instance caches can key on it.

    One field for each row of :data:`SETTINGS` that has a parser, in its order, and ``storage`` for
    the storage pair; no field has a default (the defaults are the table's), and only
    :func:`load_settings` builds these.
    """

    tenant_id: str
    #: TENANT_IDS: every tenant to export; empty: the one tenant of TENANT_ID, at the container's root.
    tenant_ids: tuple[str, ...]
    client_id: str
    key_vault_url: str
    client_credential: CredentialKind
    client_secret_name: str
    client_certificate_name: str
    certificate_send_x5c: bool
    managed_identity_client_id: str | None
    federated_token_audience: str
    credential_expiry_warning_days: float
    authority_host: str
    graph_endpoint: str
    storage: StorageTarget
    container: str
    #: Where the mutable records live (EXPORT_STATE_CONTAINER); None: in ``container``.
    state_container_name: str | None
    export_queue: str
    schedule: str
    user_properties: tuple[str, ...]
    retry_backoff_base_s: float
    graph_retries_per_page: int
    graph_retries_per_run: int
    http_timeout_s: float
    checkpoint_every_pages: int
    checkpoint_max_age_h: float
    progress_every_s: float
    export_formats: tuple[ExportFormat, ...]
    csv_excel: bool
    export_mode: ExportMode
    full_sync_every_days: float
    delta_max_changes: int
    #: How far a snapshot's users may lie outside Graph's counts around the run (USER_COUNT_TOLERANCE).
    user_count_tolerance: int
    #: The libraries' log level under the function (LIBRARY_LOG_LEVEL).
    library_log_level: int

    @property
    def state_container(self) -> str:
        return self.state_container_name or self.container

    @property
    def storage_settings(self) -> StorageSettings:
        """The part of these settings that reading the export back needs (``verify``)."""
        return StorageSettings(storage=self.storage, container=self.container,
                               state_container_name=self.state_container_name,
                               retry_backoff_base_s=self.retry_backoff_base_s,
                               managed_identity_client_id=self.managed_identity_client_id,
                               tenant_root=self.tenant_root)

    @property
    def tenant_root(self) -> str:
        """Where this tenant's exports and state live in both containers: ``tenants/<id>/`` with TENANT_IDS
        (:meth:`for_tenant`), the container's root ("") for the one tenant of TENANT_ID."""
        return f"{TENANTS_PREFIX}{self.tenant_id}/" if self.tenant_ids and self.tenant_id else ""

    def for_tenant(self, tenant: str) -> "Settings":
        """The settings of one tenant of TENANT_IDS: the whole pipeline stays single-tenant inside.

        ConfigError if TENANT_IDS does not list it (or is unset: then there is only TENANT_ID's tenant).
        """
        tenant = tenant.strip().lower()
        if not self.tenant_ids:
            raise ConfigError(f"Tenant '{tenant}' was asked for, but TENANT_IDS is not set: this app exports "
                              "only TENANT_ID's tenant (drop --tenant, or set TENANT_IDS).")
        if tenant not in self.tenant_ids:
            raise ConfigError(f"Tenant '{tenant}' is not one of TENANT_IDS: add it there (and consent the app "
                              "in it) or check the id.")
        return dataclasses.replace(self, tenant_id=tenant)

    @property
    def authority(self) -> str:
        """The tenant-specific authority MSAL signs in against (never ``common``: app-only needs a tenant)."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph_endpoint}/.default"

    @property
    def page_size(self) -> int:
        # Graph caps $top at 999, or 500 when signInActivity is selected (in any spelling: $select
        # names are matched case-insensitively); with $expand (the manager) a page holds at most 100
        # users whatever $top asks (https://learn.microsoft.com/en-us/graph/query-parameters#expand-parameter).
        if graph_properties.MANAGER in self.user_properties:
            return 100
        selects_sign_ins = any(p.lower() == "signinactivity" for p in self.user_properties)
        return graph_properties.SIGN_IN_ACTIVITY_PAGE if selects_sign_ins else 999


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one :class:`ConfigError` naming all problems.

    The problems come in this order: placeholders, then each setting's own in :data:`SETTINGS`' order,
    then those of the rules between settings. The one side effect: a warning on the
    ``graph_export.settings`` logger for each name in ``env`` that looks like a setting but is not one
    (:func:`misnamed_settings`), so the CLI and the function both show it, before any error.
    """
    env = os.environ if env is None else env
    for line in misnamed_settings(env, _DEFAULTS):
        log.warning("%s", line)
    # A placeholder is reported once, as such; the setting is validated as if unset (its default).
    # (The storage settings are _storage_target's: their fallback is read only when they are unset.)
    placeholders = [s.name for s in SETTINGS
                    if not s.name.startswith("EXPORT_STORAGE") and _is_placeholder(env.get(s.name))]
    problems: list[str] = [_placeholder_problem(name) for name in placeholders]

    def text(name: str) -> str:
        value = "" if name in placeholders else (env.get(name) or "").strip()
        return value or (_DEFAULTS.get(name) or "")

    values = _read(SETTINGS, text, problems)
    _between_settings(values, text, problems)
    values["storage"] = _storage_target(env, problems)
    _tenants_and_queue(values, problems)
    # ... and is not also "missing".
    problems = [p for p in problems if not p.startswith(tuple(f"{n} is missing" for n in placeholders))]
    if problems:
        raise ConfigError("Invalid settings: " + "; ".join(problems) + ".")
    return Settings(**values)


def load_storage_settings(env: Mapping[str, str] | None = None) -> StorageSettings:
    """Only what reading the published export needs (``verify``): the storage target, the two
    containers, the managed identity and the retry backoff, validated as :func:`load_settings`
    validates them; the Graph, Key Vault and schedule settings are neither needed nor read."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def text(name: str) -> str:
        return (env.get(name) or "").strip() or (_DEFAULTS.get(name) or "")

    values = _read(_STORAGE_ROWS, text, problems)
    _one_state_container(values)
    values["storage"] = _storage_target(env, problems)
    values["tenant_root"] = ""
    if problems:
        raise ConfigError("Invalid settings: " + "; ".join(problems) + ".")
    return StorageSettings(**values)


def load_tenant_ids(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """TENANT_IDS alone, validated as :func:`load_settings` does (``status`` needs nothing else of Graph's)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    tenants = _tenant_ids("TENANT_IDS", (env.get("TENANT_IDS") or "").strip(), problems)
    if problems:
        raise ConfigError("Invalid settings: " + "; ".join(problems) + ".")
    return tenants


def _read(rows: Iterable[Setting], text: Callable[[str], str], problems: list[str]) -> dict[str, Any]:
    """Each row's field, parsed from its text; the storage pair (no parser) is _storage_target's."""
    values: dict[str, Any] = {}
    for row in rows:
        if row.parse is not None:
            values[row.field] = row.parse(row.name, text(row.name), problems)
    return values


def _between_settings(values: dict[str, Any], text: Callable[[str], str], problems: list[str]) -> None:
    """The rules that join two settings, applied to ``values`` once each setting is read on its own."""
    federated = values["client_credential"] is CredentialKind.FEDERATED
    # A federated credential needs no vault; the other two keep their secret or key there.
    if not federated and not text("KEY_VAULT_URL"):
        problems.append("KEY_VAULT_URL is missing: set it to an https:// URL")
    if federated and values["managed_identity_client_id"] is None:
        problems.append("MANAGED_IDENTITY_CLIENT_ID is missing: CLIENT_CREDENTIAL=federated signs in with the "
                        "function's user-assigned managed identity; set it to that identity's client ID")
    values["federated_token_audience"] = values["federated_token_audience"] or federated_audience(
        values["authority_host"])
    _one_state_container(values)
    if values["export_mode"] is ExportMode.DELTA:
        untracked = [p for p in values["user_properties"] if p.lower() in _NOT_IN_DELTA]
        if untracked:
            problems.append(f"USER_PROPERTIES holds {', '.join(untracked)}, which Graph does not track in "
                            "users/delta: remove it or set EXPORT_MODE=full")


def _tenants_and_queue(values: dict[str, Any], problems: list[str]) -> None:
    """With TENANT_IDS, TENANT_ID is not needed (and, if set, must be one of them); the queue must be reachable
    with the export storage's own authentication: a connection string serves both, a blob URI needs its queue URI."""
    tenants: tuple[str, ...] = values["tenant_ids"]
    if not tenants:
        return
    missing = "TENANT_ID is missing"
    if any(p.startswith(missing) for p in problems):
        problems[:] = [p for p in problems if not p.startswith(missing)]
        values["tenant_id"] = ""
    elif values["tenant_id"].lower() not in tenants:
        problems.append(f"TENANT_ID is '{values['tenant_id']}', which TENANT_IDS does not list: with TENANT_IDS "
                        "set, remove TENANT_ID or add it to TENANT_IDS")
    else:
        values["tenant_id"] = ""
    storage: StorageTarget = values["storage"]
    if storage.connection_string and _has_blob_endpoint_only(storage.connection_string):
        problems.append(f"{storage.source} names a BlobEndpoint but no QueueEndpoint: TENANT_IDS fans out through "
                        "a queue of the same account; add QueueEndpoint=... to it")
    if storage.blob_service_uri and not storage.queue_service_uri:
        problems.append(f"EXPORT_STORAGE__queueServiceUri is missing: TENANT_IDS fans out through a queue in the "
                        f"export storage account; set it to the account's queue URI, e.g. "
                        f"{_queue_uri_of(storage.blob_service_uri)}")


def _has_blob_endpoint_only(connection_string: str) -> bool:
    keys = {p.split("=", 1)[0].strip().lower() for p in connection_string.split(";") if "=" in p}
    return "blobendpoint" in keys and "queueendpoint" not in keys


def _queue_uri_of(blob_service_uri: str) -> str:
    """The queue service URI an Azure blob service URI suggests (only a hint in a message)."""
    return blob_service_uri.replace(".blob.", ".queue.", 1)


def _one_state_container(values: dict[str, Any]) -> None:
    """EXPORT_STATE_CONTAINER naming EXPORT_CONTAINER is no other container: None, as when unset."""
    if values["state_container_name"] == values["container"]:
        values["state_container_name"] = None


def _is_placeholder(value: str | None) -> bool:
    """Whether ``value`` is still a placeholder: the all-zero GUID, or ``<...>`` text anywhere in it."""
    value = (value or "").strip()
    return value.lower() == _NIL_GUID or bool(_ANGLE_PLACEHOLDER.search(value))


def _placeholder_problem(name: str) -> str:
    """The problem of a setting still holding a placeholder; the value itself is not repeated."""
    instead = _INSTEAD_OF_PLACEHOLDER.get(name, "your own value, or remove it for the default")
    return f"{name} is still a placeholder (as in local.settings.json.example): replace it with {instead}"


def _safe_url_parts(name: str, value: str, problems: list[str], fix: str) -> SplitResult | None:
    """The parts of a URL setting that is safe to echo; None (with the problem noted) if it is not.

    A user name or password is never echoed, nor is any of the value then (where it ends is
    uncertain); of a query or fragment only what comes before it is shown. ``fix`` says what to do.
    """
    if "@" in value:
        problems.append(f"{name} contains a user name or password (text before '@', not shown): {fix}")
        return None
    if "?" in value or "#" in value:
        problems.append(f"{name} has a query string or fragment after {_url_base(value)!r} (not shown): {fix}")
        return None
    parts = urlsplit(value)
    try:
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        problems.append(f"{name} is '{value}': its port is not a number from 0 to 65535")
        return None
    return parts


def _redacted_url(url: str) -> str:
    """A URL fit for messages and reprs: the query and fragment (SAS tokens) cut, and all of it if
    it has user info (a password may hold any character, so what follows it cannot be trusted)."""
    if "@" in url:
        return "(a URL with a user name or password, not shown)"
    base = _url_base(url)
    return base if base == url else f"{base}?(not shown)"


def _url_base(url: str) -> str:
    """The URL up to its query or fragment."""
    return re.split(r"[?#]", url, maxsplit=1)[0]


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


def _it(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def _unknown_property(name: str) -> str:
    """``'name'``, with a "did you mean" for the closest documented property when one is close."""
    if name.lower().startswith("extension_"):
        return (f"{name!r} (a directory extension is extension_ then the app's appId as 32 hex digits without "
                "dashes, then _ and the name)")
    suggestion = graph_properties.closest(name)
    return f"{name!r} (did you mean {suggestion!r}?)" if suggestion else repr(name)


def _storage_target(env: Mapping[str, str], problems: list[str]) -> StorageTarget:
    """Pick the export storage: EXPORT_STORAGE* first, then the host's AzureWebJobsStorage*."""
    for conn_name, uri_name in (("EXPORT_STORAGE", "EXPORT_STORAGE__blobServiceUri"),
                                (_HOST_STORAGE, _HOST_STORAGE_URI)):
        conn = (env.get(conn_name) or "").strip()
        uri = (env.get(uri_name) or "").strip()
        held = [name for name, value in ((conn_name, conn), (uri_name, uri)) if _is_placeholder(value)]
        if held:
            problems.extend(_placeholder_problem(name) for name in held)
            return StorageTarget()
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
            target = _blob_service_target(uri_name, conn_name, uri, problems)
            queue_name = uri_name.replace("__blobServiceUri", "__queueServiceUri")
            queue = (env.get(queue_name) or "").strip()
            if target.blob_service_uri and queue:
                queue_uri = _service_uri(queue_name, conn_name, queue, problems)
                return dataclasses.replace(target, queue_service_uri=queue_uri)
            return target
    problems.append("EXPORT_STORAGE__blobServiceUri (or EXPORT_STORAGE) is missing: set the export storage "
                    "account's blob URI, or a connection string such as 'UseDevelopmentStorage=true' for Azurite")
    return StorageTarget()


def _blob_service_target(name: str, conn_name: str, uri: str, problems: list[str]) -> StorageTarget:
    """An identity-based target from a blob service URI setting (:func:`_service_uri`)."""
    checked = _service_uri(name, conn_name, uri, problems)
    return StorageTarget() if checked is None else StorageTarget(blob_service_uri=checked, source=name)


def _service_uri(name: str, conn_name: str, uri: str, problems: list[str]) -> str | None:
    """An identity-based service URI setting (blob or queue), without its trailing slash; None if refused.

    The URI is used with DefaultAzureCredential, so it has no place for credentials: user info or a
    query (a SAS token, most likely) is refused without echoing it, and a SAS is pointed to the
    connection string setting, which is never echoed.
    """
    if "@" in uri:
        fix = "remove it; the URI is used with the app's identity, e.g. https://account.blob.core.windows.net"
    else:
        fix = (f"a blob service URI cannot carry a SAS token: remove it and use identity, or set {conn_name} "
               "to a connection string 'BlobEndpoint=https://...;SharedAccessSignature=...' instead")
    parts = _safe_url_parts(name, uri, problems, fix)
    if parts is None:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append(f"{name} is '{uri}': expected a URL such as https://account.blob.core.windows.net")
        return None
    if parts.scheme == "http":
        # azure-storage-blob refuses a token credential over http ("Token credential is only supported with
        # HTTPS"), and a blob service URI is always used with one; a connection string may use http.
        problems.append(f"{name} is an http:// URL, and the export's identity (a token) is sent over https only: "
                        "use https://, or for Azurite set EXPORT_STORAGE to a connection string such as "
                        "'UseDevelopmentStorage=true'")
        return None
    return uri.rstrip("/")


def _looks_like_connection_string(value: str) -> bool:
    pairs = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    keys = {k.strip().lower() for k in pairs}
    if pairs.get("UseDevelopmentStorage", "").lower() == "true":
        return True
    return bool(keys & {"accountname", "blobendpoint"})


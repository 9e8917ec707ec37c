"""Environment variables that look like one of our settings but are not one: a warning line each.

A setting is read by its exact name, so ``EXPORT_CONTAINR=my-exports`` would otherwise be ignored
without a word and the export would go to the default container. A name is reported when it is not
a setting and either starts with one of our settings' prefixes (``EXPORT_``, ``GRAPH_``, ``CLIENT_``,
``CHECKPOINT_``, ``DELTA_``, ``CSV_``, ...) or is a close match to a setting's name. Only names are
ever shown, never a value.

Never reported: what the Functions host, App Service or the Azure SDK read (``AzureWebJobs*``,
``FUNCTIONS_*``, ``WEBSITE_*``, ``APPSETTING_*``, ``AZURE_*``, ``APPLICATIONINSIGHTS_*``), the
identity-connection suffixes Functions documents (``<connection>__credential``, ``__clientId``,
``__queueServiceUri``, ...), and ``GRAPH_EXPORT_*`` (infra/deploy.sh's parameters to the Bicep).

Case: on Windows environment variable names are case-insensitive (App Service on Windows, and
Python's ``os.environ`` there, give them in upper case), so ``Export_Container`` *is*
``EXPORT_CONTAINER`` and nothing is said. Everywhere else (Linux, where Flex Consumption runs, and
macOS) names are case-sensitive: ``export_container`` is not read, and is reported as such.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Collection, Iterable

#: Whether this platform's environment variable names are case-sensitive (all but Windows).
CASE_SENSITIVE = os.name != "nt"

#: Prefixes (upper case) of names others read: the Functions host and App Service, the Azure SDK and
#: Application Insights, and infra/deploy.sh's Bicep parameters (GRAPH_EXPORT_CLIENT_ID, ...).
_NOT_OURS = ("AZUREWEBJOBS", "FUNCTIONS_", "WEBSITE_", "APPSETTING_", "AZURE_", "APPLICATIONINSIGHTS_",
             "GRAPH_EXPORT_")
#: The ``<connection>__<property>`` properties of Functions' identity-based connections (lower case).
_CONNECTION_PROPERTIES = {"credential", "clientid", "managedidentityresourceid", "tenantid", "clientsecret",
                          "certificate", "serviceuri", "blobserviceuri", "queueserviceuri", "tableserviceuri",
                          "accountname"}
#: First words of our settings that other software uses too (HTTP_PROXY is no misspelled
#: HTTP_TIMEOUT_SECONDS): for these settings the first two words are the prefix.
_COMMON_WORDS = {"HTTP", "USER", "KEY"}
#: How many characters (added, dropped or changed, as difflib aligns the names) a name may be from a
#: setting's name to be taken for a misspelling of it: EXPORT_CONTAINR and TENANTID are, ARM_TENANT_ID
#: (Terraform's) and EXPORT_FOLDER (not EXPORT_MODE) are not.
_TYPO_EDITS = 2
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def prefixes(settings: Iterable[str]) -> tuple[str, ...]:
    """The prefixes of our settings' names: each one's first word and ``_`` (its first two words when the
    first is common elsewhere), e.g. ``EXPORT_``, ``CLIENT_``, ``KEY_VAULT_``, ``HTTP_TIMEOUT_``."""
    found: dict[str, None] = {}
    for name in settings:
        words = name.upper().split("_")
        found["_".join(words[:2 if words[0] in _COMMON_WORDS else 1]) + "_"] = None
    return tuple(found)


def misnamed_settings(names: Iterable[str], settings: Collection[str], *,
                      case_sensitive: bool = CASE_SENSITIVE) -> list[str]:
    """One warning line for each of ``names`` (environment variable names) that looks like one of
    ``settings`` but is not read as one, in name order; never a value.

    Pure: the caller logs the lines.
    """
    exact = set(settings)
    by_upper = {s.upper(): s for s in settings}
    ours = prefixes(settings)
    lines = []
    for name in sorted(set(names)):
        upper = name.strip().upper()
        if name in exact or (not case_sensitive and name.upper() in by_upper):
            continue  # read as it is
        shown = name if _PLAIN_NAME.match(name) else repr(name)  # a stray space or newline, made visible
        if upper in by_upper:  # another case (where names are case-sensitive) or stray white space
            hint = " (setting names are case-sensitive)" if name.upper() == upper else ""
            lines.append(f"{shown} is not a setting; did you mean {by_upper[upper]}?{hint}")
            continue
        if upper.startswith(_NOT_OURS):
            continue
        if "__" in name and name.rsplit("__", 1)[1].lower() in _CONNECTION_PROPERTIES:
            continue  # a Functions identity-connection property
        prefixed = upper.startswith(ours)
        resembles = _resembled(upper, by_upper, whole_words=prefixed)
        if resembles:
            lines.append(f"{shown} is not a setting; did you mean {resembles}?")
        elif prefixed:
            lines.append(f"{shown} is not a setting and is ignored: see the README's Settings for the names")
    return lines


def _resembled(upper: str, by_upper: dict[str, str], *, whole_words: bool) -> str | None:
    """The setting ``upper`` (a name in upper case) is most likely a misspelling of, or None.

    A misspelling is at most :data:`_TYPO_EDITS` characters away; with ``whole_words`` (a name with one
    of our prefixes) also a setting's name with a word dropped or added (CLIENT_SECRET for
    CLIENT_SECRET_NAME, GRAPH_RETRIES_PER_PAGE for GRAPH_MAX_RETRIES_PER_PAGE). The closest by difflib wins.
    """
    words = set(upper.split("_")) - {""}
    for candidate in difflib.get_close_matches(upper, by_upper, n=len(by_upper), cutoff=0.6):
        if _edits(upper, candidate) <= _TYPO_EDITS:
            return by_upper[candidate]
        other = set(candidate.split("_")) - {""}
        if whole_words and (words < other or other < words):
            return by_upper[candidate]
    return None


def _edits(a: str, b: str) -> int:
    """Characters added, dropped or changed between ``a`` and ``b`` as difflib aligns them."""
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")

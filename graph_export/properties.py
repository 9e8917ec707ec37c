"""Microsoft Graph v1.0 ``user`` properties, spelled as Graph spells them, and pages made to match.

Graph matches ``$select`` names case-insensitively but answers with its own spelling: asked for
``Department`` it returns ``department``. Everything this export publishes (manifest, JSON Lines keys,
CSV header, delta merge) must use Graph's spelling, so configured names are resolved here first
(:func:`graph_spelling`), and each page is made to hold exactly the selected properties
(:func:`conform`).

Source of the table: the "user resource type" page of the Microsoft Graph v1.0 reference,
https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0 ("Properties" section;
read from its source, ``api-reference/v1.0/resources/user.md`` in microsoftgraph/microsoft-graph-docs-contrib,
commit fef668e772bfce4c8c50063c8c05dbb0f1eb4912), including every property "returned only on
``$select``". Four structural properties that the v1.0 ``$metadata`` has but that version of the page
does not list (``authorizationInfo``, ``customSecurityAttributes``, ``deviceEnrollmentLimit``,
``serviceProvisioningErrors``) were added from the v1.0 model generated from that metadata
(microsoftgraph/msgraph-sdk-python, ``msgraph/generated/models/user.py``). ``deletedDateTime`` and ``id``
come from directoryObject. Relationships (``manager``, ``memberOf``, …) are navigation properties:
``/users`` returns them only with ``$expand``. One of them can be selected: :data:`MANAGER`, exported as
the reference Graph returns, minus annotations: ``{"id": "<the manager's object id>"}``, or null.

The properties that "are only supported when retrieving a single user" come from the "List users"
page, https://learn.microsoft.com/en-us/graph/api/user-list?view=graph-rest-1.0 ("Optional query
parameters"): listing users with them selected fails.

Extensions are not in the table: a directory extension is ``extension_<appId without dashes>_<name>``
(Graph spells the prefix and the 32 hex digits in lower case; the ``<name>`` keeps its registered case,
which only Graph's answer shows), and a schema extension is ``<prefix>_<name>`` (e.g.
``extkvbmkofy_courses``), spelled as registered. Both are returned only when set.
"""

from __future__ import annotations

import difflib
import operator
import re
from itertools import repeat
from typing import Any, Iterable

from .errors import GraphError

DOCS_URL = "https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0"

#: Every v1.0 user property, Graph's spelling, in the documentation's (alphabetical) order.
PROPERTIES: tuple[str, ...] = (
    "aboutMe", "accountEnabled", "ageGroup", "assignedLicenses", "assignedPlans", "authorizationInfo",
    "birthday", "businessPhones", "city", "companyName", "consentProvidedForMinor", "country",
    "createdDateTime", "creationType", "customSecurityAttributes", "deletedDateTime", "department",
    "deviceEnrollmentLimit", "displayName", "employeeHireDate", "employeeId", "employeeLeaveDateTime",
    "employeeOrgData", "employeeType", "externalUserState", "externalUserStateChangeDateTime", "faxNumber",
    "givenName", "hireDate", "id", "identities", "imAddresses", "interests", "isResourceAccount", "jobTitle",
    "lastPasswordChangeDateTime", "legalAgeGroupClassification", "licenseAssignmentStates", "mail",
    "mailboxSettings", "mailNickname", "mobilePhone", "mySite", "officeLocation", "onPremisesDistinguishedName",
    "onPremisesDomainName", "onPremisesExtensionAttributes", "onPremisesImmutableId",
    "onPremisesLastSyncDateTime", "onPremisesProvisioningErrors", "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier", "onPremisesSyncEnabled", "onPremisesUserPrincipalName", "otherMails",
    "passwordPolicies", "passwordProfile", "pastProjects", "postalCode", "preferredDataLocation",
    "preferredLanguage", "preferredName", "provisionedPlans", "proxyAddresses", "refreshTokensValidFromDateTime",
    "responsibilities", "schools", "securityIdentifier", "serviceProvisioningErrors", "showInAddressList",
    "signInActivity", "signInSessionsValidFromDateTime", "skills", "state", "streetAddress", "surname",
    "usageLocation", "userPrincipalName", "userType",
)

#: The collection-valued ones (documented as "… collection"): Graph returns ``[]`` for them when
#: empty, never ``null``, and users/delta omits them when they were never set.
COLLECTION_PROPERTIES: frozenset[str] = frozenset({
    "assignedLicenses", "assignedPlans", "businessPhones", "identities", "imAddresses", "interests",
    "licenseAssignmentStates", "onPremisesProvisioningErrors", "otherMails", "pastProjects", "provisionedPlans",
    "proxyAddresses", "responsibilities", "schools", "serviceProvisioningErrors", "skills",
})

#: Properties Graph returns only when reading one user (``GET /users/{id}``), not when listing users.
SINGLE_USER_ONLY: frozenset[str] = frozenset({
    "aboutMe", "birthday", "hireDate", "interests", "mySite", "pastProjects", "preferredName",
    "responsibilities", "schools", "skills", "mailboxSettings",
})

#: The user's relationships (navigation properties): not properties ``$select`` can list on ``/users``.
RELATIONSHIPS: frozenset[str] = frozenset({
    "activities", "agreementAcceptances", "appRoleAssignments", "authentication", "calendar", "calendarGroups",
    "calendars", "calendarView", "chats", "contactFolders", "contacts", "createdObjects",
    "deviceManagementTroubleshootingEvents", "directReports", "drive", "drives", "employeeExperience", "events",
    "extensions", "followedSites", "inferenceClassification", "insights", "joinedTeams", "licenseDetails",
    "mailFolders", "managedAppRegistrations", "managedDevices", "manager", "memberOf", "messages",
    "oauth2PermissionGrants", "onenote", "onlineMeetings", "outlook", "ownedDevices", "ownedObjects", "people",
    "photo", "photos", "planner", "presence", "print", "registeredDevices", "scopedRoleMemberOf", "settings",
    "teamwork", "todo", "transitiveMemberOf",
})

#: Graph's page size limit when signInActivity is selected (settings.page_size).
SIGN_IN_ACTIVITY_PAGE = 500
#: Selected properties users/delta does not track: delta mode reads them beside the change feed (signins.py).
NOT_IN_DELTA: frozenset[str] = frozenset({"signInActivity"})

#: The one relationship USER_PROPERTIES may name: read with ``$expand=manager($select=id)`` on /users, and
#: as ``manager@delta`` on users/delta.
MANAGER = "manager"

_BY_LOWER: dict[str, str] = {p.lower(): p for p in PROPERTIES}
_RELATIONSHIP_BY_LOWER: dict[str, str] = {p.lower(): p for p in RELATIONSHIPS}
_DIRECTORY_EXTENSION = re.compile(r"^extension_([0-9a-f]{32})_([A-Za-z0-9_]+)$", re.IGNORECASE)
_SCHEMA_EXTENSION = re.compile(r"^(?!extension_)[A-Za-z][A-Za-z0-9]*_[A-Za-z][A-Za-z0-9]*$", re.IGNORECASE)


def graph_spelling(name: str) -> str | None:
    """How Graph spells the user property ``name`` (any case); None if it is not one.

    ``department``, ``Department`` and ``DEPARTMENT`` all give ``department``. A directory extension
    gives ``extension_`` and the app id in lower case, with ``<name>`` as given; a schema extension is
    returned as given; ``Manager`` gives :data:`MANAGER`. Other relationships and other names give None.
    """
    known = _BY_LOWER.get(name.lower())
    if known is not None:
        return known
    if name.lower() == MANAGER:
        return MANAGER
    match = _DIRECTORY_EXTENSION.match(name)
    if match is not None:
        return f"extension_{match.group(1).lower()}_{match.group(2)}"
    if _SCHEMA_EXTENSION.match(name):
        return name
    return None


def is_extension(name: str) -> bool:
    """Whether ``name`` is a directory or schema extension name (whose case Graph decides)."""
    return name.lower() not in _BY_LOWER and name.lower() != MANAGER and graph_spelling(name) is not None


def relationship(name: str) -> str | None:
    """Graph's spelling of the relationship ``name`` (any case), or None if it is not one."""
    return _RELATIONSHIP_BY_LOWER.get(name.lower())


def closest(name: str) -> str | None:
    """The documented property closest to ``name`` (difflib), for a "did you mean"; None if none is close."""
    match = difflib.get_close_matches(name.lower(), _BY_LOWER, n=1, cutoff=0.6)
    return _BY_LOWER[match[0]] if match else None


def absent_value(name: str) -> list[Any] | None:
    """What a selected property Graph did not send stands for: ``[]`` for a collection, else null."""
    return [] if name in COLLECTION_PROPERTIES else None


def conform(users: list[dict[str, Any]], properties: tuple[str, ...]) -> list[dict[str, Any]]:
    """The page's users with exactly ``properties`` as keys, each: what the export publishes.

    A full ``/users`` export with ``$select`` gets every selected property of every user from Graph
    (``null`` or ``[]`` when unset), so the page is returned as it is, the same list, when every user's
    keys are exactly ``properties`` (in one order: a C-level list comparison a user). Otherwise each user that differs
    is rebuilt: keys beyond the selection are dropped, keeping Graph's order for the others, and selected
    properties Graph did not send (extensions and ``signInActivity`` are omitted when unset) follow as
    :func:`absent_value`, in ``properties`` order. A key that equals a selected property but for its
    case (an extension's ``<name>`` configured in another case) is a :class:`GraphError`: the property
    would otherwise be published as null under the configured spelling.

    ``users`` are user objects (dicts, as ``graph.user_ids`` checks); ``properties`` are the
    resolved USER_PROPERTIES. For users/delta items, which omit what never changed, use
    :func:`check_spelling` instead (or this, for a user the snapshot does not hold yet).
    """
    wanted = frozenset(properties)
    if MANAGER in wanted:
        users = [_with_manager_reference(user) for user in users]
    if _same_keys(users, wanted):
        return users
    check_spelling(users, properties)
    out: list[dict[str, Any]] = []
    for user in users:
        if user.keys() == wanted:
            out.append(user)
            continue
        shaped = {k: v for k, v in user.items() if k in wanted}
        if len(shaped) < len(wanted):
            for p in properties:
                if p not in shaped:
                    shaped[p] = absent_value(p)
        out.append(shaped)
    return out


def manager_reference(value: Any) -> dict[str, str] | None:
    """An expanded manager (``{"@odata.type": "#microsoft.graph.user", "id": …}``) as the export keeps it:
    ``{"id": …}``; None for none. Anything else is a GraphError: a user must never be published without
    the manager Graph sent."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return {"id": value["id"]}
    raise GraphError("Graph sent a manager that is not an object with an id: nothing was published.")


def manager_from_delta(entries: Any) -> dict[str, str] | None:
    """What a users/delta ``manager@delta`` annotation says the manager is now: the last entry not marked
    ``@removed`` (a change may list the old manager as removed and the new one), else None (removed)."""
    if not isinstance(entries, list):
        raise GraphError("Graph sent a manager@delta that is not a list: nothing was published.")
    current = [e for e in entries if not (isinstance(e, dict) and "@removed" in e)]
    return manager_reference(current[-1]) if current else None


def _with_manager_reference(user: dict[str, Any]) -> dict[str, Any]:
    value = user.get(MANAGER)
    if value is None:
        return user
    return {**user, MANAGER: manager_reference(value)}


def _same_keys(users: list[dict[str, Any]], wanted: frozenset[str]) -> bool:
    """Whether every user has exactly the keys ``wanted``, in the first user's order.

    Graph sends every user of a page with the same keys in the same order, and orjson shares the key
    strings, so comparing key lists (identity first) is the cheapest exact test: about 0.16 µs a
    user of 16 properties, a sixth of what parsing the page costs. Any other page takes the slow path.
    """
    if not users or users[0].keys() != wanted:
        return not users
    first = list(users[0])
    return all(map(operator.eq, map(list, users), repeat(first)))


def check_spelling(users: Iterable[dict[str, Any]], properties: tuple[str, ...]) -> None:
    """GraphError if a user has a key spelled like a selected property in another case.

    Cheap when nothing is off: a user whose keys are all selected properties costs one C-level
    subset test. Keys that match no selected property at all (``@removed``, annotations, properties
    beyond ``$select``) are not this function's business.
    """
    wanted = frozenset(properties)
    lowered: dict[str, str] | None = None
    for user in users:
        if user.keys() <= wanted:
            continue
        if lowered is None:
            lowered = {p.lower(): p for p in properties}
        for key in user:
            if key not in wanted:
                configured = lowered.get(key.lower())
                if configured is not None:
                    raise GraphError(f"Graph spells USER_PROPERTIES' {configured!r} as {key!r}: set USER_PROPERTIES "
                                     "to Graph's spelling; nothing was published.")

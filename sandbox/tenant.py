"""Synthetic directory data: deterministic users shaped like Graph v1.0 ``user`` resources.

``make_user(i)`` is a pure function of ``i`` (and the tenant domain), so the Graph look-alike never
stores users: it computes the page it serves, and tests compute exactly what a full export must
contain. The mix mirrors real tenants: non-ASCII names, ~10% B2B guests with ``#EXT#`` UPNs, ~5%
disabled accounts, hybrid-synced and cloud-only users, and properties that are simply null.
It is cheap (table look-ups and one uuid5) because benchmarks call it a million times.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from graph_export import properties as graph_properties

TENANT_DOMAIN = "contoso.onmicrosoft.com"

#: Namespace for user ids, so ids are stable across runs and machines.
_ID_NAMESPACE = uuid.UUID("6f1c1d5e-2f43-4a55-9c57-3d1f1f0b7a10")
_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
#: The home tenant's user id namespace (the default of :func:`user_id` and :func:`make_user`).
HOME_NAMESPACE = _ID_NAMESPACE_BYTES

#: Graph's default property set for ``GET /users`` without ``$select``, in Graph's order.
DEFAULT_PROPERTIES: tuple[str, ...] = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)

#: Every property make_user() fills in.
USER_PROPERTIES: tuple[str, ...] = (
    "id", "userPrincipalName", "displayName", "givenName", "surname", "mail", "accountEnabled",
    "userType", "createdDateTime", "jobTitle", "department", "companyName", "employeeId",
    "officeLocation", "usageLocation", "onPremisesSyncEnabled", "businessPhones", "mobilePhone",
    "preferredLanguage", "country", "city",
)



@dataclass(frozen=True)
class ExtensionProperty:
    """A directory extension definition, as Graph's ``extensionProperty`` resource describes one.

    Registered on an application (``GET /applications(appId='…')/extensionProperties``); its name is
    ``extension_<that appId without dashes>_<name>``. Users carry it only where it is set: ``/users``
    omits it otherwise, even when ``$select`` names it.
    """

    id: str
    name: str
    data_type: str          # Binary, Boolean, DateTime, Integer, LargeInteger or String
    multi_valued: bool
    targets: tuple[str, ...]
    app_id: str
    app_name: str
    synced_from_on_premises: bool = False

    def resource(self) -> dict[str, Any]:
        return {"id": self.id, "deletedDateTime": None, "appDisplayName": self.app_name, "dataType": self.data_type,
                "isMultiValued": self.multi_valued, "isSyncedFromOnPremises": self.synced_from_on_premises,
                "name": self.name, "targetObjects": list(self.targets)}


#: The HR sync tool whose app registration owns most of the tenant's directory extensions.
HR_APP_ID = "8a6f1b2c-3d4e-4f50-9a1b-2c3d4e5f6a7b"
#: Microsoft Entra Connect's "Tenant Schema Extension App": extensions synced from on-premises AD.
SCHEMA_APP_ID = "5b1e7c3d-9f20-4a8e-b6c1-0d2e3f4a5b6c"
_HR = f"extension_{HR_APP_ID.replace('-', '')}_"
_SCHEMA = f"extension_{SCHEMA_APP_ID.replace('-', '')}_"
EXTENSIONS: tuple[ExtensionProperty, ...] = (
    ExtensionProperty("0d3c5a1e-7b2f-4c8d-9e0a-1b2c3d4e5f60", _HR + "costCenter", "String", False, ("User",),
                      HR_APP_ID, "Contoso HR Sync"),
    ExtensionProperty("1e4d6b2f-8c30-4d9e-af1b-2c3d4e5f6071", _HR + "hireCohort", "Integer", False, ("User",),
                      HR_APP_ID, "Contoso HR Sync"),
    ExtensionProperty("2f5e7c30-9d41-4eaf-b02c-3d4e5f607182", _HR + "badgeIds", "String", True, ("User",),
                      HR_APP_ID, "Contoso HR Sync"),
    ExtensionProperty("306f8d41-ae52-4fb0-813d-4e5f60718293", _HR + "budgetOwner", "String", False, ("Group",),
                      HR_APP_ID, "Contoso HR Sync"),
    ExtensionProperty("417a9e52-bf63-40c1-924e-5f60718293a4", _SCHEMA + "employeeNumber", "String", False,
                      ("User",), SCHEMA_APP_ID, "Tenant Schema Extension App", synced_from_on_premises=True),
)
#: The extensions a user can carry, by Graph's spelling; make_user sets them on some members.
USER_EXTENSIONS: tuple[str, ...] = tuple(e.name for e in EXTENSIONS if "User" in e.targets)
COST_CENTER, HIRE_COHORT, BADGE_IDS, EMPLOYEE_NUMBER = USER_EXTENSIONS
#: Multi-valued user extensions (Graph answers a JSON array for them when set).
MULTI_VALUED_EXTENSIONS = frozenset(e.name for e in EXTENSIONS if e.multi_valued and "User" in e.targets)
_EXTENSION_NAMES = frozenset(USER_EXTENSIONS)

#: The relationship users/delta can $select and /users can $expand; a record holds the manager's id under it.
MANAGER = "manager"

#: Other real v1.0 user properties a client may $select; the sandbox returns them as null / [].
#: (Graph answers 400 only for names that are not properties of microsoft.graph.user at all.)
OTHER_PROPERTIES: dict[str, Any] = {
    "ageGroup": None, "creationType": None, "employeeHireDate": None, "employeeType": None,
    "externalUserState": None, "faxNumber": None, "imAddresses": [], "lastPasswordChangeDateTime": None,
    "mailNickname": None, "onPremisesDistinguishedName": None, "onPremisesDomainName": None,
    "onPremisesImmutableId": None, "onPremisesLastSyncDateTime": None,
    "onPremisesSamAccountName": None, "onPremisesSecurityIdentifier": None,
    "onPremisesUserPrincipalName": None, "otherMails": [], "passwordPolicies": None,
    "postalCode": None, "proxyAddresses": [], "securityIdentifier": None, "showInAddressList": None,
    "signInActivity": None, "state": None, "streetAddress": None,
}

#: The rest of Graph's v1.0 user properties (the table in graph_export.properties, taken from Graph's
#: documentation): $select may name them like any other, and the sandbox never fills them, so they are
#: null / [] unless a test sets them. The ones Graph returns only for a single user are not here: the
#: sandbox lists users only, and refuses them as Graph does (see sandbox.graph).
UNMODELLED_PROPERTIES: dict[str, Any] = {
    p: graph_properties.absent_value(p) for p in graph_properties.PROPERTIES
    if p not in USER_PROPERTIES and p not in OTHER_PROPERTIES and p not in graph_properties.SINGLE_USER_ONLY
}
#: What a property no record holds reads as (null, or [] for collections), for every property but USER_PROPERTIES.
_DEFAULTS: dict[str, Any] = {**OTHER_PROPERTIES, **UNMODELLED_PROPERTIES}

#: Case-insensitive name -> Graph's spelling, for $select (Graph matches $select names
#: case-insensitively and answers with its own spelling).
CANONICAL: dict[str, str] = {p.lower(): p for p in (*USER_PROPERTIES, *OTHER_PROPERTIES, *UNMODELLED_PROPERTIES,
                                                     *USER_EXTENSIONS)}
#: Properties Graph refuses when listing users (lower case -> Graph's spelling).
SINGLE_USER_ONLY: dict[str, str] = {p.lower(): p for p in graph_properties.SINGLE_USER_ONLY}

# (display form, ASCII form used in UPNs and mail addresses)
_GIVEN: tuple[tuple[str, str], ...] = (
    ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("José", "jose"), ("Anna", "anna"), ("Mohammed", "mohammed"),
    ("Siobhán", "siobhan"), ("Björn", "bjorn"), ("Chloé", "chloe"), ("Wei", "wei"), ("Priya", "priya"),
    ("Jürgen", "jurgen"), ("Noah", "noah"), ("Aoife", "aoife"), ("François", "francois"),
    ("Olivia", "olivia"), ("Mateus", "mateus"), ("Søren", "soren"), ("Emma", "emma"),
    ("Dvořák", "dvorak"), ("Yuki", "yuki"), ("Ana", "ana"), ("Liam", "liam"), ("Małgorzata", "malgorzata"),
)
_SURNAME: tuple[tuple[str, str], ...] = (
    ("Müller", "muller"), ("李", "li"), ("García", "garcia"), ("Smith", "smith"), ("Nowak", "nowak"),
    ("O'Brien", "obrien"), ("Øvergård", "overgard"), ("Nguyễn", "nguyen"), ("Kowalczyk", "kowalczyk"),
    ("Jones", "jones"), ("Fernández", "fernandez"), ("Çelik", "celik"), ("Williams", "williams"),
    ("Dubois", "dubois"), ("Schäfer", "schafer"), ("Patel", "patel"), ("Sato", "sato"),
    ("Johansson", "johansson"), ("Brown", "brown"), ("Novák", "novak"), ("Kim", "kim"),
    ("Rossi", "rossi"), ("Wójcik", "wojcik"), ("Ahmed", "ahmed"), ("Taylor", "taylor"),
    ("王", "wang"), ("Lefèvre", "lefevre"), ("Murphy", "murphy"), ("Silva", "silva"),
)
_JOBS = ("Software Engineer", "Account Manager", "HR Business Partner", "Data Analyst",
         "Sales Representative", "Product Owner", "Support Engineer", "Financial Controller",
         "Marketing Specialist", "Chef de projet", "Entwickler", "Ingeniera de datos")
_DEPARTMENTS = ("Engineering", "Sales", "Human Resources", "Finance", "Marketing", "Support",
                "Operations", "Legal", "Research & Development")
# (officeLocation, city, country, usageLocation, preferredLanguage, phone prefix)
_SITES = (
    ("Redmond B40/1125", "Redmond", "United States", "US", "en-US", "+1 425 555 "),
    ("München Parkring 4", "München", "Germany", "DE", "de-DE", "+49 89 3176 "),
    ("Warszawa Al. Jerozolimskie 195", "Warszawa", "Poland", "PL", "pl-PL", "+48 22 594 "),
    ("Madrid Paseo del Club Deportivo", "Madrid", "Spain", "ES", "es-ES", "+34 91 391 "),
    ("São Paulo Av. Pres. Juscelino", "São Paulo", "Brazil", "BR", "pt-BR", "+55 11 4706 "),
    ("北京 中关村", "北京", "China", "CN", "zh-CN", "+86 10 5917 "),
    ("Dublin One Microsoft Place", "Dublin", "Ireland", "IE", "en-IE", "+353 1 706 "),
    ("Paris Issy-les-Moulineaux", "Paris", "France", "FR", "fr-FR", "+33 1 5775 "),
)
_GUEST_DOMAINS = ("fabrikam.com", "northwindtraders.com", "adatum.com", "gmail.com", "outlook.com")

# createdDateTime spreads over ~6 years starting 2019-01-01T00:00:00Z.
_CREATED_BASE = 1546300800
_CREATED_SPAN = 6 * 365 * 86400


def id_namespace(tenant_id: str) -> bytes:
    """The user id namespace of a customer tenant: its own, derived from its tenant id, so no user id of one
    tenant is a user id of another (the home tenant keeps the default namespace, and its ids as they were)."""
    return uuid.uuid5(_ID_NAMESPACE, f"tenant:{tenant_id.lower()}").bytes


def user_id(i: int, namespace: bytes = _ID_NAMESPACE_BYTES) -> str:
    """The deterministic object id of user ``i``: ``str(uuid.uuid5(namespace, str(i)))``, by default in the
    home tenant's namespace (:func:`id_namespace` gives a customer tenant's).

    Computed directly from SHA-1 because it is about twice as fast as building UUID objects, and
    this runs once per served user.
    """
    h = bytearray(hashlib.sha1(namespace + str(i).encode("ascii")).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def make_user(i: int, tenant_domain: str = TENANT_DOMAIN, namespace: bytes = _ID_NAMESPACE_BYTES) -> dict[str, Any]:
    """User number ``i`` (0-based) with every property in :data:`USER_PROPERTIES`, in that order, then its
    manager's id as ``manager`` if it has one (:func:`manager_index`; Graph serves it only as a
    relationship) and the directory extensions set on it (:func:`extensions_of`).

    Its id and its manager's are in ``namespace`` (:func:`user_id`). Proportions: ``i % 10 == 3`` is a guest
    (10%); ``i % 40`` in (7, 13) is disabled (5%); members are hybrid-synced when ``i % 3 == 0`` (onPremisesSyncEnabled true) and cloud-only otherwise (null).
    """
    given, given_ascii = _GIVEN[i % len(_GIVEN)]
    surname, surname_ascii = _SURNAME[(i // len(_GIVEN) + i * 7) % len(_SURNAME)]
    office, city, country, usage, language, phone_prefix = _SITES[(i * 5 + i // 97) % len(_SITES)]
    local = f"{given_ascii}.{surname_ascii}{i}"
    guest = i % 10 == 3
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime(_CREATED_BASE + (i * 2654435761) % _CREATED_SPAN))
    if guest:
        home = _GUEST_DOMAINS[(i // 10) % len(_GUEST_DOMAINS)]
        return {
            "id": user_id(i, namespace),
            "userPrincipalName": f"{local}_{home}#EXT#@{tenant_domain}",
            "displayName": f"{given} {surname} (Guest)" if i % 4 else f"{given_ascii}.{surname_ascii}{i}@{home}",
            "givenName": given if i % 4 else None,
            "surname": surname if i % 4 else None,
            "mail": f"{local}@{home}",
            "accountEnabled": i % 40 != 13,
            "userType": "Guest",
            "createdDateTime": created,
            "jobTitle": None,
            "department": None,
            "companyName": None,
            "employeeId": None,
            "officeLocation": None,
            "usageLocation": None,
            "onPremisesSyncEnabled": None,
            "businessPhones": [],
            "mobilePhone": None,
            "preferredLanguage": None,
            "country": None,
            "city": None,
        }
    synced = i % 3 == 0
    user = {
        "id": user_id(i, namespace),
        "userPrincipalName": f"{local}@{tenant_domain}",
        "displayName": f"{given} {surname}",
        "givenName": given,
        "surname": surname,
        "mail": None if i % 17 == 5 else f"{local}@{tenant_domain}",
        "accountEnabled": i % 40 != 7,
        "userType": "Member",
        "createdDateTime": created,
        "jobTitle": None if i % 11 == 4 else _JOBS[i % len(_JOBS)],
        "department": None if i % 13 == 6 else _DEPARTMENTS[(i // 3) % len(_DEPARTMENTS)],
        "companyName": "Contoso Ltd." if i % 9 else None,
        "employeeId": f"E{i:07d}" if synced else None,
        "officeLocation": office if i % 8 else None,
        "usageLocation": usage,
        "onPremisesSyncEnabled": True if synced else None,
        "businessPhones": [f"{phone_prefix}{i % 10000:04d}"] if i % 6 else [],
        "mobilePhone": f"{phone_prefix}{(i * 31) % 10000:04d}" if i % 3 == 1 else None,
        "preferredLanguage": language if i % 7 else None,
        "country": country,
        "city": city,
    }
    manager = manager_index(i)
    if manager is not None:
        user[MANAGER] = user_id(manager, namespace)
    if i % 4 == 1:
        user.update(extensions_of(i, synced))
    return user


def manager_index(i: int) -> int | None:
    """The index of member ``i``'s manager in the computed tenant: user ``i // 8``, a member too, for every
    member from 8 on but one in nine (``i % 9 == 0``: nobody's report). Guests have none."""
    manager = i // 8
    if i < 8 or i % 9 == 0 or i % 10 == 3 or manager % 10 == 3:
        return None
    return manager


def extensions_of(i: int, synced: bool) -> dict[str, Any]:
    """The directory extensions member ``i`` carries (only members with ``i % 4 == 1``: a quarter of them).

    Every one of them has a cost centre; every other one a hire cohort (an Integer); every fourth one
    badge ids (multi-valued); the hybrid-synced ones their on-premises employee number.
    """
    out: dict[str, Any] = {COST_CENTER: f"CC-{(i // 4) % 40:03d}"}
    if i % 8 == 1:
        out[HIRE_COHORT] = 2015 + i % 11
    if i % 16 == 1:
        out[BADGE_IDS] = [f"B{i:07d}", f"B{i + 1:07d}"]
    if synced:
        out[EMPLOYEE_NUMBER] = f"{i:08d}"
    return out


def canonical_properties(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Map requested names to Graph's spelling (deduplicated, in order); also return unknowns (as given)."""
    known: list[str] = []
    unknown: list[str] = []
    for name in names:
        canonical = CANONICAL.get(name.lower())
        if canonical is None:
            unknown.append(name)
        elif canonical not in known:
            known.append(canonical)
    return known, unknown


def select(user: Mapping[str, Any], properties: Sequence[str] | None = None) -> dict[str, Any]:
    """Exactly the requested properties in the requested order (Graph's default set if None), but for
    directory extensions the user does not have set: Graph leaves those out."""
    props = DEFAULT_PROPERTIES if properties is None else properties
    return {p: user[p] if p in user else _copy_default(p) for p in props
            if p not in _EXTENSION_NAMES or user.get(p) not in (None, [])}


def manager_reference(manager_id: str) -> dict[str, Any]:
    """A manager as Graph returns one, expanded or in ``manager@delta``."""
    return {"@odata.type": "#microsoft.graph.user", "id": manager_id}


def _copy_default(prop: str) -> Any:
    value = _DEFAULTS[prop]
    return [] if isinstance(value, list) else value


def default_value(prop: str) -> Any:
    """What property ``prop`` (Graph's spelling) reads as for a record without it: null, or a new []."""
    return _copy_default(prop) if prop in _DEFAULTS else None


def is_extension(prop: str) -> bool:
    """Whether ``prop`` (Graph's spelling) is one of the tenant's user extensions."""
    return prop in _EXTENSION_NAMES

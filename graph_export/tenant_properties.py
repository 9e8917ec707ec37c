"""What USER_PROPERTIES can select in one tenant: Graph's user properties that ``/users`` lists, and the
tenant's directory extensions for users (``python -m graph_export properties``).

Directory extensions are registered on applications, and Graph has two ways to list them
(https://learn.microsoft.com/en-us/graph/api/directoryobject-getavailableextensionproperties and
https://learn.microsoft.com/en-us/graph/api/application-list-extensionproperty):

- ``POST /directoryObjects/getAvailableExtensionProperties``: every app's, in one answer; needs the
  Directory.Read.All application permission, and has a known issue: in a tenant with more than 1,000
  service principals it answers an empty list.
- ``GET /applications(appId='…')/extensionProperties``: one app's (the HR tool's, or Entra Connect's
  "Tenant Schema Extension App"); needs Application.Read.All. Used when ``--app`` names the apps.

Neither permission is needed to *export* extensions: ``/users`` returns them with User.Read.All.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import requests

from .errors import ConfigError, GraphError
from .graph import GraphUsers
from .graph_messages import graph_error
from .properties import PROPERTIES, SINGLE_USER_ONLY

#: Directory.Read.All and Application.Read.All, Microsoft Graph application roles (for the advice lines).
DIRECTORY_READ_ALL_ROLE_ID = "7ab1d382-f21e-4acd-a863-ba3e13f7da61"
APPLICATION_READ_ALL_ROLE_ID = "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30"
_APP_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: Listable, but only to an app with AuditLog.Read.All in a tenant with an Entra ID P1/P2 licence.
NEEDS_AUDIT_LOG = frozenset({"signInActivity"})


@dataclass(frozen=True)
class DirectoryExtension:
    """One directory extension users can carry, as Graph's ``extensionProperty`` describes it."""

    name: str
    data_type: str
    multi_valued: bool
    app_name: str
    synced_from_on_premises: bool

    @classmethod
    def parse(cls, item: Any) -> "DirectoryExtension | None":
        """The extension ``item`` describes if it targets users; None for another object type's."""
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise GraphError("Graph listed a directory extension without a name: nothing can be shown.")
        if "User" not in (item.get("targetObjects") or []):
            return None
        return cls(name=item["name"], data_type=str(item.get("dataType") or "?"),
                   multi_valued=bool(item.get("isMultiValued")), app_name=str(item.get("appDisplayName") or ""),
                   synced_from_on_premises=bool(item.get("isSyncedFromOnPremises")))

    def describe(self) -> str:
        kind = f"{self.data_type}, multi-valued" if self.multi_valued else self.data_type
        origin = f"{self.app_name}, synced from on-premises" if self.synced_from_on_premises else self.app_name
        return f"{self.name}  {kind}  ({origin})"


def listable_properties() -> tuple[str, ...]:
    """Graph's v1.0 user properties that a ``/users`` listing can select (the single-user ones cannot)."""
    return tuple(p for p in PROPERTIES if p not in SINGLE_USER_ONLY)


def user_extensions(graph: GraphUsers, app_ids: Sequence[str] = ()) -> list[DirectoryExtension]:
    """The tenant's directory extensions for users: every app's, or only those of ``app_ids``; by name."""
    for app_id in app_ids:
        if not _APP_ID.match(app_id):
            raise ConfigError(f"--app {app_id!r} is not an application (client) ID: give the GUID of the app "
                              "registration that owns the extensions.")
    if app_ids:
        items = [item for app_id in app_ids for item in _app_extensions(graph, app_id)]
    else:
        items = _values(graph.call("POST", "/v1.0/directoryObjects/getAvailableExtensionProperties", json_body={},
                                   what="the tenant's directory extensions"),
                        "getAvailableExtensionProperties", _DIRECTORY_READ_ALL)
    found = [e for e in map(DirectoryExtension.parse, items) if e is not None]
    return sorted({e.name: e for e in found}.values(), key=lambda e: e.name.lower())


def report(extensions: list[DirectoryExtension], app_ids: Sequence[str]) -> str:
    """What ``properties`` prints: the listable properties, then the extensions (or why there are none)."""
    lines = ["User properties /users can list (Graph v1.0; USER_PROPERTIES takes any of them):"]
    lines += [f"  {p}" + ("  (needs AuditLog.Read.All and an Entra ID P1/P2 licence)" if p in NEEDS_AUDIT_LOG else "")
              for p in listable_properties()]
    source = f"owned by {', '.join(app_ids)}" if app_ids else "of every app"
    lines.append(f"Directory extensions for users in this tenant ({source}):")
    lines += [f"  {e.describe()}" for e in extensions]
    if not extensions:
        lines.append("  none" + ("" if app_ids else
                                 ". In a tenant with more than 1,000 service principals Graph lists none this way "
                                 "(a known issue of getAvailableExtensionProperties): name the apps that own them "
                                 "with --app <appId>."))
    return "\n".join(lines)


_DIRECTORY_READ_ALL = (f"needs the Microsoft Graph Directory.Read.All *application* permission with admin consent "
                       f"(role {DIRECTORY_READ_ALL_ROLE_ID}); grant it, or name the app registrations that own the "
                       "extensions with --app <appId>, which needs Application.Read.All instead")
_APPLICATION_READ_ALL = (f"needs the Microsoft Graph Application.Read.All *application* permission with admin "
                         f"consent (role {APPLICATION_READ_ALL_ROLE_ID}), or Directory.Read.All")


def _app_extensions(graph: GraphUsers, app_id: str) -> list[Any]:
    response = graph.call("GET", f"/v1.0/applications(appId='{app_id}')/extensionProperties",
                          what=f"the directory extensions of app {app_id}")
    if response.status_code == 404:
        raise ConfigError(f"No application with appId {app_id} in this tenant: check --app (the owning app "
                          "registration's Application (client) ID).")
    return _values(response, f"the extensions of app {app_id}", _APPLICATION_READ_ALL)


def _values(response: requests.Response, listing: str, permission: str) -> list[Any]:
    """The ``value`` of a 200 answer; GraphError with one line for anything else."""
    with response:
        if response.status_code == 403:
            raise GraphError(f"Graph refused to list {listing} (HTTP 403): listing directory extensions "
                             f"{permission}.")
        if response.status_code != 200:
            code, message = graph_error(response)
            raise GraphError(f"Graph failed to list {listing} with HTTP {response.status_code} "
                             f"({code + ': ' if code else ''}{message}): check the message and run again.")
        try:
            values = response.json().get("value")
        except (ValueError, AttributeError):
            values = None
    if not isinstance(values, list):
        raise GraphError(f"Graph's answer listing {listing} has no 'value' list: nothing can be shown.")
    return values

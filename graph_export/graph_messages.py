"""The operator's line for a Graph answer that is not a page: a failed status, or a redirect.

Each names the status, Graph's error code and request id, and the setting or permission to fix;
never a URL beyond its origin (a nextLink carries a skiptoken) nor anything from the request.
"""

from __future__ import annotations

import json
from urllib.parse import urljoin

import requests

from .errors import first_line, origin_of
from .transport import RETRY_STATUSES

USER_READ_ALL_ROLE_ID = "df021288-bdef-4463-88db-98f22de89214"  # Microsoft Graph application role
#: AuditLog.Read.All, the application role Graph requires (with an Entra ID P1/P2 licence) for signInActivity.
AUDIT_LOG_READ_ALL_ROLE_ID = "b0afded3-3588-46d8-8b3d-9842eff778da"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def describe_redirect(response: requests.Response, url: str, what: str) -> str:
    """One line for a 3xx to ``what`` (``page 3``): the status and where it pointed, as an origin only (a URL may
    carry secrets)."""
    location = response.headers.get("Location")
    try:
        resolved = urljoin(url, location) if location else None
    except ValueError:
        resolved = location
    target = f"a redirect to {origin_of(resolved)}" if resolved else "a redirect without a Location"
    request_id = response.headers.get("request-id")
    where = f" (request-id {request_id})" if request_id else ""
    return (f"Graph answered {what} with HTTP {response.status_code}, {target}: refused, as Graph is only asked "
            f"at GRAPH_ENDPOINT and a redirect is never followed, and nothing was published; check "
            f"that GRAPH_ENDPOINT is the Graph root (e.g. https://graph.microsoft.com) and any proxy in "
            f"between{where}.")


def describe_graph_failure(response: requests.Response, page_number: int) -> str:
    """One actionable line for a failed page: the status, Graph's error code, what to do, request id."""
    code, message = graph_error(response)
    request_id = response.headers.get("request-id")
    where = f" (request-id {request_id})" if request_id else ""
    status = response.status_code
    if status == 403 and code == "Authorization_RequestDenied":
        advice = ("grant the app registration the Microsoft Graph User.Read.All *application* permission and "
                  f"admin consent (az ad app permission add --id <CLIENT_ID> --api {GRAPH_APP_ID} "
                  f"--api-permissions {USER_READ_ALL_ROLE_ID}=Role; az ad app permission admin-consent "
                  "--id <CLIENT_ID>)")
    elif status == 403 and code == "Authentication_MSGraphPermissionMissing":
        advice = ("USER_PROPERTIES selects signInActivity, which Graph serves only to an app with the Microsoft Graph "
                  "AuditLog.Read.All *application* permission and admin consent, in a tenant with an Entra ID P1 or P2 "
                  f"licence: grant it (az ad app permission add --id <CLIENT_ID> --api {GRAPH_APP_ID} "
                  f"--api-permissions {AUDIT_LOG_READ_ALL_ROLE_ID}=Role, then admin consent; infra/deploy.sh does "
                  "both when USER_PROPERTIES selects signInActivity) or remove signInActivity from USER_PROPERTIES")
    elif status == 403 and code == "Authentication_RequestFromNonPremiumTenantOrB2CTenant":
        advice = ("USER_PROPERTIES selects signInActivity, which Graph serves only in a tenant with an Entra ID P1 or "
                  "P2 licence (and to an app with AuditLog.Read.All): license the tenant or remove signInActivity "
                  "from USER_PROPERTIES")
    elif status == 401:
        advice = ("Graph did not accept the access token: check that GRAPH_ENDPOINT and AUTHORITY_HOST belong "
                  "to the same cloud")
    elif status == 400:
        advice = ("Graph rejected the query: check USER_PROPERTIES for misspelt or unsupported properties "
                  "(python -m graph_export properties lists what this tenant can select)")
    elif status in RETRY_STATUSES:
        advice = ("Graph kept failing after the retries allowed (GRAPH_MAX_RETRIES_PER_PAGE / "
                  "GRAPH_MAX_RETRIES_PER_RUN): nothing was published; the next run resumes from the last checkpoint")
    else:
        advice = "nothing was published; check the message and run again"
    detail = f"{code}: {message}" if code else message
    return f"Graph failed listing users on page {page_number} with HTTP {status} ({detail}): {advice}{where}."


def graph_error(response: requests.Response) -> tuple[str, str]:
    """Graph's error code and the first line of its message (or the HTTP reason when the body is not Graph's)."""
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), first_line(str(error.get("message") or ""), 200)
    except (ValueError, AttributeError, json.JSONDecodeError):
        return "", first_line(response.reason or "", 200)

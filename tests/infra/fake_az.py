"""A stand-in for the az CLI (2.91) for the deploy.sh and README tests: records every call and answers like
the real CLI from a small simulated Azure + Entra ID kept in ``$FAKE_AZ_HOME/state.json``.

Runs in the infrastructure virtualenv's Python (``.venv-iac``), which has ``jmespath``, the library az
evaluates ``--query`` with: as one server process for the whole test session (``--serve SOCKET``), which the
`az` on the tests' PATH (fake_az_client.py) sends each call to — a deploy.sh run makes dozens, and starting
an interpreter with jmespath for each would cost most of the suite's time — or, for one call by hand,
``FAKE_AZ_HOME=... python fake_az.py <az arguments>``. What it copies from the real CLI (azure-cli 2.91
source and ``--help``):

- the options each command accepts, their aliases and which are required: an unknown option, a missing
  value or a missing required option fails with exit 2 as az's parser does;
- output: ``--query`` evaluated by jmespath on the real response shapes, then ``-o json`` (default),
  ``-o tsv`` (knack's rules: a list prints one item per line, a dict's values tab-separated in key order,
  ``null`` inside a list prints ``None``, a ``null`` result prints nothing) or ``-o none``;
- exit codes: 0, 1 (service error), 2 (usage error), 3 (resource not found);
- sign-in: ``account show`` as a user, a service principal (``user.name`` is its app id) or a managed identity
  (``user.name`` is ``systemAssignedIdentity``, which names no object id; ``ad signed-in-user show`` fails for
  both); ``account get-access-token`` returns a JWT whose ``oid`` claim is the caller's object id;
- clouds: ``cloud show`` with the real endpoints of AzureCloud, AzureUSGovernment and AzureChinaCloud;
  ``rest`` sends a token only to the active cloud's Microsoft Graph (any other host: 401), the consent
  ``POST .../servicePrincipals/{graph}/appRoleAssignedTo`` checks its body and refuses a duplicate;
  ``ad app permission admin-consent`` works only for a user in the public cloud (an internal portal API);
- behaviours deploy.sh relies on: ``ad app create`` and ``ad app update`` take ``--sign-in-audience`` only as one of
  az's four choices (another is a usage error, exit 2), a new app without one is ``AzureADMyOrg`` (Graph's default),
  and ``update`` prints nothing (its PATCH answers 204); ``ad app list --display-name`` matches names that *start with* it,
  ``--filter "displayName eq '…'"`` exactly; ``ad app credential reset`` returns only
  ``{appId, password, tenant}`` (no key id), refuses ``--years`` with ``--end-date``, drops the other
  passwords without ``--append``, and with ``--cert NAME --keyvault VAULT`` registers that certificate's
  public key with the key credential's end clamped to the certificate's expiry;
  ``keyvault secret set --file /dev/stdin`` stores whatever arrives, an empty string included;
  ``keyvault secret set --expires`` takes only ``Y-m-d'T'H:M:S'Z'`` and the shorter forms az accepts;
  ``keyvault secret show`` of a disabled secret is refused (SecretDisabled), of a missing one exits 3;
  ``storage container immutability-policy show`` prints nothing when the container has no policy (az's
  transform drops a period of 0) and the policy flattened (``state``, ``immutabilityPeriodSinceCreationInDays``,
  a quoted ``etag``) otherwise; ``lock``, ``extend`` and ``delete`` need ``--if-match`` with that etag (or ``*``),
  ``extend`` only a locked policy and never shorter, ``delete`` only an unlocked one; a deployment with
  ``exportImmutabilityDays`` > 0 writes an unlocked policy unless ``exportImmutabilityLocked``, and fails
  on a locked one (ARM's only write to a locked policy is ``extend``; the error text is an approximation);
  a deployment records ``properties.parameters`` as main.bicepparam makes them from the ``GRAPH_EXPORT_*``
  variables (``readEnvironmentVariable`` with its fallback, ``== 'true'``, ``int(...)``), refusing what main.bicep's
  ``@allowed``/``@minValue``/``@maxValue`` refuse for the export settings, and ``deployment group show`` returns them;
  ``group delete`` soft-deletes the deployment's vault (purge protection: name and contents kept), which
  ``keyvault list-deleted`` / ``show-deleted`` list and ``recover`` brings back into its existing original
  group, and a deployment that would create a vault of that name fails with Key Vault's ConflictError text
  ("A vault with the same name already exists in deleted state"; the wrapping deployment error is short);
  ``resource show --ids <vault>/secrets/<name>`` shows a secret's attributes (Unix times) without its value,
  RBAC or network checks (the control plane); ``ad app credential reset`` makes a new value each time, which
  Entra ID's token endpoint (``rest --method POST <login>/<tenant>/oauth2/v2.0/token``, a form body, here from
  ``--body @-``: az reads ``@-`` from stdin) accepts only while it is a current password of the app;
  ``role assignment create --assignee`` resolves a UPN, a service principal's app id or an object id as
  azure-cli's _resolve_object_id_and_type does, or fails with its message;
  ``keyvault certificate create --policy @file`` reads camelCase JSON (keys converted to snake case as
  az does); ``ad app federated-credential create`` needs name, issuer, subject and exactly one audience,
  and refuses a name that exists; ``role assignment create`` returns the existing assignment instead of a
  duplicate; ``functionapp deployment source config-zip`` on Flex fails after the upload when the host
  does not become healthy within az's own check ("appears to be unhealthy"), while the host status that
  ``rest`` answers through Resource Manager (``.../host/default/properties/status``) may come up later;
  ``functionapp keys list`` gives a master key that the app host's ``/admin/functions/<name>`` endpoint takes;
- Key Vault's data plane: RBAC (Secrets / Certificates Officer at the vault or at the item, which must
  exist), with ``rbac_delay`` refusals after each new role assignment (propagation), and, after a
  ``vnetEnabled`` deployment, a refusal of every caller outside the VNet (public network access disabled).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socketserver
import sys
import traceback
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import bicepparam  # tests/infra/bicepparam.py (the script's own directory)
import jmespath

# The call being answered (set by run_call; calls are answered one at a time, under a lock on the state).
HOME = Path(".")
CWD = Path(".")
STATE: dict[str, Any] = {}
CFG: dict[str, Any] = {}
STDIN: str | None = None
RECORD: dict[str, Any] = {}
OUT = io.StringIO()
ERR = io.StringIO()

GLOBAL = "--query --output|-o --only-show-errors! --debug! --verbose! --help|-h!"
# Per command: options (aliases joined by |), * = required, ! = takes no value. From `az <cmd> --help`.
SPEC = {
    "login": "--identity|-i! --service-principal! --username|-u --password|-p --tenant|-t --federated-token "
             "--certificate --use-device-code! --allow-no-subscriptions! --client-id --object-id --resource-id "
             "--scope --skip-subscription-discovery|--skip-sub! --subscription|-s",
    "account show": "--subscription|--name|-n|-s",
    "account get-access-token": "--resource --resource-type --scope --tenant|-t --subscription|--name|-n|-s",
    "cloud show": "--name|-n",
    "group show": "--name|-n|--resource-group|-g* --subscription",
    "group create": "--name|-n|--resource-group|-g* --location|-l* --managed-by --tags --subscription",
    "group delete": "--name|-n|--resource-group|-g* --yes|-y! --no-wait! --force-deletion-types|-f --subscription",
    "provider show": "--namespace|-n* --expand --subscription",
    "provider register": "--namespace|-n* --wait! --consent-to-permissions|-c! --management-group-id|-m "
                         "--subscription",
    "functionapp list-flexconsumption-locations": "--runtime --show-details --zone-redundant!",
    "ad app list": "--all! --app-id --display-name --filter --identifier-uri --show-mine!",
    "ad app create": "--display-name* --sign-in-audience --identifier-uris --required-resource-accesses",
    "ad app show": "--id*",
    "ad app update": "--id* --display-name --identifier-uris --is-fallback-public-client --service-management-reference "
                     "--sign-in-audience --requested-access-token-version --end-date --key-display-name --key-type "
                     "--key-usage --key-value --start-date --public-client-redirect-uris --enable-access-token-issuance "
                     "--enable-id-token-issuance --web-home-page-url --web-redirect-uris --app-roles --optional-claims "
                     "--required-resource-accesses --add --force-string! --remove --set --acquire-policy-token! "
                     "--change-reference",
    "ad app delete": "--id*",
    "ad sp list": "--all! --display-name --filter --show-mine! --spn",
    "ad sp show": "--id*",
    "ad sp create": "--id*",
    "ad signed-in-user show": "",
    "ad app permission list": "--id*",
    "ad app permission add": "--id* --api* --api-permissions*",
    "ad app permission admin-consent": "--id*",
    "ad app credential reset": "--id* --append! --display-name --end-date --years --cert --create-cert! --keyvault",
    "ad app credential list": "--id* --cert!",
    "ad app credential delete": "--id* --key-id* --cert!",
    "ad app federated-credential create": "--id* --parameters*",
    "ad app federated-credential list": "--id*",
    "ad app federated-credential show": "--id* --federated-credential-id*",
    "ad app federated-credential update": "--id* --federated-credential-id* --parameters*",
    "ad app federated-credential delete": "--id* --federated-credential-id*",
    "rest": "--method|-m --uri|--url|-u* --body|-b --headers --resource --uri-parameters|--url-parameters "
            "--output-file --skip-authorization-header! --subscription",
    "role assignment create": "--role* --scope* --assignee --assignee-object-id --assignee-principal-type "
                              "--description --name|-n --condition --condition-version",
    "role assignment list": "--all! --assignee --assignee-object-id --fill-principal-name --fill-role-definition-name "
                            "--include-groups! --include-inherited! --resource-group|-g --role --scope",
    "role assignment delete": "--ids --assignee --assignee-object-id --include-inherited! --resource-group|-g "
                              "--role --scope --yes|-y!",
    "deployment group create": "--resource-group|-g* --name|-n --parameters|-p --template-file|-f --mode "
                               "--no-wait! --subscription",
    "deployment group what-if": "--resource-group|-g* --name|-n --parameters|-p --template-file|-f --mode "
                                "--no-pretty-print! --result-format|-r --exclude-change-types|-x --subscription",
    "deployment group show": "--resource-group|-g* --name|-n* --subscription",
    "identity show": "--name|--resource-name|-n --resource-group|-g --ids --subscription",
    "keyvault show": "--name|-n --resource-group|-g --subscription",
    "keyvault list-deleted": "--resource-type --subscription",
    "keyvault show-deleted": "--name|-n --hsm-name --location|-l --subscription",
    "keyvault recover": "--name|-n --hsm-name --location|-l --resource-group|-g --no-wait! --subscription",
    "resource show": "--ids --api-version --name|-n --namespace --parent --resource-group|-g --resource-type "
                     "--include-response-body --latest-include-preview|-v! --subscription",
    "keyvault secret list": "--vault-name --id --maxresults --include-managed --subscription",
    "keyvault secret show": "--vault-name --name|-n --id --version|-v --subscription",
    "keyvault secret set": "--vault-name* --name|-n* --value --file|-f --encoding|-e --expires --not-before "
                           "--content-type|--description --disabled --tags --subscription",
    "keyvault certificate create": "--vault-name* --name|-n* --policy|-p* --disabled --tags --validity --subscription",
    "keyvault certificate list": "--vault-name --id --maxresults --include-pending --subscription",
    "keyvault certificate show": "--vault-name --name|-n --id --version|-v --subscription",
    "functionapp show": "--name|-n --resource-group|-g --slot|-s --ids --subscription",
    "functionapp keys list": "--name|-n* --resource-group|-g* --slot|-s --subscription",
    "functionapp deployment source config-zip": "--resource-group|-g --name|-n --src* --build-remote --slot|-s "
                                                "--timeout|-t --ids --subscription",
    "storage container immutability-policy show": "--account-name* --container-name|-c* --resource-group|-g "
                                                  "--if-match --subscription",
    "storage container immutability-policy lock": "--account-name* --container-name|-c* --resource-group|-g "
                                                  "--if-match* --acquire-policy-token! --change-reference "
                                                  "--subscription",
    "storage container immutability-policy extend": "--account-name* --container-name|-c* --resource-group|-g "
                                                    "--if-match* --period --allow-protected-append-writes|-w "
                                                    "--allow-protected-append-writes-all|--w-all "
                                                    "--acquire-policy-token! --change-reference --subscription",
    "storage container immutability-policy delete": "--account-name* --container-name|-c* --resource-group|-g "
                                                    "--if-match* --acquire-policy-token! --change-reference "
                                                    "--subscription",
}

GRAPH_API = "00000003-0000-0000-c000-000000000000"
# Microsoft Graph application roles (appRoles of its service principal; Graph permissions reference) that
# deploy.sh may request and assign: User.Read.All, and AuditLog.Read.All when USER_PROPERTIES selects
# signInActivity.
GRAPH_APP_ROLES = {"df021288-bdef-4463-88db-98f22de89214": "User.Read.All",
                   "b0afded3-3588-46d8-8b3d-9842eff778da": "AuditLog.Read.All"}
ROLES = {  # built-in role definitions az resolves --role to (by GUID or by name)
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "a4417e6f-fecd-4de8-b567-7b0420556985": "Key Vault Certificates Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
}
OFFICER = {"secrets": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "certificates": "a4417e6f-fecd-4de8-b567-7b0420556985"}
# From `az cloud show -n <cloud>` (azure-cli 2.91): sign-in host, Microsoft Graph, Key Vault DNS suffix,
# storage suffix; and the token exchange audience main.bicep picks for the cloud.
CLOUDS = {
    "AzureCloud": {"login": "https://login.microsoftonline.com", "graph": "https://graph.microsoft.com/",
                   "vault": ".vault.azure.net", "storage": "core.windows.net",
                   "audience": "api://AzureADTokenExchange", "rm": "https://management.azure.com/"},
    "AzureUSGovernment": {"login": "https://login.microsoftonline.us", "graph": "https://graph.microsoft.us/",
                          "vault": ".vault.usgovcloudapi.net", "storage": "core.usgovcloudapi.net",
                          "audience": "api://AzureADTokenExchangeUSGov",
                          "rm": "https://management.usgovcloudapi.net/"},
    "AzureChinaCloud": {"login": "https://login.chinacloudapi.cn", "graph": "https://microsoftgraph.chinacloudapi.cn",
                        "vault": ".vault.azure.cn", "storage": "core.chinacloudapi.cn",
                        "audience": "api://AzureADTokenExchangeChina", "rm": "https://management.chinacloudapi.cn"},
}


class AzError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    """A datetime as az prints one (azure-cli's todict: isoformat)."""
    return when.isoformat()


def graph_time(when: dt.datetime) -> str:
    """A datetime as Microsoft Graph returns one."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_years(when: dt.datetime, years: int) -> dt.datetime:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February
        return when.replace(year=when.year + years, day=28)


def parse_any_date(text: str) -> dt.datetime:
    """What dateutil.parser.parse accepts for --end-date, near enough: ISO 8601, 'Z' or an offset."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AzError(f"Unknown string format: {text}", 1) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def keyvault_datetime(option: str, text: str) -> dt.datetime:
    """azure-cli keyvault's datetime_type: only these forms, always UTC."""
    for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%HZ", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, form).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    raise AzError(f"argument {option}: invalid datetime_type value: '{text}'", 2)


# --- parsing the command line -----------------------------------------------------------------------

def parse_spec(text: str) -> tuple[dict[str, str], set[str], set[str]]:
    """{alias: canonical}, the required canonical names, the canonical names that take no value."""
    aliases, required, flags = {}, set(), set()
    for item in text.split():
        names = item.rstrip("*!").split("|")
        for name in names:
            aliases[name] = names[0]
        if "*" in item:
            required.add(names[0])
        if item.endswith("!"):
            flags.add(names[0])
    return aliases, required, flags


def parse_command(args: list[str]) -> tuple[str, dict[str, Any]]:
    command = next((c for c in sorted(SPEC, key=len, reverse=True) if args[:len(c.split())] == c.split()), None)
    if command is None:
        raise AzError(f"'{' '.join(a for a in args if not a.startswith('-'))}' is misspelled or not recognized "
                      "by the system (fake az knows: " + ", ".join(sorted(SPEC)) + ")", 2)
    aliases, required, flags = parse_spec(SPEC[command] + " " + GLOBAL)
    opts: dict[str, Any] = {}
    rest = args[len(command.split()):]
    i = 0
    while i < len(rest):
        word = rest[i]
        if not word.startswith("-"):
            raise AzError(f"unrecognized arguments: {word}", 2)
        name = aliases.get(word)
        if name is None:
            raise AzError(f"unrecognized arguments: {word}", 2)
        if name in flags:
            opts[name] = True
            i += 1
            continue
        if i + 1 >= len(rest) or (rest[i + 1].startswith("--") and rest[i + 1] != "--"):
            raise AzError(f"argument {word}: expected one argument", 2)
        value = rest[i + 1]
        if name == "--parameters" and command.startswith("deployment group"):
            opts.setdefault(name, []).append(value)
        else:
            opts[name] = value
        i += 2
    missing = sorted(required - set(opts))
    if missing:
        raise AzError("the following arguments are required: " + ", ".join(missing), 2)
    if opts.get("--output", "json") not in ("json", "jsonc", "tsv", "none", "table", "yaml", "yamlc"):
        raise AzError(f"argument --output/-o: invalid choice: '{opts['--output']}'", 2)
    return command, opts


def local(path: str) -> Path:
    """A path as the caller (in its own working directory) means it."""
    return CWD / Path(path).expanduser()


def load_file_arg(value: str) -> str:
    """az reads an argument that starts with @ from that file, and @- from stdin (without its last newline)."""
    if value == "@-":
        RECORD["stdin"] = STDIN
        return (STDIN or "").rstrip("\n")
    if value.startswith("@"):
        path = local(value[1:])
        if not path.is_file():
            raise AzError(f"[Errno 2] No such file or directory: '{value[1:]}'", 2)
        return path.read_text()
    return value


def snake(value: Any) -> Any:
    """azure-cli's get_json_object: every key to snake case."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


# --- output -------------------------------------------------------------------------------------------

def tsv(result: Any) -> str:
    """knack's _TsvOutput."""
    def obj(value: Any) -> str:
        if isinstance(value, list):
            return str(len(value))
        if isinstance(value, dict):
            return ""
        return value if isinstance(value, str) else str(value)

    lines = []
    for row in result if isinstance(result, list) else [result]:
        if isinstance(row, dict):
            lines.append("\t".join(obj(v) for _, v in sorted(row.items())))
        elif isinstance(row, list):
            lines.append("\t".join(obj(v) for v in row))
        elif isinstance(row, bool):
            lines.append(str(row).lower())
        else:
            lines.append(obj(row))
    return "".join(line + "\n" for line in lines)


def emit(result: Any, opts: dict[str, Any]) -> None:
    if "--query" in opts:
        result = jmespath.search(opts["--query"], result)
    if result is None:
        return
    fmt = opts.get("--output", "json")
    if fmt == "none":
        return
    if fmt == "tsv":
        OUT.write(tsv(result))
    else:
        OUT.write(json.dumps(result, indent=2, sort_keys=True) + "\n")


# --- the simulated tenant and subscription ---------------------------------------------------------------

def save() -> None:
    (HOME / "state.json").write_text(json.dumps(STATE, indent=1))


def cloud() -> dict[str, str]:
    return CLOUDS[CFG["cloud"]]


def caller() -> str:
    """Object id of the signed-in principal."""
    return CFG["me"] if CFG["login"] == "user" else CFG["deployer_sp"]


def app(identifier: str) -> dict[str, Any]:
    for a in STATE["apps"]:
        if identifier in (a["appId"], a["id"]):
            return a
    raise AzError(f"Resource '{identifier}' does not exist or one of its queried reference-property objects "
                  "are not present.", 3)


def new_app(app_id: str, name: str) -> dict[str, Any]:
    return {"appId": app_id, "id": "obj-" + app_id, "displayName": name, "signInAudience": "AzureADMyOrg",
            "passwordCredentials": [], "keyCredentials": [], "requiredResourceAccess": [],
            "federatedIdentityCredentials": []}


def group_id(name: str | None = None) -> str:
    return f"/subscriptions/{CFG['subscription']}/resourceGroups/{name or STATE['rg_name']}"


def vault_id(name: str) -> str:
    return f"{group_id()}/providers/Microsoft.KeyVault/vaults/{name}"


def deployment_outputs(env: dict[str, str]) -> dict[str, Any]:
    """What main.bicep outputs for these GRAPH_EXPORT_* values (main.bicepparam reads them)."""
    credential = env.get("GRAPH_EXPORT_CLIENT_CREDENTIAL") or "secret"
    if credential not in ("secret", "certificate", "federated"):
        raise AzError(f"InvalidTemplate: The provided value '{credential}' for the template parameter "
                      "'clientCredential' is not valid. The value must be one of: secret, certificate, federated.", 1)
    client_id = env.get("GRAPH_EXPORT_CLIENT_ID", "")
    if len(client_id) != 36:
        raise AzError("InvalidTemplate: The provided value for the template parameter 'clientId' is not valid. "
                      "Length of the value should be greater than or equal to '36'.", 1)
    vnet = env.get("GRAPH_EXPORT_VNET_ENABLED", "false") == "true"  # main.bicepparam: == 'true'
    days = immutability_days(env)
    names = CFG["names"]
    vault = "" if credential == "federated" else names["keyVault"]
    values = {
        "functionAppName": names["functionApp"],
        "functionAppPrincipalId": STATE["identity_principal"],
        "clientCredential": credential,
        "keyVaultName": vault,
        "keyVaultUri": f"https://{vault}{cloud()['vault']}/" if vault else "",
        "keyVaultId": vault_id(vault) if vault else "",
        "clientSecretName": "graph-client-secret",
        "clientCertificateName": "graph-client-certificate",
        "identityName": names["identity"],
        "identityClientId": CFG["identity_client"],
        "identityPrincipalId": STATE["identity_principal"],
        "federatedCredentialIssuer": f"{cloud()['login']}/{CFG['tenant']}/v2.0",
        "federatedTokenAudience": cloud()["audience"],
        "hostStorageAccountName": names["hostStorage"],
        "exportStorageAccountName": names["exportStorage"],
        "exportBlobEndpoint": f"https://{names['exportStorage']}.blob.{cloud()['storage']}/",
        "exportContainerName": "graph-exports",
        "stateContainerName": "graph-exports-state" if days else "graph-exports",
        "exportImmutabilityDays": days,
        "appInsightsName": "graphexp-appi-abc",
        "logAnalyticsWorkspaceName": "graphexp-log-abc",
        "vnetEnabled": vnet,
        "vnetName": "graphexp-vnet-abc" if vnet else "",
        "exportQueueName": "graph-export-tenants",
        "poisonQueueName": "graph-export-tenants-poison",
        "tenantIds": env.get("GRAPH_EXPORT_TENANT_IDS", ""),
    }
    kinds = {bool: "Bool", int: "Int", str: "String"}
    return {k: {"type": kinds[type(v)], "value": v} for k, v in values.items()}


# main.bicep's @allowed and @minValue/@maxValue of the export settings deploy.sh passes (ARM refuses the rest).
PARAMETER_ALLOWED = {"exportMode": ["full", "delta"], "exportFormats": ["jsonl", "jsonl,csv"]}
PARAMETER_RANGE = {"fullSyncEveryDays": (0, 7)}


def deployment_parameters(opts: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The parameters a deployment records (`properties.parameters`), as main.bicepparam (the one in --parameters,
    else infra/'s) makes them from these GRAPH_EXPORT_* values; main.bicep's decorators refuse what ARM refuses."""
    files = [local(v) for v in opts.get("--parameters", []) if v.endswith(".bicepparam")]
    path = files[0] if files else Path(__file__).resolve().parents[2] / "infra" / "main.bicepparam"
    try:
        values = {name: param.value(env) for name, param in bicepparam.params(path.read_text()).items()}
    except ValueError as error:
        raise AzError(str(error), 1) from None
    for name, allowed in PARAMETER_ALLOWED.items():
        if name in values and values[name] not in allowed:
            raise AzError(f"InvalidTemplate: The provided value '{values[name]}' for the template parameter '{name}' "
                          f"is not valid. The value must be one of: {', '.join(allowed)}.", 1)
    for name, (low, high) in PARAMETER_RANGE.items():
        if name in values and not low <= values[name] <= high:
            raise AzError(f"InvalidTemplate: The provided value '{values[name]}' for the template parameter '{name}' "
                          f"is not valid. The value must be between {low} and {high}.", 1)
    kinds = {bool: "Bool", int: "Int", str: "String"}
    return {k: {"type": kinds[type(v)], "value": v} for k, v in values.items()}


def immutability_days(env: dict[str, str]) -> int:
    """main.bicepparam: int(readEnvironmentVariable('GRAPH_EXPORT_IMMUTABILITY_DAYS', '0')), then main.bicep's
    @minValue(0) @maxValue(3650)."""
    text = env.get("GRAPH_EXPORT_IMMUTABILITY_DAYS", "0")
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise AzError(f"The template function 'int' failed: could not convert '{text}' to an integer.", 1)
    days = int(text)
    if not 0 <= days <= 3650:
        raise AzError(f"InvalidTemplate: The provided value '{days}' for the template parameter "
                      "'exportImmutabilityDays' is not valid. The value must be between 0 and 3650.", 1)
    return days


def apply_immutability_policy(env: dict[str, str]) -> None:
    """What a deployment does to the export container's policy: with exportImmutabilityDays > 0 and
    exportImmutabilityLocked false, it PUTs an unlocked policy of that many days, which ARM refuses for a locked
    policy (its only write is `extend`); otherwise it leaves the policy as it is (incremental mode)."""
    days = immutability_days(env)
    locked_param = env.get("GRAPH_EXPORT_IMMUTABILITY_LOCKED", "false") == "true"
    if not days or locked_param:
        return
    policy = STATE.get("immutability_policy")
    if policy and policy["state"] == "Locked":
        raise AzError("(ImmutabilityPolicyLocked) Operation not allowed on an immutability policy in Locked state: "
                      "only extending it is (approximation of the storage provider's refusal).", 1)
    STATE["immutability_policy"] = {"state": "Unlocked", "days": days, "etag": new_etag()}


def new_etag() -> str:
    STATE["etag_counter"] = STATE.get("etag_counter", 0) + 1
    return f'"8d{STATE["etag_counter"]:013x}"'  # ARM's policy etags are quoted, as `--query etag -o tsv` prints


# --- Key Vault data plane ----------------------------------------------------------------------------

def vault(opts: dict[str, Any], kind: str, item: str | None = None) -> dict[str, Any]:
    """The vault named by --vault-name, after Key Vault's network and RBAC checks for an operation on the
    item (a secret or certificate name) or, without one, on the whole vault (listing, creating a new item)."""
    name = opts.get("--vault-name")
    if not name:
        raise AzError("usage error: --vault-name VAULT | --id ID", 2)
    return vault_by_name(name, kind, item)


def vault_by_name(name: str, kind: str, item: str | None) -> dict[str, Any]:
    vaults = STATE["vaults"]
    deployed = STATE["deployment"] and STATE["deployment"]["outputs"]["keyVaultName"]["value"]
    if name not in vaults and name != deployed and name not in CFG["existing_vaults"]:
        raise AzError(f"Failed to resolve '{name}{cloud()['vault']}'", 1)
    kv = vaults.setdefault(name, {"secrets": {}, "certificates": {}})
    if STATE["deployment"] and STATE["deployment"]["outputs"]["vnetEnabled"]["value"] and not STATE["inside_vnet"]:
        raise AzError("(Forbidden) Public network access is disabled and request is not from a trusted service nor "
                      "via an approved private link.\nCaller: appid=...\nVault: " + name + "\nCode: Forbidden\n"
                      'Inner error: {\n    "code": "ForbiddenByConnection"\n}', 1)
    scopes = {vault_id(name).lower()}
    if item is not None and item in kv[kind]:
        scopes.add(f"{vault_id(name)}/{kind}/{item}".lower())
    allowed = any(a["principalId"] == caller() and a["roleDefinitionId"].endswith(OFFICER[kind])
                  and a["scope"].lower() in scopes for a in STATE["role_assignments"])
    if STATE["rbac_pending"] > 0:  # a new role assignment is still propagating
        STATE["rbac_pending"] -= 1
        allowed = False
    if not allowed and not STATE["vault_open"]:
        save()
        raise AzError("(Forbidden) Caller is not authorized to perform action on resource.\nIf role assignments, "
                      "deny assignments or role definitions were changed recently, please observe propagation "
                      "time.\nCode: Forbidden\n"
                      'Inner error: {\n    "code": "ForbiddenByRbac"\n}', 1)
    return kv


def certificate_view(name: str, cert: dict[str, Any], vault_name: str) -> dict[str, Any]:
    version = cert["versions"][-1]
    return {
        "attributes": {"created": version["created"], "enabled": True, "expires": version["expires"],
                       "notBefore": version["notBefore"], "recoveryLevel": "Recoverable", "updated": version["created"]},
        "id": f"https://{vault_name}{cloud()['vault']}/certificates/{name}/{version['version']}",
        "name": name,
        "subject": "",
        "tags": None,
        "x509Thumbprint": "(base64)",
        "x509ThumbprintHex": version["thumbprint"],
    }


def new_certificate_version(cert: dict[str, Any], name: str) -> None:
    policy = cert["policy"]
    months = policy.get("x509_certificate_properties", {}).get("validity_in_months", 12)
    created = now()
    number = len(cert["versions"]) + 1
    cert["versions"].append({
        "version": f"v{number}",
        "thumbprint": hashlib.sha1(f"{name}/{number}/{CFG['tenant']}".encode()).hexdigest().upper(),
        "created": iso(created),
        "notBefore": iso(created - dt.timedelta(minutes=10)),
        "expires": iso(created + dt.timedelta(days=round(months * 365 / 12))),
    })


def federated_body(opts: dict[str, Any], *, create: bool) -> dict[str, Any]:
    text = load_file_arg(opts["--parameters"])
    if text and local(text).is_file():
        text = local(text).read_text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AzError(f"Failed to parse string as JSON: {text}\nThe error message is: {exc}", 2) from None
    if not isinstance(body, dict):
        raise AzError("Request_BadRequest: the request body must be a JSON object", 1)
    unknown = set(body) - {"name", "issuer", "subject", "audiences", "description", "claimsMatchingExpression"}
    if unknown:
        raise AzError(f"Request_BadRequest: Invalid property '{sorted(unknown)[0]}'.", 1)
    needed = ("name", "issuer", "subject", "audiences") if create else ()
    for key in needed:
        if not body.get(key):
            raise AzError(f"Request_BadRequest: Property '{key}' is required.", 1)
    if "audiences" in body and (not isinstance(body["audiences"], list) or len(body["audiences"]) != 1):
        raise AzError("Request_BadRequest: Audiences must contain exactly one value.", 1)
    if "issuer" in body and not str(body["issuer"]).startswith("https://"):
        raise AzError("Request_BadRequest: Issuer must be a valid https URL.", 1)
    return body


# --- commands ------------------------------------------------------------------------------------------

HANDLERS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def handles(*commands: str) -> Callable[[Callable[[dict[str, Any]], Any]], Callable[[dict[str, Any]], Any]]:
    def register(function: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        for command in commands:
            HANDLERS[command] = function
        return function
    return register


@handles("login")
def login(opts: dict[str, Any]) -> Any:
    return [{"cloudName": CFG["cloud"], "id": CFG["subscription"], "tenantId": CFG["tenant"]}]


@handles("account show")
def account_show(opts: dict[str, Any]) -> Any:
    user = {
        "user": {"name": "me@example.com", "type": "user"},
        "sp": {"name": CFG["deployer_app"], "type": "servicePrincipal"},
        "mi": {"name": "systemAssignedIdentity", "type": "servicePrincipal", "assignedIdentityInfo": "MSI"},
    }[CFG["login"]]
    return {"environmentName": CFG["cloud"], "id": CFG["subscription"], "isDefault": True,
            "name": "Subscription 1", "tenantId": CFG["tenant"], "user": user}


@handles("account get-access-token")
def access_token(opts: dict[str, Any]) -> Any:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    claims = {"aud": "https://management.core.windows.net/", "iss": f"https://sts.windows.net/{CFG['tenant']}/",
              "oid": caller(), "tid": CFG["tenant"], "idtyp": "user" if CFG["login"] == "user" else "app"}
    token = f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{CFG['token_signature']}"
    return {"accessToken": token, "expiresOn": "2030-01-01 00:00:00.000000", "expires_on": 1893456000,
            "subscription": CFG["subscription"], "tenant": CFG["tenant"], "tokenType": "Bearer"}


@handles("cloud show")
def cloud_show(opts: dict[str, Any]) -> Any:
    name = opts.get("--name", CFG["cloud"])
    if name not in CLOUDS:
        raise AzError(f"The cloud '{name}' is not registered.", 3)
    c = CLOUDS[name]
    return {"name": name, "isActive": name == CFG["cloud"], "profile": "latest",
            "endpoints": {"activeDirectory": c["login"], "microsoftGraphResourceId": c["graph"],
                          "resourceManager": c["rm"]},
            "suffixes": {"keyvaultDns": c["vault"], "storageEndpoint": c["storage"]}}


@handles("group show")
def group_show(opts: dict[str, Any]) -> Any:
    if not STATE["group"] or opts["--name"] != STATE["rg_name"]:
        raise AzError(f"(ResourceGroupNotFound) Resource group '{opts['--name']}' could not be found.", 3)
    return {"id": group_id(), "name": opts["--name"], "location": STATE["group"],
            "properties": {"provisioningState": "Succeeded"}}


@handles("group create")
def group_create(opts: dict[str, Any]) -> Any:
    STATE["group"] = opts["--location"]
    STATE["rg_name"] = opts["--name"]
    return {"id": group_id(), "name": opts["--name"], "location": STATE["group"]}


@handles("group delete")
def group_delete(opts: dict[str, Any]) -> Any:
    group_show(opts)
    if "--yes" not in opts:
        raise AzError("Are you sure you want to perform this operation? (y/n): (no terminal to ask)", 1)
    deployed = STATE["deployment"] and STATE["deployment"]["outputs"]["keyVaultName"]["value"]
    if deployed:  # purge protection: soft-deleted for softDeleteRetentionInDays (90), contents kept
        deleted = now()
        STATE["deleted_vaults"].append({
            "name": deployed, "vaultId": vault_id(deployed), "location": STATE["group"], "deletionDate": iso(deleted),
            "scheduledPurgeDate": iso(deleted + dt.timedelta(days=90)), "contents": STATE["vaults"].pop(deployed, None)})
    STATE["role_assignments"] = [a for a in STATE["role_assignments"] if not a["scope"].startswith(group_id())]
    STATE.update(group="", deployment=None)
    return None


@handles("provider show")
def provider_show(opts: dict[str, Any]) -> Any:
    registered = opts["--namespace"] != "Microsoft.App" or STATE["app_provider_registered"]
    return {"namespace": opts["--namespace"], "registrationState": "Registered" if registered else "NotRegistered"}


@handles("provider register")
def provider_register(opts: dict[str, Any]) -> Any:
    if STATE["provider_register_fails"]:
        raise AzError(f"(AuthorizationFailed) The client '{caller()}' does not have authorization to perform action "
                      "'Microsoft.App/register/action' over scope '/subscriptions/sub-1'.", 1)
    if opts["--namespace"] == "Microsoft.App":
        STATE["app_provider_registered"] = True
    return None


@handles("functionapp list-flexconsumption-locations")
def flex_locations(opts: dict[str, Any]) -> Any:
    return [{"name": region} for region in CFG["flex_regions"]]


@handles("ad app list")
def app_list(opts: dict[str, Any]) -> Any:
    apps = STATE["apps"]
    if "--filter" in opts:
        match = re.fullmatch(r"displayName eq '((?:[^']|'')*)'", opts["--filter"])
        if not match:
            raise AzError(f"Unsupported filter in fake az: {opts['--filter']}", 1)
        name = match.group(1).replace("''", "'")
        apps = [a for a in apps if a["displayName"] == name]
    elif "--display-name" in opts:
        apps = [a for a in apps if a["displayName"].startswith(opts["--display-name"])]
    return apps


# azure-cli role module _params.py: --sign-in-audience is get_enum_type of these (argparse refuses others, exit 2).
SIGN_IN_AUDIENCES = ["AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                     "PersonalMicrosoftAccount"]


def sign_in_audience(opts: dict[str, Any]) -> str | None:
    audience = opts.get("--sign-in-audience")
    if audience is not None and audience not in SIGN_IN_AUDIENCES:
        raise AzError(f"argument --sign-in-audience: invalid choice: '{audience}' (choose from "
                      + ", ".join(f"'{a}'" for a in SIGN_IN_AUDIENCES) + ")", 2)
    return audience


@handles("ad app create")
def app_create(opts: dict[str, Any]) -> Any:
    audience = sign_in_audience(opts)
    if STATE["app_create_fails"]:
        raise AzError("Insufficient privileges to complete the operation.", 1)
    created = new_app(CFG["new_app"], opts["--display-name"])
    # Without --sign-in-audience az sends none and Graph makes the app AzureADMyOrg (its default).
    created["signInAudience"] = audience or "AzureADMyOrg"
    STATE["apps"].append(created)
    return created


@handles("ad app show")
def app_show(opts: dict[str, Any]) -> Any:
    return app(opts["--id"])


@handles("ad app update")
def app_update(opts: dict[str, Any]) -> Any:
    """A generic update whose setter PATCHes the application (Graph answers 204): az prints nothing. Only the
    sign-in audience is modelled; STATE's audience_update_fails is Graph refusing the caller."""
    audience = sign_in_audience(opts)
    target = app(opts["--id"])
    if STATE.get("audience_update_fails"):
        raise AzError("Insufficient privileges to complete the operation.", 1)
    if audience is not None:
        target["signInAudience"] = audience
    return None


@handles("ad app delete")
def app_delete(opts: dict[str, Any]) -> Any:
    target = app(opts["--id"])
    STATE["apps"].remove(target)
    STATE["sp"] = False
    STATE["consented"] = False
    return None


@handles("ad sp list")
def sp_list(opts: dict[str, Any]) -> Any:
    match = re.fullmatch(r"appId eq '([0-9a-f-]+)'", opts.get("--filter", ""))
    return [{"id": CFG["sp"], "appId": match.group(1)}] if match and STATE["sp"] else []


@handles("ad sp show", "ad sp create")
def sp_show(opts: dict[str, Any]) -> Any:
    if opts["--id"] == GRAPH_API and RECORD["command"] == "ad sp show":
        return {"id": CFG["graph_sp"], "appId": GRAPH_API, "displayName": "Microsoft Graph"}
    known = next((e for e in CFG.get("directory", []) if opts["--id"] in (e.get("appId"), e["id"])
                  and e["type"] == "ServicePrincipal"), None)
    if known and RECORD["command"] == "ad sp show":  # another service principal, the deployer's say
        return {"id": known["id"], "appId": known["appId"]}
    if RECORD["command"] == "ad sp create":
        app(opts["--id"])
        STATE["sp"] = True
    if not STATE["sp"]:
        raise AzError(f"Service principal '{opts['--id']}' doesn't exist", 3)
    return {"id": CFG["sp"], "appId": opts["--id"]}


@handles("ad signed-in-user show")
def signed_in_user(opts: dict[str, Any]) -> Any:
    if CFG["login"] != "user":
        raise AzError("/me request is only valid with delegated authentication flow.", 1)
    return {"id": CFG["me"], "userPrincipalName": "me@example.com"}


def graph_roles(key: str) -> list[str]:
    """The Graph application roles in STATE[key] ("permission": requested, "consented": assigned). A test may
    give True, meaning User.Read.All alone (as before AuditLog.Read.All was modelled), or a list of role ids."""
    value = STATE[key]
    if value is True:
        return [CFG["user_read_all"]]
    return list(value or [])


@handles("ad app permission list")
def permission_list(opts: dict[str, Any]) -> Any:
    app(opts["--id"])
    requested = graph_roles("permission")
    return ([{"resourceAppId": GRAPH_API, "resourceAccess": [{"id": r, "type": "Role"} for r in requested]}]
            if requested else [])


@handles("ad app permission add")
def permission_add(opts: dict[str, Any]) -> Any:
    # azure-cli 2.91 add_permission: each `id=type` is appended to the app's requiredResourceAccess for --api
    # (nothing is deduplicated), then it warns that `az ad app permission grant` is needed (delegated only).
    app(opts["--id"])
    access_id, _, access_type = opts["--api-permissions"].partition("=")
    if not access_type:
        raise AzError("Usage error: Please provide both permission id and type, such as "
                      "`--api-permissions e1fe6dd8-ba31-4d61-89e7-88639da4683d=Scope`", 2)
    if opts["--api"] != GRAPH_API or access_type != "Role" or access_id not in GRAPH_APP_ROLES:
        raise AzError(f"fake az: unexpected permission {opts['--api-permissions']} on {opts['--api']}", 1)
    STATE["permission"] = graph_roles("permission") + [access_id]
    if not opts.get("--only-show-errors"):
        ERR.write(f"WARNING: Invoking `az ad app permission grant --id {opts['--id']} --api {opts['--api']}` is "
                  "needed to make the change effective\n")
    return None


@handles("ad app permission admin-consent")
def admin_consent(opts: dict[str, Any]) -> Any:
    # An internal portal API (main.iam.ad.ext.azure.com): public cloud only, and not for service principals.
    if CFG["cloud"] != "AzureCloud":
        raise AzError("admin-consent is not supported in this cloud: the portal API it uses exists only in AzureCloud",
                      1)
    if CFG["login"] != "user":
        raise AzError("Operation failed: service principals cannot use the portal API behind admin-consent", 1)
    if STATE["consent_fails"]:
        raise AzError("Insufficient privileges to complete the operation.", 1)
    STATE["consented"] = sorted(set(graph_roles("consented")) | set(graph_roles("permission")))
    return None


def token_request(opts: dict[str, Any]) -> Any:
    """Entra ID's client-credentials grant (POST {authority}/{tenant}/oauth2/v2.0/token, form-encoded): a token
    when client_secret is a current password of the app client_id whose service principal exists; else Entra's
    400/401 as az rest prints an HTTP error. STATE["signin_refusals"] refuses that many first attempts
    (a new secret that is not accepted yet)."""
    if "--skip-authorization-header" not in opts:
        raise AzError("fake az rest: a token request must not carry the caller's own token", 1)
    if (opts.get("--headers") or "") != "Content-Type=application/x-www-form-urlencoded":
        raise AzError("Bad Request({\"error\":\"invalid_request\",\"error_description\":\"AADSTS900144: The request "
                      "body must contain the following parameter: 'grant_type'.\"})", 1)
    form = dict(urllib.parse.parse_qsl(load_file_arg(opts.get("--body", "")), keep_blank_values=True))
    if form.get("grant_type") != "client_credentials" or not form.get("scope", "").endswith("/.default"):
        raise AzError(f"Bad Request({{\"error\":\"invalid_request\",\"error_description\":\"AADSTS900144: "
                      f"unexpected form fields {sorted(form)}\"}})", 1)
    target = next((a for a in STATE["apps"] if a["appId"] == form.get("client_id")), None)
    if target is None or not STATE["sp"]:
        raise AzError('Bad Request({"error":"unauthorized_client","error_description":"AADSTS700016: Application '
                      f"with identifier '{form.get('client_id')}' was not found in the directory.\"}})", 1)
    digest = hashlib.sha256(form.get("client_secret", "").encode()).hexdigest()
    valid = [c for c in target["passwordCredentials"] if STATE["password_hashes"].get(c["keyId"]) == digest
             and c["endDateTime"] > graph_time(now())]
    if STATE.get("signin_refusals", 0) > 0:
        STATE["signin_refusals"] -= 1
        valid = []
    if not valid:
        save()
        raise AzError('Unauthorized({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client '
                      'secret provided. Ensure the secret being sent in the request is the client secret value, not '
                      f"the client secret ID, for a secret added to app '{form.get('client_id')}'.\","
                      '"error_codes":[7000215]})', 1)
    STATE["signins"] = STATE.get("signins", 0) + 1
    return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": CFG["token_signature"]}


def host_status(opts: dict[str, Any]) -> Any:
    """ARM's Functions host status (GET {site}/host/default/properties/status, the portal's call): after a publish
    with zip_outcome "slow", Running only from the STATE["host_starts_after"]-th poll on; "unhealthy": never."""
    STATE["host_polls"] = STATE.get("host_polls", 0) + 1
    running = STATE["zip_outcome"] == "ok" or (
        STATE["zip_outcome"] == "slow" and STATE["host_polls"] >= STATE.get("host_starts_after", 1))
    properties = {"id": "host-id", "state": "Running" if running else "Error", "version": "4.1041.200.1",
                  "errors": None if running else ["Microsoft.Azure.WebJobs.Host: Error indexing method "
                                                  "'Functions.export_users'. Unable to access AzureWebJobsStorage."]}
    return {"id": opts["--uri"].split("?")[0], "name": "status", "type": "Microsoft.Web/sites/host/properties",
            "properties": properties}


def invoke_function(opts: dict[str, Any], path: str) -> Any:
    """POST /admin/functions/{name} on the app's host with the master key (Functions docs, "Manually run a non
    HTTP-triggered function"): 202 and no body."""
    headers = json.loads(load_file_arg(opts.get("--headers") or "{}"))
    if "--skip-authorization-header" not in opts or headers.get("x-functions-key") != CFG["master_key"]:
        raise AzError("Unauthorized()", 1)
    if path != "/admin/functions/export_users":
        raise AzError("Not Found()", 1)
    if json.loads(load_file_arg(opts.get("--body") or "null")) != {"input": ""}:
        raise AzError('Bad Request({"error":"the body must be {\\"input\\": \\"<trigger input>\\"}"})', 1)
    STATE["invocations"] = STATE.get("invocations", 0) + 1
    return None


@handles("rest")
def rest(opts: dict[str, Any]) -> Any:
    method = opts.get("--method", "get").lower()
    url = opts["--uri"]
    host = f"https://{CFG['names']['functionApp']}.azurewebsites.net"
    if method == "post" and url == f"{cloud()['login']}/{CFG['tenant']}/oauth2/v2.0/token":
        return token_request(opts)
    if method == "get" and "://" not in url and url.split("?")[0].endswith("/host/default/properties/status"):
        return host_status(opts)  # a path without a host: az rest sends it to this cloud's Resource Manager
    if method == "post" and url.startswith(host + "/"):
        return invoke_function(opts, url[len(host):])
    graph = cloud()["graph"].rstrip("/")
    if not url.startswith(graph + "/"):
        # az sends a token only to the active cloud's endpoints: another cloud's Graph gets none.
        raise AzError('Unauthorized({"error":{"code":"InvalidAuthenticationToken","message":"Access token is '
                      'empty."}})', 1)
    path = url[len(graph):]
    if method == "get" and path == f"/v1.0/servicePrincipals/{CFG['sp']}/appRoleAssignments":
        return {"value": [{"id": f"assignment-{n}", "appRoleId": role, "resourceId": CFG["graph_sp"],
                           "principalId": CFG["sp"]} for n, role in enumerate(graph_roles("consented"), 1)]}
    if method == "post" and path == f"/v1.0/servicePrincipals/{CFG['graph_sp']}/appRoleAssignedTo":
        body = json.loads(load_file_arg(opts.get("--body", "{}")))
        expected = {"principalId": CFG["sp"], "resourceId": CFG["graph_sp"], "appRoleId": body.get("appRoleId")}
        if body != expected or body["appRoleId"] not in GRAPH_APP_ROLES:
            raise AzError(f"Bad Request({{\"error\":{{\"code\":\"Request_BadRequest\",\"message\":\"unexpected body "
                          f"{body}, expected {expected} with an appRoleId of {sorted(GRAPH_APP_ROLES)}\"}}}})", 1)
        if not STATE["sp"]:
            raise AzError('Not Found({"error":{"code":"Request_ResourceNotFound","message":"Resource does not '
                          'exist."}})', 1)
        if STATE["consent_fails"]:
            raise AzError('Forbidden({"error":{"code":"Authorization_RequestDenied","message":"Insufficient '
                          'privileges to complete the operation."}})', 1)
        if body["appRoleId"] in graph_roles("consented"):
            raise AzError('Bad Request({"error":{"code":"Request_BadRequest","message":"Permission being assigned '
                          'already exists on the object"}})', 1)
        STATE["consented"] = graph_roles("consented") + [body["appRoleId"]]
        return {"id": f"assignment-{len(STATE['consented'])}", **expected, "principalType": "ServicePrincipal"}
    raise AzError(f"fake az rest: unexpected request {method} {url}", 1)


def role_id(role: str) -> str:
    for guid, name in ROLES.items():
        if role in (guid, name):
            return f"/subscriptions/{CFG['subscription']}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    raise AzError(f"Role '{role}' doesn't exist.", 3)


def role_view(assignment: dict[str, Any]) -> dict[str, Any]:
    return {**assignment, "name": assignment["id"].rsplit("/", 1)[-1], "condition": None,
            "roleDefinitionName": ROLES[assignment["roleDefinitionId"].rsplit("/", 1)[-1]],
            "type": "Microsoft.Authorization/roleAssignments"}


def matching_assignments(opts: dict[str, Any]) -> list[dict[str, Any]]:
    if "--assignee" in opts and "--assignee-object-id" in opts:
        raise AzError("Usage error: Provide only one of --assignee or --assignee-object-id.", 1)
    found = STATE["role_assignments"]
    if "--scope" in opts:  # atScope(): exactly this scope unless --include-inherited
        found = [a for a in found if a["scope"].lower() == opts["--scope"].lower()]
    principal = opts.get("--assignee-object-id") or opts.get("--assignee")
    if principal:
        found = [a for a in found if a["principalId"] == principal]
    if "--role" in opts:
        found = [a for a in found if a["roleDefinitionId"] == role_id(opts["--role"])]
    return found


def check_scope(scope: str) -> None:
    """The fake is strict: a scope below a vault (secrets/<name>, certificates/<name>) must exist."""
    match = re.fullmatch(r"(.*/providers/Microsoft\.KeyVault/vaults/([^/]+))/(secrets|certificates)/([^/]+)", scope,
                         re.I)
    if match:
        kv = STATE["vaults"].get(match.group(2), {}).get(match.group(3), {})
        if match.group(4) not in kv:
            raise AzError(f"(InvalidResourceNamespace) The scope '{scope}' is not valid: the resource does not "
                          "exist.", 1)


def resolve_assignee(assignee: str) -> tuple[str, str]:
    """azure-cli's _resolve_object_id_and_type through Graph: a user principal name, then a service principal
    name (its app id among them), then an object id of a user, group or service principal."""
    directory = CFG.get("directory", [])
    for entry in directory:
        if ("@" in assignee and entry.get("upn") == assignee) or entry.get("appId") == assignee:
            return entry["id"], entry["type"]
    for entry in directory:
        if entry["id"] == assignee:
            return entry["id"], entry["type"]
    raise AzError(f"Cannot find user or service principal in graph database for '{assignee}'. If the assignee is an "
                  f"appId, make sure the corresponding service principal is created with 'az ad sp create --id "
                  f"{assignee}'.", 1)


@handles("role assignment create")
def role_create(opts: dict[str, Any]) -> Any:
    if bool(opts.get("--assignee")) == bool(opts.get("--assignee-object-id")):
        raise AzError("usage error: --assignee STRING | --assignee-object-id GUID", 1)
    if "--assignee-principal-type" in opts and "--assignee-object-id" not in opts:
        raise AzError("usage error: --assignee-object-id GUID --assignee-principal-type TYPE", 1)
    principal_type = opts.get("--assignee-principal-type", "User")
    if "--assignee" in opts:
        principal, principal_type = resolve_assignee(opts["--assignee"])
    else:
        principal = opts["--assignee-object-id"]
    existing = matching_assignments({"--scope": opts["--scope"], "--assignee-object-id": principal,
                                     "--role": opts["--role"]})
    if existing:  # az answers RoleAssignmentExists with the existing assignment
        return role_view(existing[0])
    check_scope(opts["--scope"])
    number = STATE["role_assignment_counter"] = STATE["role_assignment_counter"] + 1
    assignment = {"id": f"{opts['--scope']}/providers/Microsoft.Authorization/roleAssignments/ra-{number:04d}",
                  "principalId": principal, "principalType": principal_type,
                  "roleDefinitionId": role_id(opts["--role"]), "scope": opts["--scope"]}
    STATE["role_assignments"].append(assignment)
    STATE["rbac_pending"] = CFG["rbac_delay"]
    return role_view(assignment)


@handles("role assignment list")
def role_list(opts: dict[str, Any]) -> Any:
    return [role_view(a) for a in matching_assignments(opts)]


@handles("role assignment delete")
def role_delete(opts: dict[str, Any]) -> Any:
    if "--ids" in opts:
        STATE["role_assignments"] = [a for a in STATE["role_assignments"] if a["id"] not in opts["--ids"].split()]
        return None
    if not any(k in opts for k in ("--assignee", "--assignee-object-id", "--role", "--scope", "--resource-group")):
        raise AzError("Please provide at least one of these arguments: --ids, --assignee, --assignee-object-id, "
                      "--role, --resource-group, --scope", 2)
    found = matching_assignments(opts)
    if not found:
        raise AzError("No matched assignments were found to delete", 1)
    STATE["role_assignments"] = [a for a in STATE["role_assignments"] if a not in found]
    return None


@handles("deployment group create", "deployment group what-if")
def deployment_create(opts: dict[str, Any]) -> Any:
    if not STATE["group"] or opts["--resource-group"] != STATE["rg_name"]:
        raise AzError(f"(ResourceGroupNotFound) Resource group '{opts['--resource-group']}' could not be found.", 3)
    for value in opts.get("--parameters", []):
        if value.endswith(".bicepparam") and not local(value).is_file():
            raise AzError(f"Unable to find the parameters file '{value}'", 2)
    outputs = deployment_outputs(RECORD["env"])
    parameters = deployment_parameters(opts, RECORD["env"])
    if RECORD["command"] == "deployment group what-if":
        STATE["what_ifs"] += 1
        OUT.write("Note: The result may contain false positive predictions (noise).\n\n"
                         "Resource and property changes are indicated with these symbols:\n  + Create\n  ~ Modify\n\n"
                         f"The deployment will update the following scope:\n\nScope: {group_id()}\n\n"
                         f"  ~ Microsoft.Web/sites/{CFG['names']['functionApp']}\n\n"
                         "Resource changes: 1 to modify.\n")
        return None
    refuse_a_soft_deleted_vault(outputs["keyVaultName"]["value"])
    STATE["deployments"] += 1
    apply_immutability_policy(RECORD["env"])
    STATE["deployment"] = {"name": opts.get("--name", "main"), "outputs": outputs, "parameters": parameters}
    return {"name": STATE["deployment"]["name"],
            "properties": {"outputs": outputs, "parameters": parameters, "provisioningState": "Succeeded"}}


def refuse_a_soft_deleted_vault(name: str) -> None:
    """ARM refuses to create a vault whose name a soft-deleted one holds (the Key Vault provider's 409; az prints
    the failed deployment's error with its details, shown here in short)."""
    if name and any(v["name"] == name for v in STATE["deleted_vaults"]):
        raise AzError('{"status":"Failed","error":{"code":"DeploymentFailed","message":"At least one resource '
                      'deployment operation failed. Please list deployment operations for details. Please see '
                      'https://aka.ms/arm-deployment-operations for usage details.","details":[{"code":"ConflictError",'
                      '"message":"A vault with the same name already exists in deleted state. You need to either '
                      'recover or purge existing key vault. Follow this link https://go.microsoft.com/fwlink/?linkid='
                      '2149745 for more information on soft delete."}]}}', 1)


def deleted_view(record: dict[str, Any]) -> dict[str, Any]:
    """A DeletedVault as az prints it (azure-mgmt-keyvault: id, name, type, properties)."""
    return {"id": f"/subscriptions/{CFG['subscription']}/providers/Microsoft.KeyVault/locations/{record['location']}/"
                  f"deletedVaults/{record['name']}", "name": record["name"], "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {"vaultId": record["vaultId"], "location": record["location"],
                           "deletionDate": record["deletionDate"], "scheduledPurgeDate": record["scheduledPurgeDate"],
                           "purgeProtectionEnabled": True, "tags": {}}}


@handles("keyvault list-deleted")
def keyvault_list_deleted(opts: dict[str, Any]) -> Any:
    if STATE.get("list_deleted_denied"):  # no read access on the subscription
        raise AzError(f"(AuthorizationFailed) The client '{caller()}' does not have authorization to perform action "
                      f"'Microsoft.KeyVault/deletedVaults/read' over scope '/subscriptions/{CFG['subscription']}'.", 1)
    return [deleted_view(v) for v in STATE["deleted_vaults"]]


def deleted_vault(opts: dict[str, Any]) -> dict[str, Any]:
    """azure-cli's validate_deleted_vault_or_hsm_name: found by name among the deleted vaults."""
    for record in STATE["deleted_vaults"]:
        if record["name"].lower() == str(opts.get("--name", "")).lower():
            return record
    raise AzError(f"No deleted Vault or HSM was found with name {opts.get('--name')}", 1)


@handles("keyvault show-deleted")
def keyvault_show_deleted(opts: dict[str, Any]) -> Any:
    return deleted_view(deleted_vault(opts))


@handles("keyvault recover")
def keyvault_recover(opts: dict[str, Any]) -> Any:
    """Back into its original resource group (which must exist), with its contents."""
    record = deleted_vault(opts)
    original = record["vaultId"].split("/")[4]
    group = opts.get("--resource-group", original)
    if group != original:
        raise AzError("The specified resource group does not match that of the deleted vault or hsm "
                      f"{record['name']}. The vault or hsm must be recovered to the original resource group "
                      f"{original}.", 1)
    if not STATE["group"] or STATE["rg_name"] != group:
        raise AzError(f"(ResourceGroupNotFound) Resource group '{group}' could not be found.", 3)
    STATE["deleted_vaults"].remove(record)
    STATE["vaults"][record["name"]] = record["contents"] or {"secrets": {}, "certificates": {}}
    CFG["existing_vaults"].append(record["name"])
    STATE["config"]["existing_vaults"] = CFG["existing_vaults"]
    return {"id": record["vaultId"], "name": record["name"], "properties": {"provisioningState": "Succeeded"}}


@handles("resource show")
def resource_show(opts: dict[str, Any]) -> Any:
    """Only a Key Vault secret through Azure Resource Manager (Microsoft.KeyVault/vaults/secrets): its attributes
    (Unix times, as azure-mgmt-keyvault's Attributes) and never its value; the control plane knows no data-plane
    RBAC and no vault firewall."""
    match = re.fullmatch(r"(.*/providers/Microsoft\.KeyVault/vaults/([^/]+))/secrets/([^/]+)", opts.get("--ids", ""), re.I)
    if not match or not opts.get("--api-version"):
        raise AzError(f"fake az resource show: only --ids <vault id>/secrets/<name> --api-version V ({opts})", 2)
    vault_name, name = match.group(2), match.group(3)
    secret = STATE["vaults"].get(vault_name, {}).get("secrets", {}).get(name)
    if match.group(1).lower() != vault_id(vault_name).lower() or secret is None:
        raise AzError(f"(ResourceNotFound) The Resource 'Microsoft.KeyVault/vaults/{vault_name}/secrets/{name}' under "
                      f"resource group '{STATE['rg_name']}' was not found. For more details please go to "
                      "https://aka.ms/ARMResourceNotFoundFix", 3)
    expires = secret.get("expires")
    attributes = {"enabled": secret["enabled"], "created": 1700000000, "updated": 1700000000}
    if expires:
        attributes["exp"] = int(dt.datetime.fromisoformat(expires).timestamp())
    return {"id": opts["--ids"], "name": name, "type": "Microsoft.KeyVault/vaults/secrets", "location": STATE["group"],
            "properties": {"attributes": attributes, "contentType": secret.get("contentType"),
                           "secretUri": f"https://{vault_name}{cloud()['vault']}/secrets/{name}",
                           "secretUriWithVersion": f"https://{vault_name}{cloud()['vault']}/secrets/{name}/v1"}}


@handles("deployment group show")
def deployment_show(opts: dict[str, Any]) -> Any:
    deployment = STATE["deployment"]
    if not STATE["group"] or opts["--resource-group"] != STATE["rg_name"]:
        raise AzError(f"(ResourceGroupNotFound) Resource group '{opts['--resource-group']}' could not be found.", 3)
    if not deployment or deployment["name"] != opts["--name"]:
        raise AzError(f"(DeploymentNotFound) Deployment '{opts['--name']}' could not be found.", 3)
    outputs = {k: v for k, v in deployment["outputs"].items() if k not in STATE["missing_outputs"]}
    # A deployment from before a parameter existed has none of that name (missing_parameters).
    parameters = {k: v for k, v in deployment.get("parameters", {}).items() if k not in STATE["missing_parameters"]}
    return {"id": f"{group_id()}/providers/Microsoft.Resources/deployments/{deployment['name']}",
            "name": deployment["name"],
            "properties": {"outputs": outputs, "parameters": parameters, "provisioningState": "Succeeded"}}


@handles("identity show")
def identity_show(opts: dict[str, Any]) -> Any:
    names = CFG["names"]
    if opts.get("--name") != names["identity"]:
        raise AzError(f"(ResourceNotFound) The Resource '{opts.get('--name')}' was not found.", 3)
    return {"clientId": CFG["identity_client"], "principalId": STATE["identity_principal"],
            "tenantId": CFG["tenant"], "name": names["identity"],
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "id": f"{group_id()}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{names['identity']}"}


@handles("keyvault show")
def keyvault_show(opts: dict[str, Any]) -> Any:
    name = opts.get("--name")
    deployed = STATE["deployment"] and STATE["deployment"]["outputs"]["keyVaultName"]["value"]
    if name != deployed and name not in CFG["existing_vaults"]:
        raise AzError(f"(ResourceNotFound) The Resource 'Microsoft.KeyVault/vaults/{name}' was not found.", 3)
    return {"id": vault_id(name), "name": name, "properties": {"vaultUri": f"https://{name}{cloud()['vault']}/"}}


@handles("keyvault secret list")
def secret_list(opts: dict[str, Any]) -> Any:
    kv = vault(opts, "secrets")
    return [{"id": f"https://{opts['--vault-name']}{cloud()['vault']}/secrets/{name}", "name": name,
             "attributes": {"enabled": s["enabled"], "expires": s.get("expires")}, "contentType": s.get("contentType")}
            for name, s in kv["secrets"].items()]


@handles("keyvault secret show")
def secret_show(opts: dict[str, Any]) -> Any:
    name = opts.get("--name", "")
    kv = vault(opts, "secrets", name)
    secret = kv["secrets"].get(name)
    if secret is None:
        raise AzError(f"(SecretNotFound) A secret with (name/id) {name} was not found in this key vault. If you "
                      "recently deleted this secret you may be able to recover it using the correct recovery "
                      "command.\nCode: SecretNotFound", 3)
    if not secret["enabled"]:
        raise AzError("(Forbidden) Operation get is not allowed on a disabled secret.\nCode: Forbidden\n"
                      'Inner error: {\n    "code": "SecretDisabled"\n}', 1)
    return {"attributes": {"enabled": True, "expires": secret.get("expires"), "recoveryLevel": "Recoverable+Purgeable"},
            "contentType": secret.get("contentType"), "id": f"https://{opts['--vault-name']}{cloud()['vault']}/secrets/"
            f"{name}/v{secret.get('versions', 1)}", "kid": None, "managed": None, "name": name, "tags": None,
            "value": secret.get("value", "*" * secret.get("length", 40))}


@handles("keyvault secret set")
def secret_set(opts: dict[str, Any]) -> Any:
    if ("--value" in opts) == ("--file" in opts):
        raise AzError("usage error: --value VALUE | --file PATH", 2)
    expires = keyvault_datetime("--expires", opts["--expires"]) if "--expires" in opts else None
    if "--file" in opts:
        value = (STDIN or "") if opts["--file"] == "/dev/stdin" else local(opts["--file"]).read_text()
        RECORD["stdin"] = value
    else:
        value = opts["--value"]
    kv = vault(opts, "secrets", opts["--name"])
    if STATE["secret_set_fails"]:
        raise AzError("(Forbidden) The user, group or application does not have secrets set permission on key "
                      "vault.\nCode: Forbidden", 1)
    previous = kv["secrets"].get(opts["--name"], {})
    kv["secrets"][opts["--name"]] = {"expires": iso(expires) if expires else None, "enabled": True,
                                     "contentType": opts.get("--content-type"), "length": len(value),
                                     "versions": previous.get("versions", 0) + 1, "value": value}
    STATE["secret_values"][opts["--name"]] = hashlib.sha256(value.encode()).hexdigest()
    return {"id": f"https://{opts['--vault-name']}{cloud()['vault']}/secrets/{opts['--name']}/v1",
            "name": opts["--name"], "value": value,
            "attributes": {"enabled": True, "expires": iso(expires) if expires else None}}


@handles("keyvault certificate list")
def certificate_list(opts: dict[str, Any]) -> Any:
    kv = vault(opts, "certificates")
    return [certificate_view(name, cert, opts["--vault-name"]) for name, cert in kv["certificates"].items()]


@handles("keyvault certificate show")
def certificate_show(opts: dict[str, Any]) -> Any:
    name = opts.get("--name", "")
    kv = vault(opts, "certificates", name)
    cert = kv["certificates"].get(name)
    if cert is None:
        raise AzError(f"(CertificateNotFound) A certificate with (name/id) {name} was not found in this key vault.",
                      3)
    shown = certificate_view(name, cert, opts["--vault-name"])
    del shown["subject"]
    shown.update({"cer": "(base64 DER)", "contentType": cert["policy"].get("secret_properties", {})
                  .get("content_type"), "policy": cert["policy_camel"]})
    return shown


@handles("keyvault certificate create")
def certificate_create(opts: dict[str, Any]) -> Any:
    text = load_file_arg(opts["--policy"])
    try:
        policy_camel = json.loads(text)
    except json.JSONDecodeError:
        raise AzError("incorrect usage: policy should be a JSON encoded string or can use @{file} to load "
                      "from a file(e.g.@my_policy.json).", 2) from None
    kv = vault(opts, "certificates", opts["--name"])
    cert = kv["certificates"].setdefault(opts["--name"], {"versions": []})
    cert["policy_camel"] = policy_camel
    cert["policy"] = snake(policy_camel)
    STATE["certificate_policies"].append(cert["policy"])
    new_certificate_version(cert, opts["--name"])
    return {"id": f"https://{opts['--vault-name']}{cloud()['vault']}/certificates/{opts['--name']}/pending",
            "name": opts["--name"], "status": "completed", "issuerParameters": {"name": "Self"}}


@handles("ad app credential reset")
def credential_reset(opts: dict[str, Any]) -> Any:
    target = app(opts["--id"])
    if "--years" in opts and "--end-date" in opts:
        raise AzError("usage error: --years | --end-date", 1)
    if STATE["reset_fails"]:
        raise AzError("Insufficient privileges to complete the operation.", 1)
    start = now()
    end = (parse_any_date(opts["--end-date"]) if "--end-date" in opts
           else add_years(start, int(opts.get("--years", "1"))))
    if "--append" not in opts:
        target["passwordCredentials"] = []
    cert_name, keyvault_name = opts.get("--cert"), opts.get("--keyvault")
    if cert_name or "--create-cert" in opts:
        if not (cert_name and keyvault_name):
            raise AzError("fake az: only --cert NAME --keyvault VAULT is simulated", 2)
        kv = vault_by_name(keyvault_name, "certificates", cert_name)
        cert = kv["certificates"].get(cert_name)
        if cert is None:
            raise AzError(f"(CertificateNotFound) A certificate with (name/id) {cert_name} was not found "
                          "in this key vault.", 1)
        version = cert["versions"][-1]
        cert_end = dt.datetime.fromisoformat(version["expires"])
        if cert_end < end:  # azure-cli's _validate_app_dates
            ERR.write(f"WARNING: Certificate expires {cert_end}. Adjusting key credential end date "
                             "to match.\n")
            end = cert_end - dt.timedelta(seconds=1)
        keys = target["keyCredentials"] if "--append" in opts else []
        STATE["key_counter"] += 1
        keys.append({"customKeyIdentifier": version["thumbprint"], "displayName": opts.get("--display-name"),
                     "endDateTime": graph_time(end), "key": None, "keyId": f"key-{STATE['key_counter']}",
                     "startDateTime": graph_time(start), "type": "AsymmetricX509Cert", "usage": "Verify"})
        target["keyCredentials"] = keys
        password = None
    else:
        STATE["key_counter"] += 1
        key_id = f"pwd-{STATE['key_counter']}"
        # Every password is new; the first one the tests see is CFG["secret"], later ones carry it as a prefix.
        password = CFG["secret"] if not STATE["password_hashes"] else f"{CFG['secret']}~{STATE['key_counter']}"
        target["passwordCredentials"].append({
            "displayName": opts.get("--display-name"), "endDateTime": graph_time(end),
            "keyId": key_id, "startDateTime": graph_time(start),
            "hint": password[:3], "secretText": None})
        STATE["password_hashes"][key_id] = hashlib.sha256(password.encode()).hexdigest()
    ERR.write("WARNING: The output includes credentials that you must protect. Be sure that you do "
                     "not include these credentials in your code or check the credentials into your source "
                     "control. For more information, see https://aka.ms/azadsp-cli-creds\n")
    return {"appId": target["appId"], "password": password, "tenant": CFG["tenant"]}


@handles("ad app credential list")
def credential_list(opts: dict[str, Any]) -> Any:
    target = app(opts["--id"])
    return target["keyCredentials"] if "--cert" in opts else target["passwordCredentials"]


@handles("ad app credential delete")
def credential_delete(opts: dict[str, Any]) -> Any:
    target = app(opts["--id"])
    kind = "keyCredentials" if "--cert" in opts else "passwordCredentials"
    if not any(c["keyId"] == opts["--key-id"] for c in target[kind]):
        raise AzError(f"No key credential found with keyId as '{opts['--key-id']}'", 1)
    target[kind] = [c for c in target[kind] if c["keyId"] != opts["--key-id"]]
    STATE["password_hashes"].pop(opts["--key-id"], None)
    return None


@handles("ad app federated-credential list")
def federated_list(opts: dict[str, Any]) -> Any:
    return app(opts["--id"])["federatedIdentityCredentials"]


def federated_find(opts: dict[str, Any]) -> dict[str, Any]:
    for fic in app(opts["--id"])["federatedIdentityCredentials"]:
        if opts["--federated-credential-id"] in (fic["id"], fic["name"]):
            return fic
    raise AzError("Request_ResourceNotFound: Resource does not exist", 3)


@handles("ad app federated-credential show")
def federated_show(opts: dict[str, Any]) -> Any:
    return federated_find(opts)


@handles("ad app federated-credential delete")
def federated_delete(opts: dict[str, Any]) -> Any:
    fic = federated_find(opts)
    app(opts["--id"])["federatedIdentityCredentials"].remove(fic)
    return None


@handles("ad app federated-credential create")
def federated_create(opts: dict[str, Any]) -> Any:
    target = app(opts["--id"])
    body = federated_body(opts, create=True)
    if any(f["name"] == body["name"] for f in target["federatedIdentityCredentials"]):
        raise AzError(f"Request_BadRequest: FederatedIdentityCredential with name {body['name']} already exists.", 1)
    if len(target["federatedIdentityCredentials"]) >= 20:
        raise AzError("Request_BadRequest: Maximum number of federated identity credentials (20) reached.", 1)
    fic = {"id": f"fic-{len(target['federatedIdentityCredentials']) + 1}", "description": None, **body}
    target["federatedIdentityCredentials"].append(fic)
    return fic


@handles("ad app federated-credential update")
def federated_update(opts: dict[str, Any]) -> Any:
    body = federated_body(opts, create=False)
    fic = federated_find(opts)
    if "name" in body and body["name"] != fic["name"]:
        raise AzError("Request_BadRequest: Property 'name' is read-only and cannot be updated.", 1)
    fic.update(body)
    return None


# --- storage container immutability-policy (azure-cli's storage module, blob_containers management client) ----

def container_policy(opts: dict[str, Any]) -> dict[str, Any] | None:
    """The export container's policy record (None: none), after the lookups az makes."""
    account, container = opts["--account-name"], opts["--container-name"]
    group = opts.get("--resource-group", STATE["rg_name"])
    if not STATE["deployment"] or account != CFG["names"]["exportStorage"] or group != STATE["rg_name"]:
        raise AzError(f"(ResourceNotFound) The Resource 'Microsoft.Storage/storageAccounts/{account}' under "
                      f"resource group '{group}' was not found.", 3)
    if container not in ("graph-exports", "graph-exports-state"):
        raise AzError("(ContainerNotFound) The specified container does not exist.", 3)
    return STATE.get("immutability_policy") if container == "graph-exports" else None


def policy_view(policy: dict[str, Any]) -> dict[str, Any]:
    """az's output: the SDK model flattened by azure-cli's todict (properties.* at the top)."""
    group = group_id()
    return {"id": f"{group}/providers/Microsoft.Storage/storageAccounts/{CFG['names']['exportStorage']}/blobServices/"
                  "default/containers/graph-exports/immutabilityPolicies/default",
            "name": "default", "type": "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies",
            "systemData": None, "immutabilityPeriodSinceCreationInDays": policy["days"], "state": policy["state"],
            "allowProtectedAppendWrites": False, "allowProtectedAppendWritesAll": None, "etag": policy["etag"]}


def matched_policy(opts: dict[str, Any]) -> dict[str, Any]:
    policy = container_policy(opts)
    if policy is None:
        raise AzError("(ImmutabilityPolicyNotFound) The container has no immutability policy.", 1)
    if opts["--if-match"] not in ("*", policy["etag"]):
        raise AzError("(ConditionNotMet) The condition specified using HTTP conditional header(s) is not met.", 1)
    return policy


@handles("storage container immutability-policy show")
def immutability_show(opts: dict[str, Any]) -> Any:
    """transform_immutability_policy: nothing when the period is 0 (no policy, or a deleted one)."""
    policy = container_policy(opts)
    return policy_view(policy) if policy else None


@handles("storage container immutability-policy lock")
def immutability_lock(opts: dict[str, Any]) -> Any:
    policy = matched_policy(opts)
    if policy["state"] == "Locked":
        raise AzError("(ImmutabilityPolicyLocked) The immutability policy is already locked.", 1)
    policy.update(state="Locked", etag=new_etag())
    return policy_view(policy)


@handles("storage container immutability-policy extend")
def immutability_extend(opts: dict[str, Any]) -> Any:
    """Only a locked policy is extended (an unlocked one is changed with create), and never shortened."""
    policy = matched_policy(opts)
    days = int(opts.get("--period") or 0)
    if policy["state"] != "Locked":
        raise AzError("(ImmutabilityPolicyNotLocked) Only a locked immutability policy can be extended.", 1)
    if days < policy["days"]:
        raise AzError("(InvalidImmutabilityPolicyPeriod) A locked immutability policy's period can only be "
                      "increased.", 1)
    policy.update(days=days, etag=new_etag())
    return policy_view(policy)


@handles("storage container immutability-policy delete")
def immutability_delete(opts: dict[str, Any]) -> Any:
    policy = matched_policy(opts)
    if policy["state"] == "Locked":
        raise AzError("(ImmutabilityPolicyLocked) Deleting a locked immutability policy is not allowed.", 1)
    STATE["immutability_policy"] = None
    return None  # az's delete transform prints nothing


@handles("functionapp show")
def functionapp_show(opts: dict[str, Any]) -> Any:
    if not STATE["deployment"] or opts.get("--name") != CFG["names"]["functionApp"]:
        raise AzError(f"(ResourceNotFound) The Resource 'Microsoft.Web/sites/{opts.get('--name')}' was not found.", 3)
    return {"name": opts["--name"], "defaultHostName": f"{opts['--name']}.azurewebsites.net", "kind": "functionapp,linux",
            "state": "Running", "resourceGroup": STATE["rg_name"]}


@handles("functionapp keys list")
def functionapp_keys(opts: dict[str, Any]) -> Any:
    functionapp_show(opts)
    return {"functionKeys": {}, "masterKey": CFG["master_key"], "systemKeys": {}}


@handles("functionapp deployment source config-zip")
def config_zip(opts: dict[str, Any]) -> Any:
    """Flex Consumption: upload (202), poll the deployment up to --timeout, sleep 60 s, then poll the host's
    status 15 times (azure-cli's enable_zip_deploy_flex + check_flex_app_after_deployment)."""
    STATE["publishes"] += 1
    shutil.copy(local(opts["--src"]), HOME / "published.zip")
    ERR.write("WARNING: Getting scm site credentials for zip deployment\n"
                     "WARNING: Starting zip deployment. This operation can take a while to complete ...\n")
    outcome = STATE["zip_outcome"]
    if outcome == "conflict":
        raise AzError("There may be an ongoing deployment. Please track your deployment in "
                      f"https://{opts.get('--name')}.scm.azurewebsites.net/api/deployments/latest", 1)
    if outcome == "timeout":
        raise AzError("Timeout reached by the command, however, the deployment operation\n"
                      "                       is still on-going. Navigate to your scm site to check the deployment "
                      "status", 1)
    ERR.write("WARNING: Waiting for sync triggers...\nWARNING: Checking the health of the function app\n")
    if outcome in ("unhealthy", "slow"):  # "slow": up only after az stopped waiting (see host_status)
        raise AzError("Deployment was successful but the app appears to be unhealthy. Please check the app logs.", 1)
    return "Deployment was successful."


def run_call(argv: list[str], env: dict[str, str], cwd: str, stdin: str | None) -> tuple[int, str, str]:
    """One az call: (exit code, stdout, stderr). Recorded in $FAKE_AZ_HOME/calls.jsonl."""
    global HOME, CWD, STDIN, RECORD, OUT, ERR
    HOME, CWD, STDIN = Path(env["FAKE_AZ_HOME"]), Path(cwd), stdin
    OUT, ERR = io.StringIO(), io.StringIO()
    RECORD = {"argv": argv, "env": {k: v for k, v in env.items() if k.startswith("GRAPH_EXPORT_")}}
    STATE.clear()
    CFG.clear()
    code = 0
    result: Any = None
    opts: dict[str, Any] = {}
    try:
        command, opts = parse_command(argv)
        RECORD["command"] = command
    except AzError as exc:
        command = ""
        ERR.write(f"ERROR: {exc}\n")
        code = exc.code
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if command:
            STATE.update(json.loads((HOME / "state.json").read_text()))
            CFG.update(STATE["config"])
            try:
                handler = HANDLERS.get(command)
                if handler is None:
                    raise AzError(f"fake az: no behaviour for {command}", 2)
                if command in STATE["fail"]:  # a test's injected service error
                    raise AzError(STATE["fail"][command], 1)
                result = handler(opts)
                save()
            except AzError as exc:
                ERR.write(f"ERROR: {exc}\n")
                code = exc.code
        RECORD["rc"] = code
        with open(HOME / "calls.jsonl", "a") as log:
            log.write(json.dumps(RECORD) + "\n")
    if command and code == 0:
        emit(result, opts)
    return code, OUT.getvalue(), ERR.getvalue()


class CallHandler(socketserver.StreamRequestHandler):
    """One connection = one call: a JSON request {argv, env, cwd, stdin} until EOF, a JSON reply {rc, out, err}."""

    def handle(self) -> None:
        request = json.loads(self.rfile.read())
        try:
            rc, out, err = run_call(request["argv"], request["env"], request["cwd"], request["stdin"])
        except Exception:  # noqa: BLE001 - a bug in the fake must show in the test, not hang it
            rc, out, err = 2, "", "fake az crashed:\n" + traceback.format_exc()
        self.wfile.write(json.dumps({"rc": rc, "out": out, "err": err}).encode())


def serve(socket_path: str) -> None:
    """Answer calls one at a time (a pipe's two ends are two calls; the second reads its stdin first)."""
    parent = os.getppid()
    with socketserver.UnixStreamServer(socket_path, CallHandler) as server:
        server.timeout = 1
        print("ready", flush=True)
        while os.getppid() == parent:  # ends with the test session, even one that was killed
            server.handle_request()


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
        return 0
    argv = sys.argv[1:]
    stdin = sys.stdin.read() if "/dev/stdin" in argv or "@-" in argv else None
    rc, out, err = run_call(argv, dict(os.environ), os.getcwd(), stdin)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())

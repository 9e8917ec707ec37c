"""A stand-in for the az CLI (2.91) for the deploy.sh and README tests: records every call and answers like
the real CLI from a small simulated Azure + Entra ID kept in ``$FAKE_AZ_HOME/state.json``.

Run by the infrastructure virtualenv's Python (``.venv-iac``), which has ``jmespath``, the library az
evaluates ``--query`` with. What it copies from the real CLI (azure-cli 2.91 source and ``--help``):

- the options each command accepts, their aliases and which are required: an unknown option, a missing
  value or a missing required option fails with exit 2 as az's parser does;
- output: ``--query`` evaluated by jmespath on the real response shapes, then ``-o json`` (default),
  ``-o tsv`` (knack's rules: a list prints one item per line, a dict's values tab-separated in key order,
  ``null`` inside a list prints ``None``, a ``null`` result prints nothing) or ``-o none``;
- exit codes: 0, 1 (service error), 2 (usage error), 3 (resource not found);
- behaviours deploy.sh relies on: ``ad app list --display-name`` matches names that *start with* it,
  ``--filter "displayName eq '…'"`` exactly; ``ad app credential reset`` returns only
  ``{appId, password, tenant}`` (no end date), refuses ``--years`` with ``--end-date``, drops the other
  passwords without ``--append``, and with ``--cert NAME --keyvault VAULT`` registers that certificate's
  public key with the key credential's end clamped to the certificate's expiry;
  ``keyvault secret set --expires`` takes only ``Y-m-d'T'H:M:S'Z'`` and the shorter forms az accepts;
  ``keyvault certificate create --policy @file`` reads camelCase JSON (keys converted to snake case as
  az does); ``ad app federated-credential create`` needs name, issuer, subject and exactly one audience,
  and refuses a name that exists.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jmespath

HOME = Path(os.environ["FAKE_AZ_HOME"])
STATE_FILE = HOME / "state.json"
# Loaded under a lock in main(): the two ends of a pipe (credential reset | secret set) run at once.
STATE: dict[str, Any] = {}
CFG: dict[str, Any] = {}
STDIN: str | None = None
ARGS = sys.argv[1:]
RECORD: dict[str, Any] = {"argv": ARGS, "env": {k: v for k, v in os.environ.items() if k.startswith("GRAPH_EXPORT_")}}

GLOBAL = "--query --output|-o --only-show-errors! --debug! --verbose! --help|-h!"
# Per command: options (aliases joined by |), * = required, ! = takes no value. From `az <cmd> --help`.
SPEC = {
    "account show": "",
    "cloud show": "--name|-n",
    "group show": "--name|-n|--resource-group|-g* --subscription",
    "group create": "--name|-n|--resource-group|-g* --location|-l* --managed-by --tags --subscription",
    "ad app list": "--all! --app-id --display-name --filter --identifier-uri --show-mine!",
    "ad app create": "--display-name* --sign-in-audience --identifier-uris --required-resource-accesses",
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
    "rest": "--method|-m --uri|--url|-u* --body|-b --headers --resource --uri-parameters|--url-parameters "
            "--output-file --skip-authorization-header! --subscription",
    "deployment group create": "--resource-group|-g* --name|-n --parameters|-p --template-file|-f --mode "
                               "--no-wait! --subscription",
    "deployment group show": "--resource-group|-g* --name|-n* --subscription",
    "identity show": "--name|--resource-name|-n --resource-group|-g --ids --subscription",
    "keyvault show": "--name|-n --resource-group|-g --subscription",
    "keyvault secret list": "--vault-name --id --maxresults --include-managed --subscription",
    "keyvault secret set": "--vault-name* --name|-n* --value --file|-f --encoding|-e --expires --not-before "
                           "--content-type|--description --disabled --tags --subscription",
    "keyvault certificate create": "--vault-name* --name|-n* --policy|-p* --disabled --tags --validity --subscription",
    "keyvault certificate list": "--vault-name --id --maxresults --include-pending --subscription",
    "keyvault certificate show": "--vault-name --name|-n --id --version|-v --subscription",
    "functionapp deployment source config-zip": "--resource-group|-g --name|-n --src* --build-remote --slot|-s "
                                                "--timeout|-t --ids --subscription",
}

GRAPH_API = "00000003-0000-0000-c000-000000000000"
CLOUDS = {
    "AzureCloud": ("https://login.microsoftonline.com", "api://AzureADTokenExchange", ".vault.azure.net"),
    "AzureUSGovernment": ("https://login.microsoftonline.us", "api://AzureADTokenExchangeUSGov",
                          ".vault.usgovcloudapi.net"),
    "AzureChinaCloud": ("https://login.chinacloudapi.cn", "api://AzureADTokenExchangeChina", ".vault.azure.cn"),
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
        if name == "--parameters" and command == "deployment group create":
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


def load_file_arg(value: str) -> str:
    """az reads an argument that starts with @ from that file."""
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
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
        sys.stdout.write(tsv(result))
    else:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")


# --- the simulated tenant and subscription ---------------------------------------------------------------

def save() -> None:
    STATE_FILE.write_text(json.dumps(STATE, indent=1))


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


def deployment_outputs(env: dict[str, str]) -> dict[str, Any]:
    """What main.bicep outputs for these GRAPH_EXPORT_* values (main.bicepparam reads them)."""
    credential = env.get("GRAPH_EXPORT_CLIENT_CREDENTIAL") or "secret"
    if credential not in ("secret", "certificate", "federated"):
        raise AzError(f"InvalidTemplate: The provided value '{credential}' for the template parameter "
                      "'clientCredential' is not valid. The value must be one of: secret, certificate, federated.", 1)
    login, audience, vault_dns = CLOUDS[CFG["cloud"]]
    names = CFG["names"]
    vault = "" if credential == "federated" else names["keyVault"]
    values = {
        "functionAppName": names["functionApp"],
        "functionAppPrincipalId": STATE["identity_principal"],
        "clientCredential": credential,
        "keyVaultName": vault,
        "keyVaultUri": f"https://{vault}{vault_dns}/" if vault else "",
        "clientSecretName": "graph-client-secret",
        "clientCertificateName": "graph-client-certificate",
        "identityName": names["identity"],
        "identityClientId": CFG["identity_client"],
        "identityPrincipalId": STATE["identity_principal"],
        "federatedCredentialIssuer": f"{login}/{CFG['tenant']}/v2.0",
        "federatedTokenAudience": audience,
        "hostStorageAccountName": names["hostStorage"],
        "exportStorageAccountName": names["exportStorage"],
        "exportBlobEndpoint": f"https://{names['exportStorage']}.blob.core.windows.net/",
        "exportContainerName": "graph-exports",
        "appInsightsName": "graphexp-appi-abc",
        "logAnalyticsWorkspaceName": "graphexp-log-abc",
    }
    return {k: {"type": "String", "value": v} for k, v in values.items()}


def vault(opts: dict[str, Any]) -> dict[str, Any]:
    name = opts.get("--vault-name")
    if not name:
        raise AzError("usage error: --vault-name VAULT | --id ID", 2)
    vaults = STATE["vaults"]
    deployed = STATE["deployment"] and STATE["deployment"]["outputs"]["keyVaultName"]["value"]
    if name not in vaults and name != deployed and name not in CFG["existing_vaults"]:
        raise AzError(f"Failed to resolve '{name}.vault.azure.net'", 1)
    if STATE["vault_denials"] > 0:
        STATE["vault_denials"] -= 1
        save()
        raise AzError("(Forbidden) Caller is not authorized to perform action on resource. "
                      "Inner error: ForbiddenByRbac", 1)
    return vaults.setdefault(name, {"secrets": {}, "certificates": {}})


def certificate_view(name: str, cert: dict[str, Any], vault_name: str) -> dict[str, Any]:
    version = cert["versions"][-1]
    return {
        "attributes": {"created": version["created"], "enabled": True, "expires": version["expires"],
                       "notBefore": version["notBefore"], "recoveryLevel": "Recoverable", "updated": version["created"]},
        "id": f"https://{vault_name}.vault.azure.net/certificates/{name}/{version['version']}",
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
    if os.path.isfile(text):
        text = Path(text).read_text()
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


def run(command: str, opts: dict[str, Any]) -> Any:  # noqa: C901 - one branch per command, as a table
    if command == "account show":
        return {"environmentName": CFG["cloud"], "id": "sub-1", "isDefault": True, "name": "Subscription 1",
                "tenantId": CFG["tenant"], "user": {"name": "me@example.com", "type": "user"}}
    if command == "cloud show":
        login = CLOUDS[CFG["cloud"]][0]
        return {"name": CFG["cloud"], "isActive": True, "endpoints": {"activeDirectory": login}}
    if command == "group show":
        if not STATE["group"]:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{opts['--name']}' could not be found.", 3)
        return {"name": opts["--name"], "location": STATE["group"], "properties": {"provisioningState": "Succeeded"}}
    if command == "group create":
        STATE["group"] = opts["--location"]
        return {"name": opts["--name"], "location": STATE["group"]}
    if command == "ad app list":
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
    if command == "ad app create":
        created = new_app(CFG["new_app"], opts["--display-name"])
        STATE["apps"].append(created)
        return created
    if command == "ad sp list":
        match = re.fullmatch(r"appId eq '([0-9a-f-]+)'", opts.get("--filter", ""))
        return [{"id": CFG["sp"], "appId": match.group(1)}] if match and STATE["sp"] else []
    if command in ("ad sp show", "ad sp create"):
        if command == "ad sp create":
            app(opts["--id"])
            STATE["sp"] = True
        if not STATE["sp"]:
            raise AzError(f"Service principal '{opts['--id']}' doesn't exist", 3)
        return {"id": CFG["sp"], "appId": opts["--id"]}
    if command == "ad signed-in-user show":
        return {"id": CFG["me"], "userPrincipalName": "me@example.com"}
    if command == "ad app permission list":
        app(opts["--id"])
        return ([{"resourceAppId": GRAPH_API, "resourceAccess": [{"id": CFG["user_read_all"], "type": "Role"}]}]
                if STATE["permission"] else [])
    if command == "ad app permission add":
        app(opts["--id"])
        STATE["permission"] = True
        return None
    if command == "ad app permission admin-consent":
        if STATE["consent_fails"]:
            raise AzError("Insufficient privileges to complete the operation.", 1)
        STATE["consented"] = True
        return None
    if command == "rest":
        if opts.get("--method", "get").lower() == "get" and opts["--uri"].endswith("/appRoleAssignments"):
            return {"value": [{"id": "assignment-1", "appRoleId": CFG["user_read_all"]}] if STATE["consented"] else []}
        raise AzError(f"fake az rest: unexpected request {opts.get('--method')} {opts['--uri']}", 1)
    if command == "deployment group create":
        if not STATE["group"]:
            raise AzError(f"(ResourceGroupNotFound) Resource group '{opts['--resource-group']}' could not be found.", 3)
        for value in opts.get("--parameters", []):
            if value.endswith(".bicepparam") and not Path(value).is_file():
                raise AzError(f"Unable to find the parameters file '{value}'", 2)
        outputs = deployment_outputs(RECORD["env"])
        STATE["deployments"] += 1
        STATE["deployment"] = {"name": opts.get("--name", "main"), "outputs": outputs}
        return {"name": STATE["deployment"]["name"], "properties": {"outputs": outputs, "provisioningState": "Succeeded"}}
    if command == "deployment group show":
        deployment = STATE["deployment"]
        if not deployment or deployment["name"] != opts["--name"]:
            raise AzError(f"(DeploymentNotFound) Deployment '{opts['--name']}' could not be found.", 3)
        return {"id": f"/subscriptions/sub-1/resourceGroups/{opts['--resource-group']}/providers/"
                      f"Microsoft.Resources/deployments/{deployment['name']}",
                "name": deployment["name"],
                "properties": {"outputs": deployment["outputs"], "provisioningState": "Succeeded"}}
    if command == "identity show":
        names = CFG["names"]
        if opts.get("--name") != names["identity"]:
            raise AzError(f"(ResourceNotFound) The Resource '{opts.get('--name')}' was not found.", 3)
        return {"clientId": CFG["identity_client"], "principalId": STATE["identity_principal"],
                "tenantId": CFG["tenant"], "name": names["identity"],
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "id": f"/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
                      f"userAssignedIdentities/{names['identity']}"}
    if command == "keyvault secret list":
        kv = vault(opts)
        return [{"id": f"https://{opts['--vault-name']}.vault.azure.net/secrets/{name}", "name": name,
                 "attributes": {"enabled": True, "expires": s.get("expires")}} for name, s in kv["secrets"].items()]
    if command == "keyvault secret set":
        if ("--value" in opts) == ("--file" in opts):
            raise AzError("usage error: --value VALUE | --file PATH", 2)
        expires = keyvault_datetime("--expires", opts["--expires"]) if "--expires" in opts else None
        kv = vault(opts)
        if "--file" in opts:
            if opts["--file"] == "/dev/stdin":
                value = STDIN or ""
            else:
                value = Path(opts["--file"]).read_text()
            RECORD["stdin"] = value
        else:
            value = opts["--value"]
        kv["secrets"][opts["--name"]] = {"expires": iso(expires) if expires else None,
                                         "contentType": opts.get("--content-type")}
        STATE["secret_values"][opts["--name"]] = hashlib.sha256(value.encode()).hexdigest()
        return {"id": f"https://{opts['--vault-name']}.vault.azure.net/secrets/{opts['--name']}/v1",
                "name": opts["--name"], "value": value,
                "attributes": {"enabled": True, "expires": iso(expires) if expires else None}}
    if command == "keyvault certificate list":
        kv = vault(opts)
        return [certificate_view(name, cert, opts["--vault-name"]) for name, cert in kv["certificates"].items()]
    if command == "keyvault certificate show":
        kv = vault(opts)
        cert = kv["certificates"].get(opts.get("--name", ""))
        if cert is None:
            raise AzError(f"(CertificateNotFound) A certificate with (name/id) {opts.get('--name')} was not found "
                          "in this key vault.", 3)
        shown = certificate_view(opts["--name"], cert, opts["--vault-name"])
        del shown["subject"]
        shown.update({"cer": "(base64 DER)", "contentType": cert["policy"].get("secret_properties", {})
                      .get("content_type"), "policy": cert["policy_camel"]})
        return shown
    if command == "keyvault certificate create":
        text = load_file_arg(opts["--policy"])
        try:
            policy_camel = json.loads(text)
        except json.JSONDecodeError:
            raise AzError("incorrect usage: policy should be a JSON encoded string or can use @{file} to load "
                          "from a file(e.g.@my_policy.json).", 2) from None
        kv = vault(opts)
        cert = kv["certificates"].setdefault(opts["--name"], {"versions": []})
        cert["policy_camel"] = policy_camel
        cert["policy"] = snake(policy_camel)
        STATE["certificate_policies"].append(cert["policy"])
        new_certificate_version(cert, opts["--name"])
        return {"id": f"https://{opts['--vault-name']}.vault.azure.net/certificates/{opts['--name']}/pending",
                "name": opts["--name"], "status": "completed", "issuerParameters": {"name": "Self"}}
    if command == "ad app credential reset":
        target = app(opts["--id"])
        if "--years" in opts and "--end-date" in opts:
            raise AzError("usage error: --years | --end-date", 1)
        start = now()
        end = (parse_any_date(opts["--end-date"]) if "--end-date" in opts
               else add_years(start, int(opts.get("--years", "1"))))
        if "--append" not in opts:
            target["passwordCredentials"] = []
        cert_name, keyvault_name = opts.get("--cert"), opts.get("--keyvault")
        if cert_name or "--create-cert" in opts:
            if not (cert_name and keyvault_name):
                raise AzError("fake az: only --cert NAME --keyvault VAULT is simulated", 2)
            kv = STATE["vaults"].get(keyvault_name, {"certificates": {}})
            cert = kv["certificates"].get(cert_name)
            if cert is None:
                raise AzError(f"(CertificateNotFound) A certificate with (name/id) {cert_name} was not found "
                              "in this key vault.", 1)
            version = cert["versions"][-1]
            cert_end = dt.datetime.fromisoformat(version["expires"])
            if cert_end < end:  # azure-cli's _validate_app_dates
                sys.stderr.write(f"WARNING: Certificate expires {cert_end}. Adjusting key credential end date "
                                 "to match.\n")
                end = cert_end - dt.timedelta(seconds=1)
            keys = target["keyCredentials"] if "--append" in opts else []
            keys.append({"customKeyIdentifier": version["thumbprint"], "displayName": opts.get("--display-name"),
                         "endDateTime": graph_time(end), "key": None, "keyId": f"key-{len(keys) + 1}",
                         "startDateTime": graph_time(start), "type": "AsymmetricX509Cert", "usage": "Verify"})
            target["keyCredentials"] = keys
            password = None
        else:
            target["passwordCredentials"].append({
                "displayName": opts.get("--display-name"), "endDateTime": graph_time(end),
                "keyId": f"pwd-{len(target['passwordCredentials']) + 1}", "startDateTime": graph_time(start),
                "hint": CFG["secret"][:3], "secretText": None})
            password = CFG["secret"]
        sys.stderr.write("WARNING: The output includes credentials that you must protect. Be sure that you do "
                         "not include these credentials in your code or check the credentials into your source "
                         "control. For more information, see https://aka.ms/azadsp-cli-creds\n")
        return {"appId": target["appId"], "password": password, "tenant": CFG["tenant"]}
    if command == "ad app credential list":
        target = app(opts["--id"])
        return target["keyCredentials"] if "--cert" in opts else target["passwordCredentials"]
    if command == "ad app credential delete":
        target = app(opts["--id"])
        kind = "keyCredentials" if "--cert" in opts else "passwordCredentials"
        target[kind] = [c for c in target[kind] if c["keyId"] != opts["--key-id"]]
        return None
    if command == "ad app federated-credential list":
        return app(opts["--id"])["federatedIdentityCredentials"]
    if command == "ad app federated-credential show":
        for fic in app(opts["--id"])["federatedIdentityCredentials"]:
            if opts["--federated-credential-id"] in (fic["id"], fic["name"]):
                return fic
        raise AzError("Request_ResourceNotFound: Resource does not exist", 3)
    if command == "ad app federated-credential create":
        target = app(opts["--id"])
        body = federated_body(opts, create=True)
        if any(f["name"] == body["name"] for f in target["federatedIdentityCredentials"]):
            raise AzError(f"Request_BadRequest: FederatedIdentityCredential with name {body['name']} already exists.", 1)
        if len(target["federatedIdentityCredentials"]) >= 20:
            raise AzError("Request_BadRequest: Maximum number of federated identity credentials (20) reached.", 1)
        fic = {"id": f"fic-{len(target['federatedIdentityCredentials']) + 1}", "description": None, **body}
        target["federatedIdentityCredentials"].append(fic)
        return fic
    if command == "ad app federated-credential update":
        target = app(opts["--id"])
        body = federated_body(opts, create=False)
        for fic in target["federatedIdentityCredentials"]:
            if opts["--federated-credential-id"] in (fic["id"], fic["name"]):
                if "name" in body and body["name"] != fic["name"]:
                    raise AzError("Request_BadRequest: Property 'name' is read-only and cannot be updated.", 1)
                fic.update(body)
                return None
        raise AzError("Request_ResourceNotFound: Resource does not exist", 3)
    if command == "functionapp deployment source config-zip":
        shutil.copy(opts["--src"], HOME / "published.zip")
        return {"status": 4, "complete": True}
    raise AzError(f"fake az: no behaviour for {command}", 2)


def main() -> int:
    global STDIN
    code = 0
    result: Any = None
    opts: dict[str, Any] = {}
    try:
        command, opts = parse_command(ARGS)
        RECORD["command"] = command
        if opts.get("--file") == "/dev/stdin":
            STDIN = sys.stdin.read()  # before the lock: the writer at the other end of the pipe needs it
    except AzError as exc:
        command = ""
        sys.stderr.write(f"ERROR: {exc}\n")
        code = exc.code
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if command:
            STATE.update(json.loads(STATE_FILE.read_text()))
            CFG.update(STATE["config"])
            try:
                result = run(command, opts)
                save()
            except AzError as exc:
                sys.stderr.write(f"ERROR: {exc}\n")
                code = exc.code
        RECORD["rc"] = code
        with open(HOME / "calls.jsonl", "a") as log:
            log.write(json.dumps(RECORD) + "\n")
    if command and code == 0:
        emit(result, opts)
    return code


if __name__ == "__main__":
    sys.exit(main())

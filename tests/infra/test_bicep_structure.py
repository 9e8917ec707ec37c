"""Structural checks on the parsed Bicep: the security properties the issue asks for hold.

These read pycep-parser's JSON (identifiers and string literals both come out as plain strings), so a
value like 'TLS1_2' is compared as text. checkov covers generic rules; these pin this project's choices.
"""

from __future__ import annotations

import ast
import json
import re

from .bicep_helpers import INFRA, body, condition, dig, mentions, only, param_default, resources_of

ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageQueueDataMessageSender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
}
CREDENTIALS = ["secret", "certificate", "federated"]


def _accessor(module: str, *path: str) -> dict:
    """pycep's shape of `module.outputs.x` (nested property accessors)."""
    value: object = path[-1]
    for name in reversed(path[:-1]):
        value = {"operator": {"type": "property_accessor", "operands": {"operand_1": name, "operand_2": value}}}
    return {"operator": {"type": "property_accessor", "operands": {"operand_1": module, "operand_2": value}}}


# --- storage ------------------------------------------------------------------------------------------

def test_storage_is_entra_only_private_and_tls12(bicep):
    props = only(bicep["modules/storage.bicep"], "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowCrossTenantReplication"] is False
    assert props["isLocalUserEnabled"] is False


def test_storage_soft_deletes_blobs_and_containers(bicep):
    doc = bicep["modules/storage.bicep"]
    props = only(doc, "Microsoft.Storage/storageAccounts/blobServices")["properties"]
    for policy in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy"):
        assert props[policy]["enabled"] is True
        assert props[policy]["days"] == "softDeleteRetentionDays"
    assert param_default(doc, "softDeleteRetentionDays") >= 1
    containers = only(doc, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert containers["properties"]["publicAccess"] == "None"


def test_export_container_has_a_retention_lifecycle_rule(bicep):
    doc = bicep["modules/storage.bicep"]
    rule = dig(only(doc, "Microsoft.Storage/storageAccounts/managementPolicies"), "properties", "policy", "rules")[0]
    assert rule["enabled"] is True
    prefixes = rule["definition"]["filters"]["prefixMatch"]  # [for lifecycleContainerName in ...: '<name>/']
    assert prefixes["loop_type"]["detail"] == {"item_name": "lifecycleContainerName",
                                               "array_name": "lifecycleContainerNames"}
    assert prefixes["config"] == "${lifecycleContainerName}/", "the trailing slash: graph-exports/ is not graph-exports-x/"
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert delete["daysAfterModificationGreaterThan"] == "deleteAfterDays"

    main = bicep["main.bicep"]
    export = main["modules"]["exportStorage"]["config"]["params"]
    assert export["deleteAfterDays"] == "exportRetentionDays"
    # The export container, and with exportImmutabilityDays the state container (test_bicep_immutability.py).
    assert export["lifecycleContainerNames"] == "exportContainerNames"
    assert export["containerNames"] == "exportContainerNames"
    assert param_default(main, "exportRetentionDays") == 90


def test_export_data_is_apart_from_the_host_storage(bicep):
    main = bicep["main.bicep"]
    host = main["modules"]["hostStorage"]["config"]["params"]
    export = main["modules"]["exportStorage"]["config"]["params"]
    assert host["name"] != export["name"]
    names = main["variables"]["names"]["value"]
    assert names["hostStorage"] != names["exportStorage"]
    assert "exportContainerName" not in str(host.get("containerNames"))
    assert "deleteAfterDays" not in host, "the lifecycle rule belongs to the export account only"
    assert export.get("auditWorkspaceId"), "reads of the personal data are audited"


# --- key vault ----------------------------------------------------------------------------------------

def test_key_vault_is_rbac_only_with_purge_protection(bicep):
    props = only(bicep["modules/keyvault.bicep"], "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["softDeleteRetentionInDays"] >= 7
    assert not props.get("accessPolicies"), "RBAC authorization: no access policies"
    assert props["enabledForTemplateDeployment"] is False


def test_the_vault_is_deployed_only_for_a_secret_or_a_certificate(bicep):
    main = bicep["main.bicep"]
    assert main["variables"]["useKeyVault"]["value"] == {"operator": {"type": "not_equals", "operands": {
        "operand_1": "clientCredential", "operand_2": "federated"}}}
    assert main["modules"]["keyVault"]["config"]["condition"] == "useKeyVault"
    settings = main["variables"]["exportAppSettings"]["value"]
    assert settings["KEY_VAULT_URL"] == {"operator": {"type": "conditional", "operands": {
        "condition": "useKeyVault", "true_value": _accessor("keyVault", "outputs", "uri"), "false_value": ""}}}
    for output in ("keyVaultName", "keyVaultUri"):
        value = main["outputs"][output]["value"]["operator"]["operands"]
        assert value["condition"] == "useKeyVault" and value["false_value"] == ""


def test_no_secret_resource_is_created_by_bicep(bicep):
    for path, doc in bicep.items():
        for rtype in ("Microsoft.KeyVault/vaults/secrets", "Microsoft.KeyVault/vaults/accessPolicies"):
            assert not resources_of(doc, rtype, existing=None), f"{path} declares {rtype}"


# --- function app -------------------------------------------------------------------------------------

def test_plan_is_flex_consumption_linux(bicep):
    plan = only(bicep["modules/functionapp.bicep"], "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_site_is_locked_down(bicep):
    site = only(bicep["modules/functionapp.bicep"], "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    # One identity, user-assigned (modules/identity.bicep): no system-assigned one to hold stray rights.
    assert site["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${identityId}'": {}}}
    props = site["properties"]
    assert props["httpsOnly"] is True
    config = props["siteConfig"]
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"
    assert config["remoteDebuggingEnabled"] is False


# Site properties the Flex Consumption plan deprecates ("Flex Consumption plan deprecations" in the Functions app
# settings reference): ftpsState ("FTPS not supported"), and those replaced by functionAppConfig.
FLEX_DEPRECATED_SITE_PROPERTIES = {
    "ftpsState", "alwaysOn", "containerSize", "dnsConfiguration", "isReserved", "IsXenon", "javaVersion",
    "linuxFxVersion", "netFrameworkVersion", "powerShellVersion", "functionAppScaleLimit", "preWarmedInstanceCount",
    "use32BitWorkerProcess", "vnetBackupRestoreEnabled", "vnetContentShareEnabled", "vnetImagePullEnabled",
    "vnetRouteAllEnabled", "windowsFxVersion",
}


def test_no_site_property_flex_consumption_deprecates(bicep):
    props = only(bicep["modules/functionapp.bicep"], "Microsoft.Web/sites")["properties"]
    used = {name.lower() for name in (*props, *props["siteConfig"])}
    found = {name for name in FLEX_DEPRECATED_SITE_PROPERTIES if name.lower() in used}
    assert not found, f"Flex Consumption deprecates these site properties: {sorted(found)}"


def test_basic_publishing_credentials_are_disabled(bicep):
    policies = resources_of(bicep["modules/functionapp.bicep"], "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}


def test_flex_config_uses_the_identity_for_the_deployment_package(bicep):
    doc = bicep["modules/functionapp.bicep"]
    flex = only(doc, "Microsoft.Web/sites")["properties"]["functionAppConfig"]
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert storage["value"] == "${hostBlobEndpoint}${deploymentContainerName}"
    assert flex["runtime"] == {"name": "python", "version": "pythonVersion"}
    # 3.13: the Functions worker is then PyPI's azure-functions-runtime, which tests/engine drives.
    assert param_default(doc, "pythonVersion") == "3.13"
    assert {"type": "allowed", "argument": ["3.13"]} in doc["parameters"]["pythonVersion"]["decorators"]
    assert flex["scaleAndConcurrency"]["instanceMemoryMB"] == "instanceMemoryMB"
    assert param_default(doc, "instanceMemoryMB") == 2048
    assert flex["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"


def test_maximum_instance_count_allows_only_what_flex_accepts(bicep):
    """Flex Consumption accepts 40 to 1000 instances; 40 is the samples' default."""
    main = bicep["main.bicep"]
    for doc in (main, bicep["modules/functionapp.bicep"]):
        param = doc["parameters"]["maximumInstanceCount"]
        assert param["default"] == 40
        assert {"type": "min_value", "argument": 40} in param["decorators"]
        assert {"type": "max_value", "argument": 1000} in param["decorators"]
    assert main["modules"]["functionApp"]["config"]["params"]["maximumInstanceCount"] == "maximumInstanceCount"


def test_host_storage_and_telemetry_are_identity_based(bicep):
    doc = bicep["modules/functionapp.bicep"]
    host = doc["variables"]["hostSettings"]["value"]
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert host["AzureWebJobsStorage__clientId"] == "identityClientId", "a user-assigned identity is named"
    # Blob (timer status, singleton lease, the package) and queue; a timer app uses no tables (the official Flex
    # timer sample turns them off), so neither a table endpoint setting nor a table role exists.
    assert {name for name in host if name.endswith("ServiceUri")} == {
        "AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri"}
    assert host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in host
    assert "AzureWebJobsStorage" not in host, "no connection string: shared key access is disabled"


def test_no_settings_flex_consumption_rejects(bicep):
    forbidden = {"WEBSITE_RUN_FROM_PACKAGE", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                 "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE"}
    for path in INFRA.rglob("*.bicep*"):
        code = [line for line in path.read_text().splitlines() if not line.strip().startswith("//")]
        for name in forbidden:
            assert not any(name in line for line in code), f"{path.name} sets {name}, which Flex Consumption does not take"


def test_application_insights_has_local_auth_disabled_on_a_workspace(bicep):
    doc = bicep["modules/monitoring.bicep"]
    props = only(doc, "Microsoft.Insights/components")["properties"]
    assert props["DisableLocalAuth"] is True
    assert mentions(props["WorkspaceResourceId"], "workspace")
    assert only(doc, "Microsoft.OperationalInsights/workspaces")["properties"]["features"]["disableLocalAuth"] is True


# --- the user-assigned identity and the credential kinds --------------------------------------------

def test_the_identity_is_a_user_assigned_identity_in_our_own_module(bicep):
    doc = bicep["modules/identity.bicep"]
    assert only(doc, "Microsoft.ManagedIdentity/userAssignedIdentities")["name"] == "name"
    outputs = doc["outputs"]
    assert outputs["clientId"]["value"] == _accessor("identity", "properties", "clientId")
    assert outputs["principalId"]["value"] == _accessor("identity", "properties", "principalId")
    assert outputs["tenantId"]["value"] == _accessor("identity", "properties", "tenantId")
    main = bicep["main.bicep"]
    assert main["modules"]["identity"]["detail"]["path"] == "modules/identity.bicep"


def test_the_identity_gets_its_roles_before_the_function_app_exists(bicep):
    main = bicep["main.bicep"]["modules"]
    roles = main["roles"]["config"]
    assert roles["params"]["principalId"] == _accessor("identity", "outputs", "principalId")
    assert not mentions(roles, "functionApp"), "the roles must not wait for (or depend on) the function app"
    app = main["functionApp"]["config"]
    assert "roles" in app["dependsOn"]
    assert app["params"]["identityId"] == _accessor("identity", "outputs", "id")
    assert app["params"]["identityClientId"] == _accessor("identity", "outputs", "clientId")
    assert roles["params"]["clientCredential"] == "clientCredential"
    assert "keyVault" in roles["dependsOn"], "the vault's role waits for the vault"


def test_client_credential_parameter_and_the_settings_it_drives(bicep):
    main = bicep["main.bicep"]
    param = main["parameters"]["clientCredential"]
    assert param["default"] == "secret"
    assert {"type": "allowed", "argument": CREDENTIALS} in param["decorators"]
    assert param_default(main, "clientCertificateName") == "graph-client-certificate"
    settings = main["variables"]["exportAppSettings"]["value"]
    assert settings["CLIENT_CREDENTIAL"] == "clientCredential"
    assert settings["CLIENT_CERTIFICATE_NAME"] == "clientCertificateName"
    assert settings["MANAGED_IDENTITY_CLIENT_ID"] == _accessor("identity", "outputs", "clientId")
    assert settings["FEDERATED_TOKEN_AUDIENCE"] == "federatedTokenAudience"
    assert settings["CREDENTIAL_EXPIRY_WARNING_DAYS"] == "credentialExpiryWarningDays"
    roles = bicep["modules/roles.bicep"]["parameters"]["clientCredential"]
    assert {"type": "allowed", "argument": CREDENTIALS} in roles["decorators"]


def test_the_federated_credential_outputs_name_this_cloud_and_the_identity(bicep):
    main = bicep["main.bicep"]
    outputs = main["outputs"]
    assert outputs["federatedCredentialIssuer"]["value"] == "${loginHost}/${identity.outputs.tenantId}/v2.0"
    assert main["variables"]["loginEndpoint"]["value"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": {"function": {"type": "environment", "property_name": "authentication"}},
        "operand_2": "loginEndpoint"}}}
    host = main["variables"]["loginHost"]["value"]["operator"]["operands"]  # the endpoint without a trailing '/'
    assert host["condition"]["function"]["type"] == "ends_with" and host["false_value"] == "loginEndpoint"
    assert outputs["identityPrincipalId"]["value"] == _accessor("identity", "outputs", "principalId")
    assert outputs["federatedTokenAudience"]["value"] == "federatedTokenAudience"
    assert outputs["clientCredential"]["value"] == "clientCredential"
    main_text = (INFRA / "main.bicepparam").read_text()
    assert "param clientCredential = readEnvironmentVariable('GRAPH_EXPORT_CLIENT_CREDENTIAL', 'secret')" in main_text


def test_the_certificate_policy_renews_a_self_signed_exportable_rsa_key():
    """infra/certificate-policy.json, read by `az keyvault certificate create --policy @file` (camelCase keys,
    as `az keyvault certificate get-default-policy` prints them)."""
    policy = json.loads((INFRA / "certificate-policy.json").read_text())
    assert set(policy) == {"issuerParameters", "keyProperties", "secretProperties", "x509CertificateProperties",
                           "lifetimeActions"}
    assert policy["issuerParameters"] == {"name": "Self"}
    key = policy["keyProperties"]
    assert key == {"exportable": True, "keyType": "RSA", "keySize": 2048, "reuseKey": False}, \
        "exportable: the app reads the private key through the backing secret; a new key on each renewal"
    assert policy["secretProperties"] == {"contentType": "application/x-pkcs12"}
    x509 = policy["x509CertificateProperties"]
    assert x509["subject"].startswith("CN=") and "digitalSignature" in x509["keyUsage"]
    assert 1 <= x509["validityInMonths"] <= 24
    [action] = policy["lifetimeActions"]
    assert action["action"] == {"actionType": "AutoRenew"}
    trigger = action["trigger"]
    assert set(trigger) == {"lifetimePercentage"} and 50 <= trigger["lifetimePercentage"] <= 90


# --- role assignments ---------------------------------------------------------------------------------

def _assignments(bicep):
    doc = bicep["modules/roles.bicep"]
    role_vars = doc["variables"]["roleIds"]["value"]
    found = {}
    for name, res in resources_of(doc, "Microsoft.Authorization/roleAssignments").items():
        cfg = body(res)
        role_ref = dig(cfg, "properties", "roleDefinitionId", "function", "parameters", "resource_name_1")
        role_key = role_ref["operator"]["operands"]["operand_2"]
        found[name] = {
            "scope": cfg["scope"],
            "role": role_vars[role_key],
            "principal": cfg["properties"]["principalId"],
            "name": cfg["name"],
            "conditional": condition(res) is not None,
        }
    return doc, role_vars, found


def test_role_guids_are_the_built_in_ones(bicep):
    _, role_vars, _ = _assignments(bicep)
    assert role_vars == ROLE_IDS


def test_app_identity_gets_exactly_the_least_privilege_roles(bicep):
    doc, _, found = _assignments(bicep)
    app = {(a["scope"], a["role"]) for a in found.values() if a["principal"] == "principalId"}
    conditional = {(a["scope"], a["role"]) for a in found.values() if a["principal"] == "principalId" and a["conditional"]}
    assert conditional == {("vault", ROLE_IDS["keyVaultSecretsUser"]),
                           ("stateContainer", ROLE_IDS["storageBlobDataContributor"])}, (
        "only the vault role depends on the kind, and the state container's on exportImmutabilityDays")
    assert condition(doc["resources"]["vaultSecretsUser"]) == "keyVaultAccess"
    assert doc["variables"]["keyVaultAccess"]["value"] == {"operator": {"type": "not_equals", "operands": {
        "operand_1": "clientCredential", "operand_2": "federated"}}}
    assert app == {
        ("hostStorage", ROLE_IDS["storageBlobDataOwner"]),
        ("hostStorage", ROLE_IDS["storageQueueDataContributor"]),
        ("exportContainer", ROLE_IDS["storageBlobDataContributor"]),
        ("stateContainer", ROLE_IDS["storageBlobDataContributor"]),
        # The fan-out queue and its poison queue, never the account (test_bicep_queue.py).
        ("exportQueue", ROLE_IDS["storageQueueDataContributor"]),
        ("poisonQueue", ROLE_IDS["storageQueueDataMessageSender"]),
        ("vault", ROLE_IDS["keyVaultSecretsUser"]),
        ("appInsights", ROLE_IDS["monitoringMetricsPublisher"]),
    }
    # The export role is scoped to the container, not the account.
    container = body(doc["resources"]["exportContainer"])
    assert doc["resources"]["exportContainer"]["existing"] is True
    assert container["name"] == "exportContainerName"
    assert container["parent"] == "exportBlobService"


def test_the_deployer_gets_no_role_from_the_template(bicep):
    """Least privilege over time: a vault-wide Officer role for whoever deploys would outlive the deployment.
    deploy.sh gives it one on the secret or certificate instead (test_deploy_script.py)."""
    _, _, found = _assignments(bicep)
    assert {a["principal"] for a in found.values()} == {"principalId"}, "only the function app's identity"
    for path, doc in bicep.items():
        for name in doc.get("parameters", {}):
            assert not re.search(r"deployer|officer", name, re.I), f"{path}: parameter {name}"
    assert "GRAPH_EXPORT_DEPLOYER" not in (INFRA / "main.bicepparam").read_text()


def test_role_assignment_names_are_guid_of_scope_principal_role(bicep):
    _, _, found = _assignments(bicep)
    for name, a in found.items():
        guid = a["name"]["function"]
        assert guid["type"] == "guid", name
        args = list(guid["parameters"].values())
        assert args[0] == {"operator": {"type": "property_accessor", "operands": {"operand_1": a["scope"], "operand_2": "id"}}}, name
        assert args[1] == a["principal"], name
        assert mentions(args[2], "roleIds"), name


def test_no_role_is_assigned_at_resource_group_or_wider(bicep):
    for path, doc in bicep.items():
        for name, res in resources_of(doc, "Microsoft.Authorization/roleAssignments").items():
            assert body(res).get("scope"), f"{path}: role assignment {name} has no resource scope"


# --- alerts -------------------------------------------------------------------------------------------

def test_failure_and_staleness_alerts(bicep):
    doc = bicep["modules/alerts.bicep"]
    rules = {n: body(r) for n, r in resources_of(doc, "Microsoft.Insights/scheduledQueryRules").items()}
    assert set(rules) == {"exportFailed", "exportStale", "credentialExpiry"}
    queries = doc["variables"]
    assert "success == false" in queries["failedRunQuery"]["value"]
    stale = queries["staleQuery"]["value"]
    assert "let window = {1}h;" in stale and "ago(window)" in stale
    assert "success == true" in stale and "successes == 0" in stale
    assert param_default(doc, "staleAfterHours") == 26
    for rule in rules.values():
        props = rule["properties"]
        assert props["enabled"] is True
        assert props["scopes"] == ["appInsightsId"]
        assert mentions(props["actions"], "actionGroup")
    assert {r["properties"]["evaluationFrequency"] for r in rules.values()} == {"PT15M", "PT1H"}


def test_credential_expiry_alert_fires_on_the_apps_warning_line(bicep):
    doc = bicep["modules/alerts.bicep"]
    rule = body(doc["resources"]["credentialExpiry"])["properties"]
    assert param_default(doc, "credentialExpiryPrefix") == "Credential expiry:"
    query = doc["variables"]["credentialExpiryQuery"]["value"]
    assert query.lstrip().startswith("traces\n") and "| where message startswith '{0}'" in query
    [criterion] = rule["criteria"]["allOf"]
    assert criterion["query"] == {"function": {"type": "format", "parameters": {
        "format_string": "credentialExpiryQuery", "arg_1": "credentialExpiryPrefix"}}}
    assert (criterion["operator"], criterion["threshold"], criterion["timeAggregation"]) == ("GreaterThan", 0, "Count")
    assert rule["enabled"] is True and rule["scopes"] == ["appInsightsId"]
    assert rule["evaluationFrequency"] == rule["windowSize"] == "PT1H"
    assert rule["severity"] == 2, "a warning: nothing is broken yet"
    assert rule["autoMitigate"] is False, "fires again after each daily run until the credential is rotated"
    assert mentions(rule["actions"], "actionGroup")
    group = resources_of(doc, "Microsoft.Insights/actionGroups")
    assert len(group) == 1 and condition(next(iter(group.values()))) == "notify"
    main = bicep["main.bicep"]
    assert main["modules"]["alerts"]["config"]["params"]["alertEmail"] == "alertEmail"
    assert param_default(main, "alertEmail") == ""


def test_alerts_watch_the_function_that_exists(bicep):
    tree = ast.parse((INFRA.parent / "function_app.py").read_text())
    names = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
             and any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "timer_trigger"
                     for d in node.decorator_list)]
    assert names, "no timer function found in function_app.py"
    assert param_default(bicep["main.bicep"], "functionName") in names


def test_the_credential_expiry_alert_matches_a_warning_the_code_logs(bicep):
    """The alert's prefix is the start of a `log.warning(...)` format string in graph_export/."""
    prefix = param_default(bicep["modules/alerts.bicep"], "credentialExpiryPrefix")
    found = []
    for path in sorted((INFRA.parent / "graph_export").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "warning" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and node.args[0].value.startswith(prefix)):
                found.append(path.name)
    assert found, f"no log.warning('{prefix} ...') in graph_export/: the credential-expiry alert would never fire"


# --- outputs ------------------------------------------------------------------------------------------

def test_outputs_name_what_an_operator_needs(bicep):
    outputs = bicep["main.bicep"]["outputs"]
    for name in ("functionAppName", "keyVaultName", "keyVaultUri", "clientSecretName", "hostStorageAccountName",
                 "exportStorageAccountName", "exportContainerName", "clientCredential", "clientCertificateName",
                 "identityName", "identityClientId", "identityPrincipalId", "federatedCredentialIssuer",
                 "federatedTokenAudience", "stateContainerName", "exportImmutabilityDays"):
        assert name in outputs, f"main.bicep should output {name}"


# --- no secret values anywhere in infra/ --------------------------------------------------------------

SECRET_PATTERNS = {
    "storage account key": re.compile(r"AccountKey\s*=", re.I),
    "SAS token": re.compile(r"(SharedAccessSignature\s*=|[?&]sig=[A-Za-z0-9%]{20,})", re.I),
    "key listing (puts keys into the deployment)": re.compile(r"\blist(Keys|AccountSas|ServiceSas|Secrets)\s*\(", re.I),
    "instrumentation key": re.compile(r"InstrumentationKey\s*=", re.I),
    "Entra ID client secret value": re.compile(r"[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "secret passed as a command-line value": re.compile(r"secret\s+set\b[^\n|]*--value\b"),
}


def test_no_secret_value_anywhere_in_infra():
    problems = []
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        for what, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(INFRA)}:{line}: {what}")
    assert not problems, "possible secrets in infra/:\n" + "\n".join(problems)


# Names that look secret but are not: App Insights has local auth disabled, so its connection string
# (endpoint + component id) grants nothing without an Entra ID token.
NOT_SECRET = {"appInsightsConnectionString"}


def test_no_secure_parameter_carries_a_value(bicep):
    for path, doc in bicep.items():
        for name, param in doc.get("parameters", {}).items():
            secure = any(d.get("type") == "secure" for d in param.get("decorators", []))
            assert not (secure and param.get("default")), f"{path}: @secure() parameter {name} has a default value"
            assert name in NOT_SECRET or not re.search(r"(secret|password|key|token|connectionString)$", name, re.I), (
                f"{path}: parameter {name} looks like it carries a secret; secrets go to Key Vault via deploy.sh")


def test_secret_patterns_catch_what_they_should():
    """The scanner itself must be able to fail."""
    samples = {
        "storage account key": "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc==",
        "Entra ID client secret value": "Abc8Q~" + "x" * 34,
        "secret passed as a command-line value": "az keyvault secret set --vault-name v --name n --value hunter2",
        "key listing (puts keys into the deployment)": "account.listKeys().keys[0].value",
    }
    for what, sample in samples.items():
        assert SECRET_PATTERNS[what].search(sample), what


# --- quiet first day, access changes, diagnostics ------------------------------------------------------

def test_the_staleness_alert_is_quiet_after_a_deployment(bicep):
    """A new app has no telemetry yet: the alert waits for the window after the deployment, or after the app's
    first telemetry, before it fires (not at once, as `isnull(firstSeen) or ...` did)."""
    doc = bicep["modules/alerts.bicep"]
    stale = doc["variables"]["staleQuery"]["value"]
    assert "let deployedAt = datetime({2});" in stale
    assert "| where iff(isnull(firstSeen), deployedAt < ago(window), firstSeen < ago(window))" in stale
    assert "isnull(firstSeen) or" not in stale
    rule = body(doc["resources"]["exportStale"])["properties"]
    [criterion] = rule["criteria"]["allOf"]
    assert criterion["query"] == {"function": {"type": "format", "parameters": {
        "format_string": "staleQuery", "arg_1": "functionName", "arg_2": "staleAfterHours", "arg_3": "deployedAt"}}}
    main = bicep["main.bicep"]
    assert main["parameters"]["deployedAt"]["default"] == {"function": {"type": "utc_now", "parameters": {
        "format": "yyyy-MM-ddTHH:mm:ssZ"}}}, "ISO 8601, which KQL's datetime() reads"
    assert main["modules"]["alerts"]["config"]["params"]["deployedAt"] == "deployedAt"


def test_an_activity_log_alert_reports_access_changes(bicep):
    doc = bicep["modules/alerts.bicep"]
    [alert] = resources_of(doc, "Microsoft.Insights/activityLogAlerts").values()
    config = body(alert)
    assert config["location"] == "global"
    props = config["properties"]
    assert props["enabled"] is True
    assert props["scopes"] == [{"function": {"type": "resource_group", "parameters": {
        "resource_group_name": None, "subscription_id": None}, "property_name": "id"}}], "the whole resource group"
    all_of = props["condition"]["allOf"]
    assert {"field": "category", "equals": "Administrative"} in all_of
    assert {"field": "status", "equals": "Succeeded"} in all_of
    [any_of] = [c["anyOf"] for c in all_of if "anyOf" in c]
    assert any_of["loop_type"]["detail"]["array_name"] == "accessChangeOperations"
    assert any_of["config"] == {"field": "operationName", "equals": "operation"}
    operations = param_default(doc, "accessChangeOperations")
    assert {"Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.KeyVault/vaults/write", "Microsoft.KeyVault/vaults/accessPolicies/write"} <= set(operations)
    assert mentions(props["actions"], "actionGroup")


def _diagnostic_settings(doc):
    return {name: body(r) for name, r in resources_of(doc, "Microsoft.Insights/diagnosticSettings").items()}


def test_diagnostic_settings_for_the_app_both_storage_accounts_and_the_vault(bicep):
    main = bicep["main.bicep"]
    workspace = _accessor("monitoring", "outputs", "workspaceId")
    # The function app: platform logs and metrics.
    [site] = _diagnostic_settings(bicep["modules/functionapp.bicep"]).values()
    assert site["scope"] == "site" and site["properties"]["workspaceId"] == "diagnosticsWorkspaceId"
    assert site["properties"]["logs"] == [{"categoryGroup": "allLogs", "enabled": True}]
    assert site["properties"]["metrics"] == [{"category": "AllMetrics", "enabled": True}]
    assert main["modules"]["functionApp"]["config"]["params"]["diagnosticsWorkspaceId"] == workspace
    # Both storage accounts (the module is used for each): account metrics and blob reads, writes, deletes.
    storage = _diagnostic_settings(bicep["modules/storage.bicep"])
    assert storage["accountMetrics"]["scope"] == "account"
    assert storage["accountMetrics"]["properties"]["metrics"] == [{"category": "Transaction", "enabled": True}]
    assert storage["blobAudit"]["scope"] == "blobService"
    assert {log["category"] for log in storage["blobAudit"]["properties"]["logs"]} == {
        "StorageRead", "StorageWrite", "StorageDelete"}
    for module in ("hostStorage", "exportStorage", "keyVault"):
        assert body(main["modules"][module])["params"]["auditWorkspaceId"] == workspace, module
    # The vault: audit events and metrics.
    [vault] = _diagnostic_settings(bicep["modules/keyvault.bicep"]).values()
    assert vault["scope"] == "vault"
    assert vault["properties"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    assert vault["properties"]["metrics"] == [{"category": "AllMetrics", "enabled": True}]

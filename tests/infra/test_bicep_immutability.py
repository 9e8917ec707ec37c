"""Immutable exports (WORM, issue 19 item 4): main.bicep `exportImmutabilityDays`.

The conditions are not just read but evaluated: `evaluate` computes pycep's JSON of an expression for given
parameter values (the few operators and functions these expressions use), so each test deploys main.bicep
"on paper" with the parameter off and on and checks what would exist: the export container's immutability
policy, the state container, its role assignment and the EXPORT_STATE_CONTAINER app setting.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from graph_export.settings import load_settings

from .bicep_helpers import INFRA, body, condition, mentions, param_default, resources_of

POLICY = "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")  # Azure's rule for container names


class Unknown(Exception):
    """An expression these tests do not evaluate (resource outputs, deployment functions)."""


def evaluate(expr: Any, env: dict[str, Any]) -> Any:
    """The value of a pycep expression; a string naming something in env is that thing, else a literal."""
    if expr is None or isinstance(expr, (bool, int)):
        return expr
    if isinstance(expr, str):
        if expr in env:
            return env[expr]
        if "${" in expr:
            def interpolate(match: re.Match[str]) -> str:
                if match.group(1) not in env:
                    raise Unknown(match.group(1))
                return str(env[match.group(1)])
            return re.sub(r"\$\{(\w+)\}", interpolate, expr)
        return expr
    if isinstance(expr, list):
        return [evaluate(item, env) for item in expr]
    if "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        if kind == "conditional":
            branch = "true_value" if evaluate(operands["condition"], env) else "false_value"
            return evaluate(operands[branch], env)
        if kind == "not":
            return not evaluate(operands["bool_value"], env)
        a, b = evaluate(operands["operand_1"], env), evaluate(operands["operand_2"], env)
        binary = {"and": lambda: a and b, "or": lambda: a or b, "equals": lambda: a == b,
                  "not_equals": lambda: a != b, "greater_than": lambda: a > b,
                  "greater_than_or_equals": lambda: a >= b, "less_than": lambda: a < b,
                  "less_than_or_equals": lambda: a <= b}
        if kind in binary:
            return binary[kind]()
    if "function" in expr:
        functions = {"take": lambda s, n: s[:n], "ends_with": lambda s, x: s.endswith(x),
                     "empty": lambda x: not x}
        kind = expr["function"]["type"]
        if kind in functions:
            return functions[kind](*(evaluate(a, env) for a in expr["function"]["parameters"].values()))
    raise Unknown(expr)


def scope(doc: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Parameter values (their literal defaults, then overrides) and every variable that can be evaluated."""
    env = {name: p["default"] for name, p in doc["parameters"].items()
           if isinstance(p.get("default"), (str, int, bool, list))}
    env.update(overrides)
    for name, var in doc.get("variables", {}).items():
        try:
            env[name] = evaluate(var["value"], env)
        except Unknown:
            pass
    return env


def module_scope(bicep, module: str, path: str, main_env: dict[str, Any]) -> dict[str, Any]:
    """The scope of module `module` (file `path`) as main.bicep calls it, for main's parameter values."""
    params = {}
    for name, value in bicep["main.bicep"]["modules"][module]["config"]["params"].items():
        try:
            params[name] = evaluate(value, main_env)
        except Unknown:
            params[name] = Unknown
    return scope(bicep[path], **params)


def deployed(resource: dict[str, Any], env: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances of a (looped, conditional) resource that would be deployed, each with its loop variables."""
    config = resource["config"]
    if "loop_type" not in config:
        return [env] if condition(resource) is None or evaluate(condition(resource), env) else []
    detail = config["loop_type"]["detail"]
    found = []
    for index, item in enumerate(evaluate(detail["array_name"], env)):
        local = {**env, detail["item_name"]: item}
        if "index_name" in detail:
            local[detail["index_name"]] = index
        if config.get("condition") is None or evaluate(config["condition"], local):
            found.append(local)
    return found


def main_env(bicep, days: int, **overrides: Any) -> dict[str, Any]:
    return scope(bicep["main.bicep"], exportImmutabilityDays=days, **overrides)


def storage_env(bicep, env):
    return module_scope(bicep, "exportStorage", "modules/storage.bicep", env)


def roles_env(bicep, env):
    return module_scope(bicep, "roles", "modules/roles.bicep", env)


def policies(bicep, env) -> list[dict[str, Any]]:
    """(container, properties) of each immutability policy the export storage module would deploy."""
    doc = bicep["modules/storage.bicep"]
    local = storage_env(bicep, env)
    [(name, resource)] = resources_of(doc, POLICY).items()
    found = []
    for instance in deployed(resource, local):
        config = body(resource)
        parent = config["parent"]["operator"]["operands"]  # containers[i]
        assert parent["operand_1"] == "containers"
        index = evaluate(parent["operand_2"], instance)
        container = evaluate(body(doc["resources"]["containers"])["name"],
                             {**local, "containerName": local["containerNames"][index]})
        found.append({"container": container, "name": config["name"],
                      "properties": {k: evaluate(v, instance) for k, v in config["properties"].items()}})
    return found


def state_role(bicep, env) -> list[dict[str, Any]]:
    doc = bicep["modules/roles.bicep"]
    local = roles_env(bicep, env)
    resource = doc["resources"]["stateContainerContributor"]
    return [{"scope_name": evaluate(body(doc["resources"][body(resource)["scope"]])["name"], local),
             "config": body(resource)} for _ in deployed(resource, local)]


def app_setting(bicep, env) -> Any:
    return evaluate(bicep["main.bicep"]["variables"]["exportAppSettings"]["value"]["EXPORT_STATE_CONTAINER"], env)


# --- the parameter ---------------------------------------------------------------------------------------

def test_the_parameter_is_opt_in_bounded_and_says_what_it_does(bicep):
    main = bicep["main.bicep"]
    param = main["parameters"]["exportImmutabilityDays"]
    assert param["type"] == "int" and param_default(main, "exportImmutabilityDays") == 0
    bounds = {d["type"]: d["argument"] for d in param["decorators"] if d["type"] in ("min_value", "max_value")}
    retention = {d["type"]: d["argument"] for d in main["parameters"]["exportRetentionDays"]["decorators"]
                 if d["type"] == "max_value"}
    assert bounds == {"min_value": 0, "max_value": retention["max_value"]}, "never longer than the longest retention"
    [text] = [d["argument"] for d in param["decorators"] if d["type"] == "description"]
    for needed in ("0 = off", "409 BlobImmutableDueToPolicy", "EXPORT_STATE_CONTAINER", "locked",
                   "never shortened or removed", "exportRetentionDays", "lifecycle rule"):
        assert needed in text, f"the description should say {needed!r}"
    assert param_default(main, "exportImmutabilityLocked") is False


def test_the_parameter_file_takes_both_from_the_environment():
    text = (INFRA / "main.bicepparam").read_text()
    assert ("param exportImmutabilityDays = int(readEnvironmentVariable('GRAPH_EXPORT_IMMUTABILITY_DAYS', '0'))"
            in text)
    assert ("param exportImmutabilityLocked = readEnvironmentVariable('GRAPH_EXPORT_IMMUTABILITY_LOCKED', "
            "'false') == 'true'" in text)


# --- off: nothing changes ---------------------------------------------------------------------------------

def test_off_deploys_no_policy_no_state_container_no_role_and_leaves_the_setting_empty(bicep):
    env = main_env(bicep, 0)
    assert policies(bicep, env) == []
    storage = storage_env(bicep, env)
    assert storage["containerNames"] == ["graph-exports"]
    assert storage["lifecycleContainerNames"] == ["graph-exports"]
    assert state_role(bicep, env) == []
    assert roles_env(bicep, env)["stateContainerName"] == ""
    # Empty is the code's default: the state stays in the export container, as before the setting existed.
    assert app_setting(bicep, env) == ""
    assert evaluate(bicep["main.bicep"]["outputs"]["stateContainerName"]["value"], env) == "graph-exports"


def test_an_empty_state_setting_means_the_export_container_to_the_code():
    env = {"TENANT_ID": "contoso.onmicrosoft.com", "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
           "KEY_VAULT_URL": "https://kv-export.vault.azure.net/",
           "EXPORT_STORAGE__blobServiceUri": "https://stexport.blob.core.windows.net/",
           "EXPORT_CONTAINER": "graph-exports"}
    assert load_settings({**env, "EXPORT_STATE_CONTAINER": ""}).state_container == "graph-exports"
    assert load_settings({**env, "EXPORT_STATE_CONTAINER": "graph-exports-state"}).state_container == (
        "graph-exports-state")


# --- on -----------------------------------------------------------------------------------------------------

def test_on_puts_an_unlocked_policy_on_the_export_container_only(bicep):
    [policy] = policies(bicep, main_env(bicep, 365, exportRetentionDays=400))
    assert policy == {"container": "graph-exports", "name": "default",
                      "properties": {"immutabilityPeriodSinceCreationInDays": 365,
                                     "allowProtectedAppendWrites": False}}
    [(_, resource)] = resources_of(bicep["modules/storage.bicep"], POLICY).items()
    assert resource["api_version"] == "2023-05-01", "the version whose type was checked in Azure/bicep-types-az"
    assert "state" not in body(resource)["properties"], "read-only: ARM creates a policy unlocked"


@pytest.mark.parametrize("days", [1, 90, 3650])
def test_on_adds_the_state_container_its_role_and_the_setting(bicep, days):
    env = main_env(bicep, days)
    storage = storage_env(bicep, env)
    assert storage["containerNames"] == ["graph-exports", "graph-exports-state"]
    assert storage["immutableContainerName"] == "graph-exports"
    # The retention rule covers both, as it did when the state lived beside the exports.
    assert storage["lifecycleContainerNames"] == ["graph-exports", "graph-exports-state"]
    assert app_setting(bicep, env) == "graph-exports-state"
    assert evaluate(bicep["main.bicep"]["outputs"]["stateContainerName"]["value"], env) == "graph-exports-state"
    [role] = state_role(bicep, env)
    assert role["scope_name"] == "graph-exports-state"
    config = role["config"]
    assert config["properties"]["principalId"] == "principalId"
    assert config["properties"]["principalType"] == "ServicePrincipal"
    assert mentions(config["properties"]["roleDefinitionId"], "storageBlobDataContributor")
    assert bicep["modules/roles.bicep"]["variables"]["roleIds"]["value"]["storageBlobDataContributor"] == CONTRIBUTOR


def test_the_state_role_mirrors_the_export_container_role(bicep):
    doc = bicep["modules/roles.bicep"]
    export, state = body(doc["resources"]["exportContainerContributor"]), body(doc["resources"]["stateContainerContributor"])
    assert state["properties"] == export["properties"]
    assert doc["resources"]["stateContainer"]["existing"] is True
    assert body(doc["resources"]["stateContainer"])["parent"] == body(doc["resources"]["exportContainer"])["parent"]
    assert state["scope"] == "stateContainer" and export["scope"] == "exportContainer"


def test_a_locked_policy_is_left_alone_and_the_rest_stays(bicep):
    env = main_env(bicep, 365, exportImmutabilityLocked=True)
    assert policies(bicep, env) == [], "ARM accepts no write to a locked policy but an extension"
    assert storage_env(bicep, env)["containerNames"] == ["graph-exports", "graph-exports-state"]
    assert app_setting(bicep, env) == "graph-exports-state"
    assert len(state_role(bicep, env)) == 1


@pytest.mark.parametrize("export", [
    "graph-exports", "abc", "a" * 57, "a" * 58, "a" * 63, "a" * 56 + "-b" + "c" * 5, "x-state",
])
def test_the_state_container_name_is_a_valid_container_name_apart_from_the_exports(bicep, export):
    state = main_env(bicep, 30, exportContainerName=export)["stateContainerName"]
    assert CONTAINER_NAME.match(state), state
    assert state != export and state.endswith("-state")
    assert state == (f"{export}-state" if len(export) <= 57 else f"{export[:57].rstrip('-')}-state")


def test_the_export_container_and_the_policy_stay_in_the_storage_modules_loop(bicep):
    """The policy's parent is the container the module creates (so it exists first); an existing-resource
    reference would name a container that might not exist yet."""
    doc = bicep["modules/storage.bicep"]
    [(_, resource)] = resources_of(doc, POLICY).items()
    assert resource["config"]["loop_type"]["detail"]["array_name"] == "containerNames"
    assert set(resources_of(doc, CONTAINER)) == {"containers"}

"""Many tenants from one deployment (issue 24), the Bicep side: the fan-out queue and its poison queue in the export
storage account, the app identity's queue roles scoped to those queues only (never the account), that those roles
grant every queue operation the app and the Functions host perform, and the settings that point the app and the
Functions host's queue trigger at them.

Resource types and the queue name rule: Azure/bicep-types-az generated/storage/microsoft.storage/2023-05-01/types.md.
Role ids and their permissions: learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage.
Operations and the permissions each needs: learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory,
"Permissions for Queue service operations".
"""

from __future__ import annotations

import re

from . import bicepparam
from .bicep_helpers import INFRA, body, condition, only, param_default, resources_of

MAIN = "main.bicep"
ROLES = "modules/roles.bicep"
STORAGE = "modules/storage.bicep"
CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"  # Storage Queue Data Contributor
SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"       # Storage Queue Data Message Sender
READER = "19e7f393-937e-4f77-808e-94535e297925"       # Storage Queue Data Reader
PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"    # Storage Queue Data Message Processor
_QUEUES = "Microsoft.Storage/storageAccounts/queueServices/queues"
# Each built-in queue data role's queue permissions, its Actions and DataActions as the built-in roles page lists them.
QUEUE_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    SENDER: frozenset({f"{_QUEUES}/messages/add/action"}),
    READER: frozenset({f"{_QUEUES}/read", f"{_QUEUES}/messages/read"}),
    PROCESSOR: frozenset({f"{_QUEUES}/messages/read", f"{_QUEUES}/messages/process/action"}),
    CONTRIBUTOR: frozenset({f"{_QUEUES}/delete", f"{_QUEUES}/read", f"{_QUEUES}/write", f"{_QUEUES}/messages/delete",
                            f"{_QUEUES}/messages/read", f"{_QUEUES}/messages/write",
                            f"{_QUEUES}/messages/process/action"}),
}
# Each queue operation's alternatives: it is allowed when the roles grant every permission of one of them (the REST
# permission table).
OPERATIONS: dict[str, tuple[frozenset[str], ...]] = {
    "Put Message": (frozenset({f"{_QUEUES}/messages/add/action"}), frozenset({f"{_QUEUES}/messages/write"})),
    "Get Messages": (frozenset({f"{_QUEUES}/messages/process/action"}),
                     frozenset({f"{_QUEUES}/messages/delete", f"{_QUEUES}/messages/read"})),
    "Delete Message": (frozenset({f"{_QUEUES}/messages/process/action"}), frozenset({f"{_QUEUES}/messages/delete"})),
    "Peek Messages": (frozenset({f"{_QUEUES}/messages/read"}),),
    "Get Queue Metadata": (frozenset({f"{_QUEUES}/read"}),),
    "Update Message": (frozenset({f"{_QUEUES}/messages/write"}),),
}
# What the Functions host's queue trigger does on the fan-out queue (Microsoft.Azure.WebJobs.Extensions.Storage.Queues):
# gets and deletes messages; releases a failed one, and renews an in-flight one's visibility, with Update Message
# (QueueProcessor.ReleaseMessageAsync, UpdateQueueMessageVisibilityCommand; the 403 of MicrosoftDocs/azure-docs#120932
# without it); its scale monitor reads the queue's length and peeks its oldest message (QueueListener.GetMetricsAsync).
TRIGGER = frozenset({"Get Messages", "Delete Message", "Update Message", "Get Queue Metadata", "Peek Messages"})
# Every operation on each queue: on the fan-out queue the timer's Put Message (graph_export/queues.py fan_out) and the
# trigger's; on the poison queue the host's move (a send; it creates the queue only on 404, and Bicep creates it).
NEEDED = {"exportQueue": TRIGGER | {"Put Message"}, "poisonQueue": frozenset({"Put Message"})}
# A queue's name (bicep-types-az: minLength 3, maxLength 63, this pattern).
QUEUE_NAME = re.compile(r"^[a-z0-9]([a-z0-9]|(-(?!-))){1,61}[a-z0-9]$")


def _accessor(module: str, *path: str) -> dict:
    value: object = path[-1]
    for name in reversed(path[:-1]):
        value = {"operator": {"type": "property_accessor", "operands": {"operand_1": name, "operand_2": value}}}
    return {"operator": {"type": "property_accessor", "operands": {"operand_1": module, "operand_2": value}}}


def _decorator(param: dict, kind: str) -> object:
    return next((d["argument"] for d in param.get("decorators", []) if d["type"] == kind), None)


def _assignments(bicep) -> dict[str, tuple[str, str, object]]:
    """{resource name: (scope, role GUID, principal)} of every role assignment in roles.bicep."""
    doc = bicep[ROLES]
    role_ids = doc["variables"]["roleIds"]["value"]
    found = {}
    for name, resource in resources_of(doc, "Microsoft.Authorization/roleAssignments").items():
        config = body(resource)
        key = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role = role_ids[key["operator"]["operands"]["operand_2"]]
        found[name] = (config["scope"], role, config["properties"]["principalId"])
    return found


def _queue_roles(bicep) -> dict[str, set[str]]:
    """{scope: role GUIDs} of the assignments on the export account, its queue service or its queues."""
    found: dict[str, set[str]] = {}
    for scope, role, _ in _assignments(bicep).values():
        if scope in ("exportQueue", "poisonQueue", "exportStorage", "exportQueueService"):
            found.setdefault(scope, set()).add(role)
    return found


def _denied(roles: set[str], operations: frozenset[str]) -> set[str]:
    """The operations that ``roles`` together do not allow; a role missing from the table fails the test."""
    unknown = roles - QUEUE_ROLE_PERMISSIONS.keys()
    assert not unknown, f"not a built-in queue data role of the table: {unknown}"
    granted = frozenset().union(*(QUEUE_ROLE_PERMISSIONS[role] for role in roles))
    return {op for op in operations if not any(need <= granted for need in OPERATIONS[op])}


def test_the_export_account_has_the_queue_and_its_poison_queue(bicep):
    storage = bicep[STORAGE]
    service = resources_of(storage, "Microsoft.Storage/storageAccounts/queueServices")["queueService"]
    assert body(service) == {"parent": "account", "name": "default"}
    assert condition(service) == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "queueNames"}}}}}}, "no queues: no service"
    queues = resources_of(storage, "Microsoft.Storage/storageAccounts/queueServices/queues")["queues"]
    assert queues["api_version"] == service["api_version"] == "2023-05-01"
    assert queues["config"]["loop_type"]["detail"] == {"item_name": "queueName", "array_name": "queueNames"}
    assert body(queues) == {"parent": "queueService", "name": "queueName"}
    assert param_default(storage, "queueNames") == []
    # Used by both accounts: only the export account gets queues (the host keeps its own, which it creates).
    main = bicep[MAIN]
    assert body(main["modules"]["exportStorage"])["params"]["queueNames"] == ["exportQueue", "poisonQueue"]
    assert "queueNames" not in body(main["modules"]["hostStorage"])["params"]
    assert main["variables"]["poisonQueue"]["value"] == "${exportQueue}-poison", "the host's name: <queue>-poison"


def test_the_queue_name_parameter_keeps_both_names_valid(bicep):
    param = bicep[MAIN]["parameters"]["exportQueue"]
    default = param["default"]
    assert default == "graph-export-tenants"
    assert "EXPORT_QUEUE" in _decorator(param, "description")
    low, high = _decorator(param, "min_length"), _decorator(param, "max_length")
    assert (low, high) == (3, 56), "56 + len('-poison') = 63, the most a queue name may have"
    assert QUEUE_NAME.match(default) and QUEUE_NAME.match(f"{default}-poison")
    longest = "q" * high
    assert QUEUE_NAME.match(f"{longest}-poison") and not QUEUE_NAME.match(f"{longest}x-poison")
    assert not QUEUE_NAME.match("Graph-Export") and not QUEUE_NAME.match("graph--export"), "the rule can fail"


def test_the_identity_gets_contributor_on_the_queue_and_sender_on_the_poison_queue_only(bicep):
    assert _queue_roles(bicep) == {
        "exportQueue": {CONTRIBUTOR},   # the timer enqueues; the trigger gets, deletes and updates (releases) messages
        "poisonQueue": {SENDER},        # the host moves a message past its dequeue limit there
    }, "no queue role on the account or the queue service: only on the queues"
    doc = bicep[ROLES]
    role_ids = doc["variables"]["roleIds"]["value"]
    assert role_ids["storageQueueDataContributor"] == CONTRIBUTOR
    assert role_ids["storageQueueDataMessageSender"] == SENDER
    for name in ("queueContributor", "poisonSender"):
        assert condition(doc["resources"][name]) is None, f"{name}: every deployment has the queue"
        assert body(doc["resources"][name])["properties"]["principalType"] == "ServicePrincipal"
        assert body(doc["resources"][name])["properties"]["principalId"] == "principalId", "the app's identity"


def test_no_queue_role_for_the_identity_on_an_account_but_the_hosts(bicep):
    """Queue-level scope keeps the identity out of every other queue of the export account; the host storage account
    is the host's own (its internal queues: Contributor on that account, roles.bicep)."""
    queue_roles = QUEUE_ROLE_PERMISSIONS.keys()
    scopes = {(scope, role) for scope, role, principal in _assignments(bicep).values()
              if role in queue_roles and principal == "principalId"}
    assert scopes == {("exportQueue", CONTRIBUTOR), ("poisonQueue", SENDER), ("hostStorage", CONTRIBUTOR)}


def test_the_roles_grant_every_queue_operation_the_app_and_the_host_perform(bicep):
    """The rule: each queue's roles allow every operation done on it, the trigger's Update Message among them."""
    found = _queue_roles(bicep)
    for queue, operations in NEEDED.items():
        assert _denied(found.get(queue, set()), operations) == set(), f"{queue}: the roles there do not allow these"


def test_the_rule_refuses_the_roles_the_functions_docs_list_for_a_trigger():
    """Reader + Message Processor (and Sender) allow all but Update Message, the 403 of MicrosoftDocs/azure-docs#120932,
    so going back to them fails the test above; Contributor alone allows every operation of the table."""
    assert _denied({READER, PROCESSOR}, TRIGGER) == {"Update Message"}
    assert _denied({SENDER, READER, PROCESSOR}, NEEDED["exportQueue"]) == {"Update Message"}
    assert _denied({CONTRIBUTOR}, NEEDED["exportQueue"]) == set()
    assert _denied({SENDER}, NEEDED["exportQueue"]) == TRIGGER, "a sender receives nothing"
    assert _denied(set(), NEEDED["poisonQueue"]) == {"Put Message"}
    writers = {role for role, permissions in QUEUE_ROLE_PERMISSIONS.items() if f"{_QUEUES}/messages/write" in permissions}
    assert writers == {CONTRIBUTOR}, "of the built-in queue data roles only Contributor grants messages/write"
    assert _denied({CONTRIBUTOR}, frozenset(OPERATIONS)) == set(), "all the three roles allowed, and Update Message"


def test_the_role_scopes_are_the_queues_main_bicep_creates(bicep):
    doc = bicep[ROLES]
    resources = doc["resources"]
    for name, queue_param in (("exportQueue", "exportQueueName"), ("poisonQueue", "poisonQueueName")):
        queue = resources[name]
        assert queue["existing"] is True and queue["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"
        assert body(queue) == {"parent": "exportQueueService", "name": queue_param}
    service = resources["exportQueueService"]
    assert service["existing"] is True and body(service) == {"parent": "exportStorage", "name": "default"}
    assert body(resources["exportStorage"])["name"] == "exportStorageName"
    params = body(bicep[MAIN]["modules"]["roles"])["params"]
    assert params["exportQueueName"] == "exportQueue" and params["poisonQueueName"] == "poisonQueue"
    assert params["exportStorageName"] == _accessor("exportStorage", "outputs", "name")


def test_the_settings_point_the_app_and_the_queue_trigger_at_the_queue(bicep):
    main = bicep[MAIN]
    settings = main["variables"]["exportAppSettings"]["value"]
    assert settings["EXPORT_QUEUE"] == "exportQueue"
    assert settings["TENANT_IDS"] == "tenantIds"
    assert settings["EXPORT_STORAGE__queueServiceUri"] == _accessor("exportStorage", "outputs", "queueEndpoint")
    assert settings["EXPORT_STORAGE__blobServiceUri"] == _accessor("exportStorage", "outputs", "blobEndpoint")
    assert bicep[STORAGE]["outputs"]["queueEndpoint"]["value"] == _accessor(
        "account", "properties", "primaryEndpoints", "queue")
    # The host's side of connection EXPORT_STORAGE: the user-assigned identity (the app has no system-assigned one).
    host = bicep["modules/functionapp.bicep"]["variables"]["hostSettings"]["value"]
    assert host["EXPORT_STORAGE__credential"] == "managedidentity"
    assert host["EXPORT_STORAGE__clientId"] == "identityClientId"
    assert param_default(main, "tenantIds") == "", "empty: one tenant, TENANT_ID, as before"


def test_main_bicepparam_reads_the_tenants_from_deploy_sh_and_keeps_the_queue_default(bicep):
    params = bicepparam.params((INFRA / "main.bicepparam").read_text())
    tenants = params["tenantIds"]
    assert (tenants.variable, tenants.fallback, tenants.kind) == ("GRAPH_EXPORT_TENANT_IDS", "", "string")
    assert tenants.value({"GRAPH_EXPORT_TENANT_IDS": "a,b"}) == "a,b" and tenants.value({}) == ""
    assert params["exportQueue"].value({}) == param_default(bicep[MAIN], "exportQueue")


def test_outputs_name_the_queues_and_the_tenants(bicep):
    outputs = bicep[MAIN]["outputs"]
    assert outputs["exportQueueName"]["value"] == "exportQueue"
    assert outputs["poisonQueueName"]["value"] == "poisonQueue"
    assert outputs["tenantIds"]["value"] == "tenantIds"


def test_scale_out_stays_a_parameter_passed_to_the_plan(bicep):
    """maximumInstanceCount bounds the tenants exported at once (README "Many tenants" reasons its default)."""
    main = bicep[MAIN]
    assert param_default(main, "maximumInstanceCount") == 40
    assert body(main["modules"]["functionApp"])["params"]["maximumInstanceCount"] == "maximumInstanceCount"
    site = only(bicep["modules/functionapp.bicep"], "Microsoft.Web/sites")
    assert site["properties"]["functionAppConfig"]["scaleAndConcurrency"]["maximumInstanceCount"] == "maximumInstanceCount"
    assert bicepparam.params((INFRA / "main.bicepparam").read_text())["maximumInstanceCount"].value({}) == 40

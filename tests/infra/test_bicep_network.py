"""Private networking (main.bicep vnetEnabled, deploy.sh --vnet), on the parsed Bicep: a VNet with a subnet
delegated to Microsoft.App/environments for Flex Consumption VNet integration, private endpoints for the
host storage (blob and queue: a timer app uses no tables), the export storage (blob, and queue: the fan-out queue)
and the Key Vault, a private DNS zone per service (this cloud's names) linked to the VNet, and public network access
disabled on all three. Off by default; test_bicep_policy.py runs checkov on both settings.
"""

from __future__ import annotations

from .bicep_helpers import body, only, param_default, resources_of

NETWORK = "modules/network.bicep"


def _accessor(module: str, *path: str) -> dict:
    value: object = path[-1]
    for name in reversed(path[:-1]):
        value = {"operator": {"type": "property_accessor", "operands": {"operand_1": name, "operand_2": value}}}
    return {"operator": {"type": "property_accessor", "operands": {"operand_1": module, "operand_2": value}}}


def _conditional(condition, true_value, false_value) -> dict:
    return {"operator": {"type": "conditional", "operands": {
        "condition": condition, "true_value": true_value, "false_value": false_value}}}


def test_private_networking_is_a_switch_off_by_default(bicep):
    main = bicep["main.bicep"]
    param = main["parameters"]["vnetEnabled"]
    assert param["type"] == "bool" and param["default"] is False
    assert main["modules"]["network"]["config"]["condition"] == "vnetEnabled"
    assert main["modules"]["network"]["detail"]["path"] == NETWORK
    text = main["outputs"]
    assert text["vnetEnabled"]["value"] == "vnetEnabled"
    assert text["vnetName"]["value"] == _conditional("vnetEnabled", _accessor("network", "outputs", "vnetName"), "")


def test_public_network_access_is_disabled_on_both_accounts_and_the_vault(bicep):
    main = bicep["main.bicep"]
    assert main["variables"]["publicNetworkAccess"]["value"] == _conditional("vnetEnabled", "Disabled", "Enabled")
    assert main["variables"]["networkDefaultAction"]["value"] == _conditional("vnetEnabled", "Deny", "Allow")
    for module in ("hostStorage", "exportStorage", "keyVault"):
        params = body(main["modules"][module])["params"]
        assert params["publicNetworkAccess"] == "publicNetworkAccess", module
        assert params["networkDefaultAction"] == "networkDefaultAction", module
    for path, rtype in (("modules/storage.bicep", "Microsoft.Storage/storageAccounts"),
                        ("modules/keyvault.bicep", "Microsoft.KeyVault/vaults")):
        doc = bicep[path]
        props = only(doc, rtype)["properties"]
        assert props["publicNetworkAccess"] == "publicNetworkAccess"
        assert props["networkAcls"]["defaultAction"] == "networkDefaultAction"
        assert props["networkAcls"]["bypass"] == "AzureServices"
        assert {"type": "allowed", "argument": ["Enabled", "Disabled"]} in doc["parameters"]["publicNetworkAccess"]["decorators"]
        assert {"type": "allowed", "argument": ["Allow", "Deny"]} in doc["parameters"]["networkDefaultAction"]["decorators"]
        # Alone, the modules default to the public mode main.bicep also defaults to.
        assert param_default(doc, "publicNetworkAccess") == "Enabled"
        assert param_default(doc, "networkDefaultAction") == "Allow"


def test_the_vnet_has_a_flex_integration_subnet_and_a_private_endpoint_subnet(bicep):
    doc = bicep[NETWORK]
    vnet = only(doc, "Microsoft.Network/virtualNetworks")
    assert vnet["properties"]["addressSpace"]["addressPrefixes"] == ["addressPrefix"]
    subnets = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    assert set(subnets) == {"appSubnetName", "privateEndpointSubnetName"}
    app = subnets["appSubnetName"]
    assert [d["properties"]["serviceName"] for d in app["delegations"]] == ["Microsoft.App/environments"], \
        "Flex Consumption VNet integration needs this delegation"
    assert subnets["privateEndpointSubnetName"]["privateEndpointNetworkPolicies"] == "Disabled"
    assert doc["variables"]["appSubnetName"]["value"] != doc["variables"]["privateEndpointSubnetName"]["value"]
    for name in ("addressPrefix", "appSubnetPrefix", "privateEndpointSubnetPrefix"):
        assert name in doc["parameters"]
    # The function app joins the delegated subnet, and waits for the endpoints before it starts.
    main = bicep["main.bicep"]["modules"]["functionApp"]["config"]
    assert main["params"]["virtualNetworkSubnetId"] == _conditional(
        "vnetEnabled", _accessor("network", "outputs", "appSubnetId"), "")
    assert "network" in main["dependsOn"]
    site = only(bicep["modules/functionapp.bicep"], "Microsoft.Web/sites")
    assert site["properties"]["virtualNetworkSubnetId"] == _conditional(
        {"function": {"type": "empty", "parameters": {"item_to_test": "virtualNetworkSubnetId"}}}, None,
        "virtualNetworkSubnetId")


def test_private_endpoints_for_host_storage_export_storage_and_the_vault(bicep):
    doc = bicep[NETWORK]
    variables = doc["variables"]
    zones = variables["storageZones"]["value"] + [variables["vaultZone"]["value"]]
    assert zones == ["privatelink.blob.${storageSuffix}", "privatelink.queue.${storageSuffix}",
                     "privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}"]
    assert variables["storageSuffix"]["value"]["operator"]["operands"]["operand_2"] == "storage"
    endpoints = variables["storageEndpoints"]["value"] + variables["vaultEndpoints"]["value"]
    assert {(e["target"], e["group"], zones[e["zone"]].split(".")[1] if e["group"] != "vault" else "vault")
            for e in endpoints} == {
        ("hostStorageId", "blob", "blob"), ("hostStorageId", "queue", "queue"),
        ("exportStorageId", "blob", "blob"), ("exportStorageId", "queue", "queue"),  # the fan-out queue
        ("keyVaultId", "vault", "vault"),
    }
    # No vault (federated): no vault endpoint and no vault zone.
    assert variables["endpoints"]["value"] == _conditional(
        {"function": {"type": "empty", "parameters": {"item_to_test": "keyVaultId"}}}, "storageEndpoints",
        {"function": {"type": "concat", "parameters": {"arg_1": "storageEndpoints",
                                                        "arg_2": "vaultEndpoints"}}})
    main = body(bicep["main.bicep"]["modules"]["network"])["params"]
    assert main["hostStorageId"] == _accessor("hostStorage", "outputs", "id")
    assert main["exportStorageId"] == _accessor("exportStorage", "outputs", "id")
    assert main["keyVaultId"] == _conditional("useKeyVault", _accessor("keyVault", "outputs", "id"), "")

    endpoint = body(doc["resources"]["privateEndpoints"])
    assert doc["resources"]["privateEndpoints"]["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    assert endpoint["properties"]["subnet"]["id"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "privateEndpointSubnet", "operand_2": "id"}}}
    [connection] = endpoint["properties"]["privateLinkServiceConnections"]
    assert connection["properties"]["privateLinkServiceId"]["operator"]["operands"]["operand_2"] == "target"
    assert connection["properties"]["groupIds"][0]["operator"]["operands"]["operand_2"] == "group"


def test_each_endpoint_registers_in_its_zone_and_every_zone_is_linked_to_the_vnet(bicep):
    doc = bicep[NETWORK]
    zones = resources_of(doc, "Microsoft.Network/privateDnsZones")
    assert body(zones["zones"])["location"] == "global"
    assert zones["zones"]["config"]["loop_type"]["detail"]["array_name"] == "zoneNames"
    link = body(doc["resources"]["zoneLinks"])
    assert link["properties"]["registrationEnabled"] is False
    assert link["properties"]["virtualNetwork"]["id"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "vnet", "operand_2": "id"}}}
    assert doc["resources"]["zoneLinks"]["config"]["loop_type"]["detail"]["array_name"] == "zoneNames"
    group = body(doc["resources"]["zoneGroups"])
    assert doc["resources"]["zoneGroups"]["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    [config] = group["properties"]["privateDnsZoneConfigs"]
    zone_id = config["properties"]["privateDnsZoneId"]["operator"]["operands"]
    assert zone_id["operand_2"] == "id"
    assert zone_id["operand_1"]["operator"]["operands"]["operand_1"] == "zones"
    assert zone_id["operand_1"]["operator"]["operands"]["operand_2"]["operator"]["operands"]["operand_2"] == "zone"

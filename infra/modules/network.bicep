// Private networking (main.bicep vnetEnabled=true): a VNet with
//  - a subnet delegated to Microsoft.App/environments, which is what Flex Consumption VNet integration
//    needs: the function app's outbound traffic (host storage, export storage, Key Vault) leaves from it;
//  - a subnet for private endpoints: the host storage account (blob and queue: the Functions host keeps
//    its timer status and singleton lease in blobs and uses queues; a timer app uses no tables), the export
//    storage account (blob, and queue: the fan-out queue of many tenants) and the Key Vault (not deployed
//    for clientCredential federated);
//  - one private DNS zone per service, linked to the VNet, so that the usual host names
//    (<account>.blob.core.windows.net, <vault>.vault.azure.net, ...) resolve to the private endpoints
//    from inside the VNet. The zone names follow the cloud (environment()).
// main.bicep then disables public network access on the two storage accounts and the vault.

param namePrefix string

@description('Suffix shared by the deployment\'s resource names.')
param nameSuffix string

param location string

param tags object = {}

@description('Address space of the VNet.')
param addressPrefix string = '10.0.0.0/16'

@description('Subnet for the function app\'s VNet integration (delegated to Microsoft.App/environments).')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Subnet for the private endpoints.')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

@description('Resource ID of the Functions host storage account (private endpoints for blob and queue).')
param hostStorageId string

@description('Resource ID of the export storage account (private endpoints for blob and queue).')
param exportStorageId string

@description('Resource ID of the Key Vault; empty = no vault (clientCredential federated), no endpoint for it.')
param keyVaultId string = ''

var storageSuffix = environment().suffixes.storage
// '.vault.azure.net' -> 'privatelink.vaultcore.azure.net' (US Government, China: their own suffix).
var vaultZone = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'
var storageZones = [
  'privatelink.blob.${storageSuffix}'
  'privatelink.queue.${storageSuffix}'
]
var zoneNames = empty(keyVaultId) ? storageZones : concat(storageZones, [vaultZone])

// Each endpoint: the resource, its sub-resource (group id) and the index of its zone in zoneNames.
var storageEndpoints = [
  {
    name: '${namePrefix}-pe-host-blob-${nameSuffix}'
    target: hostStorageId
    group: 'blob'
    zone: 0
  }
  {
    name: '${namePrefix}-pe-host-queue-${nameSuffix}'
    target: hostStorageId
    group: 'queue'
    zone: 1
  }
  {
    name: '${namePrefix}-pe-export-blob-${nameSuffix}'
    target: exportStorageId
    group: 'blob'
    zone: 0
  }
  {
    name: '${namePrefix}-pe-export-queue-${nameSuffix}'
    target: exportStorageId
    group: 'queue'
    zone: 1
  }
]
var vaultEndpoints = [
  {
    name: '${namePrefix}-pe-vault-${nameSuffix}'
    target: keyVaultId
    group: 'vault'
    zone: 2
  }
]
var endpoints = empty(keyVaultId) ? storageEndpoints : concat(storageEndpoints, vaultEndpoints)

var appSubnetName = 'function-app'
var privateEndpointSubnetName = 'private-endpoints'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${namePrefix}-vnet-${nameSuffix}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: appSubnetName
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: privateEndpointSubnetName
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: vnet.name
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: endpoint.name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnet.id
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.group
          ]
        }
      }
    ]
  }
}]

// The endpoint's A record in its zone, kept by the platform (and removed with the endpoint).
resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(zoneNames[endpoint.zone], '.', '-')
        properties: {
          privateDnsZoneId: zones[endpoint.zone].id
        }
      }
    ]
  }
}]

output vnetName string = vnet.name
output appSubnetId string = appSubnet.id
output privateEndpointSubnetId string = privateEndpointSubnet.id
output privateDnsZoneNames array = zoneNames

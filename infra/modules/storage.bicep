// One storage account with the project's security baseline: Entra ID only (no shared key, no SAS
// signed with account keys), no public blob access, TLS 1.2 over HTTPS, soft delete for blobs and
// containers, metrics and blob read/write/delete logs to Log Analytics. Used twice: the Functions host's
// working storage and the export data storage. With private networking (main.bicep vnetEnabled) the
// caller passes publicNetworkAccess 'Disabled' and networkDefaultAction 'Deny': the account is then
// reachable only through its private endpoints (modules/network.bicep).

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string

param tags object = {}

@description('Blob containers to create (private).')
param containerNames array = []

@description('Queues to create (the export account: the per-tenant fan-out queue and its poison queue); none = no queue service resource.')
param queueNames array = []

@description('Days a deleted blob or container stays recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 7

@description('Lifecycle rule: delete blobs in lifecycleContainerNames this many days after their last modification; 0 = no rule.')
@minValue(0)
@maxValue(36500)
param deleteAfterDays int = 0

@description('Containers the lifecycle rule applies to (required when deleteAfterDays > 0).')
param lifecycleContainerNames array = []

@description('Container (one of containerNames) that gets a time-based retention (WORM) policy of immutabilityDays.')
param immutableContainerName string = ''

@description('Days a blob in immutableContainerName cannot be overwritten or deleted after it is written (Azure answers 409 BlobImmutableDueToPolicy); 0 = no policy.')
@minValue(0)
@maxValue(146000)
param immutabilityDays int = 0

@description('The policy is already locked: ARM accepts no write to a locked policy but an extension (POST .../extend, which deploy.sh makes), so the deployment leaves it as it is.')
param immutabilityPolicyLocked bool = false

@description('Log Analytics workspace that receives the account\'s metrics and the blob read/write/delete audit logs; empty = no diagnostic settings.')
param auditWorkspaceId string = ''

@description('Enabled: reachable over the public endpoint (Entra ID + RBAC is the gate). Disabled: only through private endpoints (main.bicep vnetEnabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Firewall default for the public endpoint: Allow with public access, Deny with private endpoints only.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    // Geo-redundant: the export history (retention window) cannot be rebuilt from Graph after a regional loss.
    // The secondary region is the primary's pair, inside the same geography.
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    isHnsEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // checkov:skip=CKV_AZURE_59: public only with vnetEnabled=false (the default: no VNet integration, the app reaches storage over the public endpoint, every request needs Entra ID + RBAC, shared key is off); vnetEnabled=true passes Disabled.
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      // checkov:skip=CKV_AZURE_35: Allow only with vnetEnabled=false (no VNet to allow-list, RBAC is the gate); vnetEnabled=true passes Deny and private endpoints.
      defaultAction: networkDefaultAction
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

// Container-level time-based retention (WORM) on immutableContainerName: for immutabilityDays after a blob is
// written, Azure refuses to overwrite or delete it (409 BlobImmutableDueToPolicy); the lifecycle rule's delete of
// such a blob fails too, and succeeds on a later daily run once the policy lets go. Type, name 'default' and
// properties: Azure/bicep-types-az generated/storage/microsoft.storage/2023-05-01/types.md
// (immutabilityPolicies, ImmutabilityPolicyProperty; `state` is read-only). ARM creates a policy unlocked:
// locking is a separate POST (az storage container immutability-policy lock, infra/README.md), after which
// the only write ARM accepts is an extension, hence immutabilityPolicyLocked. Container-level policies need
// no blob versioning and work with blob and container soft delete.
resource immutabilityPolicies 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = [for (containerName, i) in containerNames: if ((immutabilityDays > 0) && (containerName == immutableContainerName) && !immutabilityPolicyLocked) {
  parent: containers[i]
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
    // Append blobs could otherwise grow under the policy; the export writes block blobs only.
    allowProtectedAppendWrites: false
  }
}]

// Queues (the export account: the fan-out queue, one message per tenant and slot, and its poison queue). Types, the
// name 'default' and the queue name rule (3-63 characters, lowercase letters, digits and single hyphens):
// Azure/bicep-types-az generated/storage/microsoft.storage/2023-05-01/types.md (queueServices, queueServices/queues).
// Messages carry a tenant id and a slot only; their reads are not audited (the queue trigger polls, which would
// fill the log with reads of nothing), the account's transaction metrics cover them.
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = if (!empty(queueNames)) {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (deleteAfterDays > 0) {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-exports-after-retention'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [for lifecycleContainerName in lifecycleContainerNames: '${lifecycleContainerName}/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deleteAfterDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    containers
  ]
}

resource accountMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(auditWorkspaceId)) {
  name: 'metrics-to-log-analytics'
  scope: account
  properties: {
    workspaceId: auditWorkspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(auditWorkspaceId)) {
  name: 'audit-to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: auditWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue

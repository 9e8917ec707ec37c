// Least-privilege role assignments for the function app's user-assigned managed identity. main.bicep
// deploys this before the function app, so the host can reach its storage from its first start. Names are
// guid(scope, principal, role) so a re-deployment finds and keeps the same assignments.
//
// The person or pipeline running deploy.sh gets no role here: deploy.sh gives it Key Vault Secrets Officer
// (or Certificates Officer) on the one secret (or certificate) it manages, and on the whole vault only for
// as long as that item does not exist yet (see "Least privilege" in infra/README.md).

@description('Object (principal) ID of the function app\'s user-assigned managed identity.')
param principalId string

param hostStorageName string

param exportStorageName string

param exportContainerName string

@description('Container of the app\'s state (EXPORT_STATE_CONTAINER) when it is not the export container (main.bicep exportImmutabilityDays > 0); empty = none, the state lives in the export container.')
param stateContainerName string = ''

@description('The fan-out queue in the export storage account (EXPORT_QUEUE): one message per tenant and slot.')
param exportQueueName string

@description('Its poison queue (<exportQueueName>-poison), where the Functions host moves a message that failed its dequeue limit.')
param poisonQueueName string

@description('Key Vault of the client secret or certificate (a name even when keyVaultAccess is false).')
param vaultName string

@description('How the app signs in (CLIENT_CREDENTIAL): secret and certificate keep their credential in the vault; federated uses no vault.')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param clientCredential string = 'secret'

param appInsightsName string

// Built-in role definition IDs (the same in every Azure cloud and tenant).
var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Adds messages only (queues/messages/add/action): Azure built-in roles for Storage,
  // learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage.
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

// federated: no vault is deployed and nobody gets a role on one.
var keyVaultAccess = (clientCredential != 'federated')

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageName
}

resource exportStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: exportStorageName
}

resource exportBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: exportStorage
  name: 'default'
}

resource exportContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: exportBlobService
  name: exportContainerName
}

// Named after the export container when there is no state container: the name stays valid, and the role
// assignment below is not deployed then.
resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: exportBlobService
  name: empty(stateContainerName) ? exportContainerName : stateContainerName
}

resource exportQueueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: exportStorage
  name: 'default'
}

resource exportQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: exportQueueService
  name: exportQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: exportQueueService
  name: poisonQueueName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Host storage: the Functions host keeps timer schedule status and the singleton lease in blobs (it
// creates its own containers, hence Owner), uses queues, and reads the deployment package. No table role: a
// timer app uses no tables (functionapp.bicep sets no AzureWebJobsStorage__tableServiceUri).
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roleIds.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roleIds.storageQueueDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Export storage: read/write blobs in the export container only (and the state container, below), nothing
// else in that account.
resource exportContainerContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(exportContainer.id, principalId, roleIds.storageBlobDataContributor)
  scope: exportContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Immutable exports: the state container (users/latest.json, slot pointers, locks, checkpoints, delta state) is
// rewritten every run, so it sits outside the export container's WORM policy; the same role, on that container only.
resource stateContainerContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(stateContainerName)) {
  name: guid(stateContainer.id, principalId, roleIds.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The fan-out queue: Storage Queue Data Contributor on that queue only, none on the account. The timer puts one
// message per tenant; the queue trigger (connection EXPORT_STORAGE) reads the queue's metadata, gets and deletes
// messages, and calls Update Message to release a failed one with host.json's visibilityTimeout and to renew an
// in-flight one (WebJobs Storage Queues extension: QueueProcessor.ReleaseMessageAsync,
// UpdateQueueMessageVisibilityCommand). Update Message needs queues/messages/write
// (learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory, "Permissions for Queue
// service operations"), which Reader + Message Processor, the roles the Functions docs give a trigger, lack: a
// release then fails with 403 and the retry waits out the message's first invisibility
// (github.com/MicrosoftDocs/azure-docs/issues/120932). Of the built-in roles only Contributor grants messages/write;
// beyond Sender + Reader + Processor it adds messages/delete, queues/write and queues/delete, on this queue only.
// A custom role was rejected: it needs roleDefinitions/write at deploy time and a tenant-wide object per deployment.
// Bicep creates both queues (modules/storage.bicep): the app never needs to.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(exportQueue.id, principalId, roleIds.storageQueueDataContributor)
  scope: exportQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The poison queue: after the dequeue limit the host sends the message there and deletes it from the fan-out queue.
// It sends first and creates the queue only when the send answers QueueNotFound
// (Microsoft.Azure.WebJobs.Extensions.Storage.Common StorageQueueExtensions.AddMessageAndCreateIfNotExistsAsync), so
// with the queue made by Bicep, Message Sender on it is all the move needs.
resource poisonSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, principalId, roleIds.storageQueueDataMessageSender)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault: read secret values. The vault is dedicated to this app and holds only its client secret, or
// only its certificate, whose private key the app reads through the certificate's backing secret (same
// name): "Key Vault Secrets User" is all either needs. Scoped to the vault rather than to
// `secrets/<name>` (which RBAC also accepts) because the secret does not exist yet when this runs:
// deploy.sh stores it after the deployment.
resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (keyVaultAccess) {
  name: guid(vault.id, principalId, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights: publish telemetry with Entra ID (local auth is disabled).
resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roleIds.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

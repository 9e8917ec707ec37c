// Graph user export: everything the timer-triggered function app needs, in one resource group.
//
//   GRAPH_EXPORT_CLIENT_ID=<app id> az deployment group create -g <rg> --parameters infra/main.bicepparam
//
// See infra/README.md for the walkthrough and infra/deploy.sh for the same steps as one script.
// No secret is a parameter here. How the app signs in is `clientCredential`: a client secret (deploy.sh
// pipes it straight into Key Vault), a Key Vault certificate (deploy.sh creates it: certificates are data
// plane, which Bicep cannot create), or a federated credential trusting the app's user-assigned identity
// (deploy.sh adds it to the app registration: no secret anywhere, and no Key Vault).
// `vnetEnabled` switches to private networking: VNet integration for the app, private endpoints for both
// storage accounts and the vault, and public network access disabled on all three.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------------
// Where and how resources are named
// ---------------------------------------------------------------------------------------------------

@description('Azure region; must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short lowercase prefix for resource names (letters and digits, 3-10 characters).')
@minLength(3)
@maxLength(10)
param namePrefix string = 'graphexp'

@description('Tags applied to every resource.')
param tags object = {
  workload: 'graph-user-export'
  dataClassification: 'personal-data'
}

// ---------------------------------------------------------------------------------------------------
// App settings (graph_export/settings.py). Defaults equal the code's defaults; tests/infra checks that.
// ---------------------------------------------------------------------------------------------------

@description('TENANT_ID: directory (tenant) to export. Defaults to the tenant of the deployment\'s subscription.')
param tenantId string = tenant().tenantId

@description('TENANT_IDS: comma-separated directory (tenant) ids to export, each consented to the app registration (a multi-tenant one: deploy.sh --tenant-ids); at each slot the timer puts one message per tenant on the queue exportQueue and the queue trigger exports each. Empty: one tenant, TENANT_ID, as before this setting existed.')
param tenantIds string = ''

@description('CLIENT_ID: Application (client) ID of the app registration with Microsoft Graph User.Read.All (application).')
@minLength(36)
@maxLength(36)
param clientId string

@description('CLIENT_CREDENTIAL: how the app registration proves itself to Entra ID. secret: a client secret in Key Vault; certificate: a self-renewing Key Vault certificate; federated: a federated credential trusting the function\'s user-assigned identity (no secret, no Key Vault).')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param clientCredential string = 'secret'

@description('CLIENT_SECRET_NAME: name of the Key Vault secret that holds the client secret value (clientCredential secret).')
param clientSecretName string = 'graph-client-secret'

@description('CLIENT_CERTIFICATE_NAME: name of the Key Vault certificate whose private key signs the sign-in (clientCredential certificate).')
param clientCertificateName string = 'graph-client-certificate'

@description('FEDERATED_TOKEN_AUDIENCE: audience of the identity\'s token for the app (clientCredential federated); the federated credential deploy.sh adds uses the same value (output federatedTokenAudience). This cloud\'s token exchange audience.')
param federatedTokenAudience string = (environment().name == 'AzureUSGovernment') ? 'api://AzureADTokenExchangeUSGov' : ((environment().name == 'AzureChinaCloud') ? 'api://AzureADTokenExchangeChina' : 'api://AzureADTokenExchange')

@description('CREDENTIAL_EXPIRY_WARNING_DAYS: the app logs "Credential expiry: ..." (and the credential-expiry alert fires) when the secret or certificate expires within this many days.')
param credentialExpiryWarningDays string = '30'

@description('AUTHORITY_HOST: Entra ID sign-in host of this cloud (the app ignores a trailing slash).')
param authorityHost string = environment().authentication.loginEndpoint

@description('GRAPH_ENDPOINT: Microsoft Graph base URL, without /v1.0 (national clouds differ: deploy.sh passes the one of `az cloud show`).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('EXPORT_CONTAINER: blob container, in the export storage account, that receives the exports.')
@minLength(3)
@maxLength(63)
param exportContainerName string = 'graph-exports'

@description('EXPORT_QUEUE: the queue, in the export storage account, that fans a slot out to one message per tenant (TENANT_IDS); its poison queue is <exportQueue>-poison. Lowercase letters, digits and single hyphens; at most 56 characters, so that the poison queue\'s name fits the 63 a queue name may have.')
@minLength(3)
@maxLength(56)
param exportQueue string = 'graph-export-tenants'

// The export settings people change are parameters (deploy.sh flags), not settings to add by hand: the deployment
// writes the app settings as a whole, and a setting added in the portal is gone after the next one.

@description('EXPORT_SCHEDULE: when the export runs, NCRONTAB with 6 fields (second minute hour day month day-of-week), UTC (deploy.sh --schedule).')
param exportSchedule string = '0 0 2 * * *'

@description('USER_PROPERTIES: comma-separated Graph user properties to export; `id` is always included. signInActivity needs AuditLog.Read.All (deploy.sh grants it) and an Entra ID P1/P2 licence (deploy.sh --user-properties).')
param userProperties string = 'id,userPrincipalName,displayName,givenName,surname,mail,accountEnabled,userType,createdDateTime,jobTitle,department,companyName,employeeId,officeLocation,usageLocation,onPremisesSyncEnabled'

@description('EXPORT_MODE: full reads every user each slot; delta publishes the same complete snapshot from the changes since the previous one (deploy.sh --export-mode).')
@allowed(['full', 'delta'])
param exportMode string = 'full'

@description('EXPORT_FORMATS: jsonl (gzip JSON Lines, always), or jsonl,csv to also write a CSV copy from the same pages (deploy.sh --formats).')
@allowed(['jsonl', 'jsonl,csv'])
param exportFormats string = 'jsonl'

@description('CSV_EXCEL: start the CSV copy with a UTF-8 byte order mark, so Excel shows non-ASCII names correctly (deploy.sh --csv-excel / --no-csv-excel).')
param csvExcel bool = false

@description('FULL_SYNC_EVERY_DAYS: delta mode makes a full export once its saved delta link is this many days old; Graph expires delta links after 7 days (deploy.sh --full-sync-every-days).')
@minValue(0)
@maxValue(7)
param fullSyncEveryDays int = 6

@description('RETRY_BACKOFF_BASE_SECONDS: base of the exponential backoff between retries.')
param retryBackoffBaseSeconds string = '1'

// ---------------------------------------------------------------------------------------------------
// Data protection, operations, access
// ---------------------------------------------------------------------------------------------------

@description('Days an export is kept before the lifecycle rule deletes it.')
@minValue(1)
@maxValue(3650)
param exportRetentionDays int = 90

@description('Immutable exports (WORM): days each export and manifest cannot be overwritten or deleted after it is written, by anyone (a time-based retention policy on the export container; Azure answers 409 BlobImmutableDueToPolicy); 0 = off. When > 0, what the app rewrites (users/latest.json, slot pointers, locks, checkpoints, delta state) lives in a second container, <exportContainerName>-state (app setting EXPORT_STATE_CONTAINER, output stateContainerName). The policy is created unlocked (it can still be shortened or deleted); once locked (infra/README.md, "Immutable exports (WORM)") it can be extended but never shortened or removed. Keep it at most exportRetentionDays (deploy.sh refuses more): the lifecycle rule deletes an export after exportRetentionDays, but cannot while the policy protects it, so a longer policy keeps every export that much longer.')
@minValue(0)
@maxValue(3650)
param exportImmutabilityDays int = 0

@description('Whether the export container\'s immutability policy is already locked (deploy.sh looks): ARM accepts no write to a locked policy but an extension, so the deployment then leaves the policy as it is (deploy.sh extends it with az storage container immutability-policy extend when exportImmutabilityDays grows).')
param exportImmutabilityLocked bool = false

@description('Days a deleted blob or container can still be recovered (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 7

@description('Days Log Analytics keeps logs, telemetry and storage/vault audit events.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('E-mail address notified when an export fails or none succeeded in 26 hours; empty = no e-mail.')
param alertEmail string = ''

@description('Scale-out ceiling of the Flex Consumption plan: 40 to 1000, the range Flex accepts. The timer runs on one instance at a time; with TENANT_IDS the queue trigger scales out to at most this many instances, each exporting as many tenants at once as host.json\'s queues batch allows, which bounds the Graph requests in flight across all tenants (README, "Many tenants": 40 keeps 1,000 tenants well inside Graph\'s per-app budget).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('When this deployment runs (UTC; leave the default): the staleness alert stays quiet while a new app has sent no telemetry yet and the deployment is younger than its window.')
param deployedAt string = utcNow('yyyy-MM-ddTHH:mm:ssZ')

// ---------------------------------------------------------------------------------------------------
// Private networking
// ---------------------------------------------------------------------------------------------------

@description('Private networking: a VNet with a subnet delegated for Flex Consumption VNet integration, private endpoints (and private DNS zones) for the host storage (blob, queue), the export storage (blob) and the Key Vault, and public network access disabled on all three. Off: they are reached over their public endpoints, Entra ID + RBAC being the gate.')
param vnetEnabled bool = false

@description('Address space of the VNet (vnetEnabled).')
param vnetAddressPrefix string = '10.0.0.0/16'

@description('Subnet for the function app\'s VNet integration, delegated to Microsoft.App/environments (vnetEnabled).')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Subnet for the private endpoints (vnetEnabled).')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

@description('Name of the timer function in function_app.py (the alerts query its invocations).')
param functionName string = 'export_users'

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

var prefix = toLower(namePrefix)
var compactPrefix = replace(prefix, '-', '') // storage account names allow only letters and digits
var suffix = take(uniqueString(resourceGroup().id, prefix), 8)
var names = {
  functionApp: '${prefix}-func-${suffix}'
  identity: '${prefix}-id-${suffix}'
  plan: '${prefix}-plan-${suffix}'
  keyVault: 'kv-${prefix}-${suffix}'
  hostStorage: 'st${compactPrefix}fn${suffix}'
  exportStorage: 'st${compactPrefix}ex${suffix}'
  workspace: '${prefix}-log-${suffix}'
  appInsights: '${prefix}-appi-${suffix}'
}
var deploymentContainerName = 'app-package'
// Where the Functions host moves a fan-out message that failed its dequeue limit (the host's naming: <queue>-poison).
var poisonQueue = '${exportQueue}-poison'

// Immutable exports: a container-level WORM policy covers every blob of the export container, so what the app
// rewrites moves to a container of its own, '<export container>-state' (at most 63 characters: a longer export
// container name is cut to 57, without a trailing hyphen). Off: the state stays beside the exports, as before.
var exportImmutable = exportImmutabilityDays > 0
var stateContainerStem = endsWith(take(exportContainerName, 57), '-') ? take(exportContainerName, 56) : take(exportContainerName, 57)
var stateContainerName = exportImmutable ? '${stateContainerStem}-state' : exportContainerName
var exportContainerNames = exportImmutable ? [
  exportContainerName
  stateContainerName
] : [
  exportContainerName
]

// A federated credential needs no vault: nothing secret exists to keep.
var useKeyVault = (clientCredential != 'federated')

// Storage accounts and vault: public endpoint (Entra ID + RBAC) or private endpoints only.
var publicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'
var networkDefaultAction = vnetEnabled ? 'Deny' : 'Allow'

// This cloud's sign-in host without its trailing slash; the issuer of the identity's tokens is
// <host>/<tenant>/v2.0 (what an app registration's federated credential must name).
var loginEndpoint = environment().authentication.loginEndpoint
var loginHost = endsWith(loginEndpoint, '/') ? take(loginEndpoint, length(loginEndpoint) - 1) : loginEndpoint

// ---------------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------------

// The app's one identity, created (and granted its roles, below) before the function app.
module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

// The Functions host's working storage: timer status, singleton lease, deployment package. Separate from
// the export data so that neither the host's Owner role nor its traffic touches the exports.
module hostStorage 'modules/storage.bicep' = {
  name: 'host-storage'
  params: {
    name: names.hostStorage
    location: location
    tags: tags
    containerNames: [
      deploymentContainerName
    ]
    softDeleteRetentionDays: softDeleteRetentionDays
    auditWorkspaceId: monitoring.outputs.workspaceId
    publicNetworkAccess: publicNetworkAccess
    networkDefaultAction: networkDefaultAction
  }
}

// The export data (personal data): the export container (and, with exportImmutabilityDays, its WORM policy and
// the state container), a retention lifecycle rule on both, audit logs of every access.
module exportStorage 'modules/storage.bicep' = {
  name: 'export-storage'
  params: {
    name: names.exportStorage
    location: location
    tags: tags
    containerNames: exportContainerNames
    queueNames: [
      exportQueue
      poisonQueue
    ]
    softDeleteRetentionDays: softDeleteRetentionDays
    // Both containers, as when the state lived beside the exports: a slot's pointer goes with its export.
    deleteAfterDays: exportRetentionDays
    lifecycleContainerNames: exportContainerNames
    immutableContainerName: exportContainerName
    immutabilityDays: exportImmutabilityDays
    immutabilityPolicyLocked: exportImmutabilityLocked
    auditWorkspaceId: monitoring.outputs.workspaceId
    publicNetworkAccess: publicNetworkAccess
    networkDefaultAction: networkDefaultAction
  }
}

module keyVault 'modules/keyvault.bicep' = if (useKeyVault) {
  name: 'key-vault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    auditWorkspaceId: monitoring.outputs.workspaceId
    publicNetworkAccess: publicNetworkAccess
    networkDefaultAction: networkDefaultAction
  }
}

// Private endpoints for both storage accounts and the vault, in a VNet the app is integrated with.
module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    namePrefix: prefix
    nameSuffix: suffix
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    hostStorageId: hostStorage.outputs.id
    exportStorageId: exportStorage.outputs.id
    keyVaultId: useKeyVault ? keyVault.outputs.id : ''
  }
}

// Every setting the app reads (graph_export/settings.py SETTINGS), except those listed in
// tests/infra/test_settings_drift.py NOT_SET_IN_AZURE with the reason (EXPORT_STORAGE: a connection
// string needs the account key, and shared key access is disabled; the identity-based URI is used instead).
var exportAppSettings = {
  TENANT_ID: tenantId
  // Empty = one tenant, TENANT_ID (the code reads an empty setting as unset).
  TENANT_IDS: tenantIds
  CLIENT_ID: clientId
  KEY_VAULT_URL: useKeyVault ? keyVault.outputs.uri : ''
  CLIENT_CREDENTIAL: clientCredential
  CLIENT_SECRET_NAME: clientSecretName
  CLIENT_CERTIFICATE_NAME: clientCertificateName
  MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
  FEDERATED_TOKEN_AUDIENCE: federatedTokenAudience
  CREDENTIAL_EXPIRY_WARNING_DAYS: credentialExpiryWarningDays
  AUTHORITY_HOST: authorityHost
  GRAPH_ENDPOINT: graphEndpoint
  EXPORT_STORAGE__blobServiceUri: exportStorage.outputs.blobEndpoint
  // The same connection's queue endpoint: the timer enqueues there, and the queue trigger (connection EXPORT_STORAGE)
  // listens there; functionapp.bicep names the identity the host uses for it (EXPORT_STORAGE__credential, __clientId).
  EXPORT_STORAGE__queueServiceUri: exportStorage.outputs.queueEndpoint
  EXPORT_QUEUE: exportQueue
  EXPORT_CONTAINER: exportContainerName
  // Empty = the code's default, the export container (as before this setting existed).
  EXPORT_STATE_CONTAINER: exportImmutable ? stateContainerName : ''
  EXPORT_SCHEDULE: exportSchedule
  USER_PROPERTIES: userProperties
  EXPORT_MODE: exportMode
  EXPORT_FORMATS: exportFormats
  CSV_EXCEL: csvExcel ? 'true' : 'false'
  FULL_SYNC_EVERY_DAYS: string(fullSyncEveryDays)
  RETRY_BACKOFF_BASE_SECONDS: retryBackoffBaseSeconds
}

// The identity's roles, before the function app exists: its host reaches storage from the first start.
module roles 'modules/roles.bicep' = {
  name: 'role-assignments'
  params: {
    principalId: identity.outputs.principalId
    hostStorageName: hostStorage.outputs.name
    exportStorageName: exportStorage.outputs.name
    exportContainerName: exportContainerName
    stateContainerName: exportImmutable ? stateContainerName : ''
    exportQueueName: exportQueue
    poisonQueueName: poisonQueue
    vaultName: names.keyVault
    clientCredential: clientCredential
    appInsightsName: monitoring.outputs.appInsightsName
  }
  dependsOn: [
    keyVault
  ]
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    hostStorageName: hostStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    appSettings: exportAppSettings
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    diagnosticsWorkspaceId: monitoring.outputs.workspaceId
  }
  // Roles and (vnetEnabled) private endpoints first: the host reaches its storage from its first start.
  dependsOn: [
    roles
    network
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: prefix
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    functionName: functionName
    alertEmail: alertEmail
    deployedAt: deployedAt
  }
}

// ---------------------------------------------------------------------------------------------------
// Outputs (deploy.sh reads these)
// ---------------------------------------------------------------------------------------------------

output functionAppName string = functionApp.outputs.name
output functionAppPrincipalId string = identity.outputs.principalId
output clientCredential string = clientCredential
@description('Empty when clientCredential is federated (no vault).')
output keyVaultName string = useKeyVault ? keyVault.outputs.name : ''
output keyVaultUri string = useKeyVault ? keyVault.outputs.uri : ''
@description('Scope of the deployer\'s temporary vault-wide role (deploy.sh); empty when clientCredential is federated.')
output keyVaultId string = useKeyVault ? keyVault.outputs.id : ''
output clientSecretName string = clientSecretName
output clientCertificateName string = clientCertificateName
output identityName string = identity.outputs.name
output identityClientId string = identity.outputs.clientId
@description('The federated credential\'s subject: the identity\'s object (principal) ID.')
output identityPrincipalId string = identity.outputs.principalId
@description('The federated credential\'s issuer: this cloud\'s sign-in host, the identity\'s tenant, v2.0.')
output federatedCredentialIssuer string = '${loginHost}/${identity.outputs.tenantId}/v2.0'
output federatedTokenAudience string = federatedTokenAudience
output hostStorageAccountName string = hostStorage.outputs.name
output exportStorageAccountName string = exportStorage.outputs.name
output exportBlobEndpoint string = exportStorage.outputs.blobEndpoint
output exportContainerName string = exportContainerName
@description('The fan-out queue (EXPORT_QUEUE) and its poison queue, in the export storage account.')
output exportQueueName string = exportQueue
output poisonQueueName string = poisonQueue
@description('TENANT_IDS as deployed; empty = one tenant (deploy.sh keeps it on a plain re-run and prints each tenant\'s admin-consent URL).')
output tenantIds string = tenantIds
@description('Where users/latest.json and the app\'s state live (EXPORT_STATE_CONTAINER): the export container unless exportImmutabilityDays > 0.')
output stateContainerName string = stateContainerName
@description('Days of the export container\'s immutability policy; 0 = none (deploy.sh keeps it on a plain re-run).')
output exportImmutabilityDays int = exportImmutabilityDays
output appInsightsName string = monitoring.outputs.appInsightsName
output logAnalyticsWorkspaceName string = monitoring.outputs.workspaceName
output vnetEnabled bool = vnetEnabled
@description('Empty when vnetEnabled is false.')
output vnetName string = vnetEnabled ? network.outputs.vnetName : ''

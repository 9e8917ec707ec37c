// The function app on the Flex Consumption plan (FC1, Linux, Python), running as one user-assigned
// managed identity (modules/identity.bicep) used for everything: host storage, the deployment package,
// Key Vault, export storage and Application Insights. No connection strings, keys or secrets appear in
// its settings. The identity's roles (and, with vnetEnabled, the private endpoints) are in place before this
// module runs (main.bicep), so the host can reach its storage from its very first start.
//
// Flex Consumption does not take FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION or
// WEBSITE_RUN_FROM_PACKAGE: the runtime comes from functionAppConfig.runtime and the code always runs
// from the package in the deployment container.

param name string

param planName string

param location string

param tags object = {}

@description('Storage account for the Functions host (leases, timer schedule status) and the deployment package.')
param hostStorageName string

@description('Blob container in the host storage account that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string (not a secret: local auth is disabled, ingestion needs Entra ID).')
param appInsightsConnectionString string

@description('The app\'s own settings (see graph_export/settings.py); host and telemetry settings are added here.')
param appSettings object

@description('Resource ID of the app\'s user-assigned managed identity.')
param identityId string

@description('Client ID of that identity: the host and the telemetry SDK need it to pick the identity.')
param identityClientId string

// Python 3.13: with it the host runs the Functions worker from the PyPI package azure-functions-runtime, the one
// the app is tested against. Flex Consumption offers it: `az functionapp list-flexconsumption-runtimes
// --location <region> --runtime python` (Get-AzFunctionAppFlexConsumptionRuntime in the Az.Functions reference
// lists python 3.13, end of life 2029-10-30), and the Functions supported-languages table has Python 3.13 GA
// (remote build on Flex is missing only for 3.14). The Flex plan page's own table still lists 3.10-3.12 there.
@description('Python version of the Flex Consumption runtime (functionAppConfig.runtime).')
@allowed([
  '3.13'
])
param pythonVersion string = '3.13'

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Scale-out ceiling: Flex Consumption accepts 40 to 1000 (40 is the samples\' default). A timer function runs on one instance at a time (blob lease); the queue trigger (many tenants) scales out up to this.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Subnet (delegated to Microsoft.App/environments) for VNet integration; empty = none (main.bicep vnetEnabled=false).')
param virtualNetworkSubnetId string = ''

@description('Log Analytics workspace that receives the app\'s platform logs and metrics; empty = no diagnostic setting.')
param diagnosticsWorkspaceId string = ''

// Endpoints built from the account name (known when the deployment starts, which the settings loop needs).
var storageSuffix = environment().suffixes.storage
var hostBlobEndpoint = 'https://${hostStorageName}.blob.${storageSuffix}/'

// Identity-based host storage (AzureWebJobsStorage__*): the timer trigger keeps its schedule status and
// singleton lease in blobs; the host also uses queues. No table service: a timer app needs none (the official
// Flex timer sample, Azure-Samples/functions-quickstart-python-azd-timer infra/main.bicep, turns it off; only
// Durable Functions and the OpenAI bindings use tables). Telemetry goes to Application Insights with Entra ID.
// Both name the user-assigned identity by its client ID (an app with only user-assigned identities has no
// default identity).
var hostSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: hostBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: 'https://${hostStorageName}.queue.${storageSuffix}/'
  // The queue trigger's connection EXPORT_STORAGE (its __queueServiceUri is an app setting, main.bicep): without these
  // the host would use a system-assigned identity, which this app does not have ("The system-assigned identity is used
  // by default, although a user-assigned identity can be specified with the credential and clientID properties",
  // learn.microsoft.com/azure/azure-functions/functions-reference, identity-based connections).
  EXPORT_STORAGE__credential: 'managedidentity'
  EXPORT_STORAGE__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

var allSettings = union(appSettings, hostSettings)

var settingsList = [for setting in items(allSettings): {
  name: setting.key
  value: setting.value
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225: a once-a-day batch job; a run missed in a zone outage is caught up as past due, the 26-hour staleness alert covers longer outages, and Flex zone redundancy is not offered in every region.
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222: code is published from the operator's machine to the app's SCM endpoint, which closing public access would block; the app has no HTTP functions to expose.
    // checkov:skip=CKV_AZURE_17: client certificates guard HTTP functions and this app has only a timer trigger.
    // checkov:skip=CKV_AZURE_212: numberOfWorkers does not apply to Flex Consumption (the platform scales instances), and the timer runs on one instance at a time by design.
    // checkov:skip=CKV_AZURE_213: a health check probes an HTTP path and this app serves none (timer trigger only).
    // checkov:skip=CKV_AZURE_78: Flex Consumption does not support FTPS and deprecates siteConfig.ftpsState; FTP publishing is disabled by the basic publishing credentials policy (ftpBasicAuth) instead.
    serverFarmId: plan.id
    // Outbound traffic through the VNet (storage, Key Vault over their private endpoints) when vnetEnabled.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    httpsOnly: true
    clientAffinityEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // No ftpsState: Flex Consumption does not support FTPS and lists properties.ftpsState among its deprecated
      // site properties (learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations).
      // FTP publishing is off through the basic publishing credentials policy below.
      remoteDebuggingEnabled: false
      http20Enabled: true
      cors: {
        allowedOrigins: []
      }
      appSettings: settingsList
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Publishing with user names and passwords (FTP and the SCM site) is off: deployments authenticate with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Platform logs (the host's FunctionAppLogs) and metrics in the same workspace as the audit logs.
resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(diagnosticsWorkspaceId)) {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: diagnosticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output id string = site.id
output planName string = plan.name

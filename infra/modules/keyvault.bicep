// Key Vault for the Graph client secret or certificate: RBAC authorization only (no access policies), soft
// delete with purge protection, audit events and metrics to Log Analytics. The secret itself is NOT created
// here: its value must never appear in a template, a parameter file or a deployment's history. deploy.sh
// pipes it from `az ad app credential reset` straight into `az keyvault secret set`. With private networking
// (main.bicep vnetEnabled) public network access is disabled: the vault answers only through its private
// endpoint (modules/network.bicep).

@description('Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string

param tags object = {}

@description('Log Analytics workspace that receives the vault audit events and metrics; empty = no diagnostic setting.')
param auditWorkspaceId string = ''

@description('Enabled: reachable over the public endpoint (Entra ID + RBAC is the gate). Disabled: only through its private endpoint (main.bicep vnetEnabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Firewall default for the public endpoint: Allow with public access, Deny with the private endpoint only.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    // checkov:skip=CKV_AZURE_189: public only with vnetEnabled=false (the default: no VNet integration, the app reads the secret over the public endpoint with Entra ID + the Key Vault Secrets User role); vnetEnabled=true passes Disabled.
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      // checkov:skip=CKV_AZURE_109: Allow only with vnetEnabled=false (no VNet to allow-list, Functions is not a trusted service, RBAC is the gate); vnetEnabled=true passes Deny and a private endpoint.
      defaultAction: networkDefaultAction
      bypass: 'AzureServices'
    }
  }
}

resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(auditWorkspaceId)) {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: auditWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
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

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri

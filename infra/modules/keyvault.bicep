// Key Vault for the Graph client secret: RBAC authorization only (no access policies), soft delete
// with purge protection, audit events to Log Analytics. The secret itself is NOT created here: its
// value must never appear in a template, a parameter file or a deployment's history. deploy.sh
// pipes it from `az ad app credential reset` straight into `az keyvault secret set`.

@description('Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string

param tags object = {}

@description('Log Analytics workspace that receives the vault audit events; empty = no diagnostic setting.')
param auditWorkspaceId string = ''

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
    // checkov:skip=CKV_AZURE_189: the Flex Consumption app has no VNet integration and reads the secret over the vault's public endpoint; every request needs Entra ID + the Key Vault Secrets User role.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // checkov:skip=CKV_AZURE_109: no VNet to allow-list and Functions is not a trusted service, so the firewall default stays Allow and RBAC is the gate.
      defaultAction: 'Allow'
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
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri

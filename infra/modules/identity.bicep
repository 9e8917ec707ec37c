// The function app's user-assigned managed identity: the one identity the app uses for everything
// (host storage, the deployment package, export storage, Key Vault, Application Insights) and, with
// CLIENT_CREDENTIAL=federated, the identity the app registration trusts instead of a secret.
//
// User-assigned rather than system-assigned because
//  - it exists before the function app, so its role assignments are in place before the app first starts
//    (the Flex Consumption samples do the same);
//  - an app registration's federated credential can only trust a user-assigned identity;
//  - it survives re-creating the function app, so the federated credential and the roles stay valid.

@description('Identity name: 3-128 letters, digits, hyphens and underscores.')
@minLength(3)
@maxLength(128)
param name string

param location string

param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
@description('Application (client) ID: MANAGED_IDENTITY_CLIENT_ID and AzureWebJobsStorage__clientId.')
output clientId string = identity.properties.clientId
@description('Object (principal) ID: the role assignments\' principal and the federated credential\'s subject.')
output principalId string = identity.properties.principalId
@description('Tenant that issues the identity\'s tokens: the federated credential\'s issuer names it.')
output tenantId string = identity.properties.tenantId

// Parameters for infra/main.bicep.
//
//   export GRAPH_EXPORT_CLIENT_ID=<application (client) id>     # required
//   export GRAPH_EXPORT_CLIENT_CREDENTIAL=certificate           # optional: secret (default), certificate, federated
//   export GRAPH_EXPORT_ALERT_EMAIL=<you@example.com>           # optional
//   export GRAPH_EXPORT_DEPLOYER_ID=<your object id>            # optional: lets you store the secret / create the certificate
//   az deployment group create -g <rg> --name graph-export --parameters infra/main.bicepparam
//
// deploy.sh sets these variables for you. Values that differ per deployment come from the environment;
// the rest are the defaults written here. Never put a secret here: the Graph client secret is written
// to Key Vault by deploy.sh (or the README's commands), never by Bicep.
using './main.bicep'

// From `az ad app create` / `az ad app list` (README step 2). Empty fails validation (36 characters).
param clientId = readEnvironmentVariable('GRAPH_EXPORT_CLIENT_ID', '')

// 3-10 lowercase letters and digits; resource names are derived from it plus a hash of the resource group.
param namePrefix = readEnvironmentVariable('GRAPH_EXPORT_NAME_PREFIX', 'graphexp')

// How the app signs in (CLIENT_CREDENTIAL), see "Choosing a credential" in README.md:
//   secret       a client secret in Key Vault (it expires: deploy.sh makes it 1 year; the app warns first)
//   certificate  a self-signed Key Vault certificate that renews itself (deploy.sh creates and registers it)
//   federated    a federated credential trusting the function's user-assigned identity: no secret, no vault
param clientCredential = readEnvironmentVariable('GRAPH_EXPORT_CLIENT_CREDENTIAL', 'secret')

param alertEmail = readEnvironmentVariable('GRAPH_EXPORT_ALERT_EMAIL', '')

param deployerPrincipalId = readEnvironmentVariable('GRAPH_EXPORT_DEPLOYER_ID', '')

param deployerPrincipalType = readEnvironmentVariable('GRAPH_EXPORT_DEPLOYER_TYPE', 'User')

// Daily at 02:00 UTC. NCRONTAB: second minute hour day month day-of-week.
param exportSchedule = '0 0 2 * * *'

param exportContainerName = 'graph-exports'

// 'delta' publishes each slot's complete snapshot from the changes since the previous one (users/delta).
param exportMode = 'full'

param clientSecretName = 'graph-client-secret'

param clientCertificateName = 'graph-client-certificate'

// The app logs "Credential expiry: ..." and the credential-expiry alert fires this many days before
// the client secret or certificate in Key Vault expires.
param credentialExpiryWarningDays = '30'

// Exports older than this are deleted by the storage lifecycle rule.
param exportRetentionDays = 90

param softDeleteRetentionDays = 7

param logRetentionDays = 30

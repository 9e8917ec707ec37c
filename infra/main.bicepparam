// Parameters for infra/main.bicep.
//
//   export GRAPH_EXPORT_CLIENT_ID=<application (client) id>     # required
//   export GRAPH_EXPORT_CLIENT_CREDENTIAL=certificate           # optional: secret (default), certificate, federated
//   export GRAPH_EXPORT_ALERT_EMAIL=<you@example.com>           # optional
//   export GRAPH_EXPORT_VNET_ENABLED=true                       # optional: private networking (default false)
//   export GRAPH_EXPORT_GRAPH_ENDPOINT=https://graph.microsoft.us  # optional: this cloud's Microsoft Graph
//   export GRAPH_EXPORT_IMMUTABILITY_DAYS=365                   # optional: immutable (WORM) exports (default 0: off)
//   export GRAPH_EXPORT_MODE=delta                              # optional: and the other export settings below
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

// Private networking: VNet integration, private endpoints for both storage accounts and the vault, their
// public network access disabled (deploy.sh --vnet). Anything but 'true' is off.
param vnetEnabled = readEnvironmentVariable('GRAPH_EXPORT_VNET_ENABLED', 'false') == 'true'

// Microsoft Graph of the cloud deployed to, without /v1.0 (deploy.sh passes the one `az cloud show` names).
param graphEndpoint = readEnvironmentVariable('GRAPH_EXPORT_GRAPH_ENDPOINT', 'https://graph.microsoft.com')

// Scale-out ceiling; Flex Consumption accepts 40 to 1000. With TENANT_IDS it bounds how many tenants export at once
// (README, "Many tenants": the numbers for 1,000 tenants).
param maximumInstanceCount = 40

// TENANT_IDS (deploy.sh --tenant-ids, --no-tenant-ids): comma-separated directory (tenant) ids, each consented to the
// (multi-tenant) app registration; empty = one tenant, TENANT_ID. Kept from the last deployment like the settings below.
param tenantIds = readEnvironmentVariable('GRAPH_EXPORT_TENANT_IDS', '')

// EXPORT_QUEUE: the fan-out queue in the export storage account (and <name>-poison beside it).
param exportQueue = 'graph-export-tenants'

param exportContainerName = 'graph-exports'

// The export settings people change (app settings EXPORT_SCHEDULE, EXPORT_MODE, EXPORT_FORMATS, CSV_EXCEL,
// FULL_SYNC_EVERY_DAYS, USER_PROPERTIES): each from its GRAPH_EXPORT_* variable, which deploy.sh sets from its flag,
// else from the last deployment's value, else to the value written here (the app's default). Change them with
// deploy.sh's flags rather than here, and never in the portal: each deployment writes the app settings as a whole.

// EXPORT_SCHEDULE (deploy.sh --schedule): NCRONTAB, second minute hour day month day-of-week, UTC; daily at 02:00.
param exportSchedule = readEnvironmentVariable('GRAPH_EXPORT_SCHEDULE', '0 0 2 * * *')

// EXPORT_MODE (--export-mode): 'delta' publishes each slot's complete snapshot from the changes since the
// previous one (users/delta).
param exportMode = readEnvironmentVariable('GRAPH_EXPORT_MODE', 'full')

// EXPORT_FORMATS (--formats): 'jsonl,csv' also writes a CSV copy of each export.
param exportFormats = readEnvironmentVariable('GRAPH_EXPORT_FORMATS', 'jsonl')

// CSV_EXCEL (--csv-excel / --no-csv-excel): the CSV copy starts with a UTF-8 byte order mark, for Excel.
param csvExcel = readEnvironmentVariable('GRAPH_EXPORT_CSV_EXCEL', 'false') == 'true'

// FULL_SYNC_EVERY_DAYS (--full-sync-every-days): delta mode makes a full export when its delta link is this old.
param fullSyncEveryDays = int(readEnvironmentVariable('GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS', '6'))

// USER_PROPERTIES (--user-properties): signInActivity needs the Microsoft Graph permission AuditLog.Read.All
// (deploy.sh requests and consents it when USER_PROPERTIES selects signInActivity) and an Entra ID P1 or P2
// licence in the tenant; it cannot be combined with exportMode 'delta'.
param userProperties = readEnvironmentVariable('GRAPH_EXPORT_USER_PROPERTIES', 'id,userPrincipalName,displayName,givenName,surname,mail,accountEnabled,userType,createdDateTime,jobTitle,department,companyName,employeeId,officeLocation,usageLocation,onPremisesSyncEnabled')

param clientSecretName = 'graph-client-secret'

param clientCertificateName = 'graph-client-certificate'

// The app logs "Credential expiry: ..." and the credential-expiry alert fires this many days before
// the client secret or certificate in Key Vault expires.
param credentialExpiryWarningDays = '30'

// Exports older than this are deleted by the storage lifecycle rule.
param exportRetentionDays = 90

// Immutable exports (WORM), see "Immutable exports (WORM)" in infra/README.md: days each export and manifest
// cannot be overwritten or deleted (deploy.sh --immutability-days; 0 = off); at most exportRetentionDays.
param exportImmutabilityDays = int(readEnvironmentVariable('GRAPH_EXPORT_IMMUTABILITY_DAYS', '0'))

// deploy.sh sets this when it finds the policy locked: a deployment must then leave the policy alone.
param exportImmutabilityLocked = readEnvironmentVariable('GRAPH_EXPORT_IMMUTABILITY_LOCKED', 'false') == 'true'

param softDeleteRetentionDays = 7

param logRetentionDays = 30

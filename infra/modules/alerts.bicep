// Failure alerting on the function's invocations in Application Insights (the `requests` table;
// host.json excludes Request from sampling, so every invocation is there):
//  1. an export run failed (checked every 15 minutes);
//  2. no export succeeded in the last 26 hours (checked hourly, over 2 days of data): catches a stopped
//     app, a broken schedule or a host that cannot start, which produce no failed run at all;
//  3. the client secret or certificate in Key Vault expires soon: the app logs one warning line starting
//     with "Credential expiry:" in each run within CREDENTIAL_EXPIRY_WARNING_DAYS of the expiry (the
//     `traces` table, checked hourly), so this fires once a day, after the daily run, until it is rotated.
//     An expired one fails the run, which alert 1 reports;
//  4. access changed: an activity-log alert on role assignments made or removed anywhere in the resource
//     group (the vault, its secret, the storage accounts, ...) and on changes to the Key Vault itself
//     (network rules, access policies, deletion). deploy.sh's own runs show up here too.
// All notify the optional e-mail action group.

param namePrefix string

param location string

param tags object = {}

@description('Resource ID of the Application Insights component the function app reports to.')
param appInsightsId string

@description('Name of the timer function in function_app.py.')
param functionName string

@description('E-mail address to notify; empty = alerts still fire (portal, Azure Monitor) but notify nobody.')
param alertEmail string = ''

@description('Hours without a successful export before the staleness alert fires (daily schedule + slack).')
@minValue(1)
@maxValue(47)
param staleAfterHours int = 26

@description('Start of the warning line the app logs when its client secret or certificate expires soon.')
param credentialExpiryPrefix string = 'Credential expiry:'

@description('When this deployment ran (UTC, ISO 8601): an app without any telemetry yet stays quiet for staleAfterHours after it.')
param deployedAt string

@description('Operations the access-change alert watches (activity log operationName).')
param accessChangeOperations array = [
  'Microsoft.Authorization/roleAssignments/write'
  'Microsoft.Authorization/roleAssignments/delete'
  'Microsoft.KeyVault/vaults/write'
  'Microsoft.KeyVault/vaults/delete'
  'Microsoft.KeyVault/vaults/accessPolicies/write'
]

var notify = !empty(alertEmail)

var failedRunQuery = '''
requests
| where operation_Name =~ '{0}'
| where success == false
| project timestamp, id, resultCode, duration
'''

// No success within the window, unless the app is new: its first telemetry (the host logs as soon as it
// starts) is younger than the window, or it has none yet and the deployment is younger than the window (a
// fresh deployment waiting for its first scheduled run). An app that never sent any telemetry alerts once
// the deployment is older than the window; one that stopped sending alerts once its last data is.
var staleQuery = '''
let window = {1}h;
let deployedAt = datetime({2});
let firstSeen = toscalar(union requests, traces, exceptions | summarize min(timestamp));
requests
| where timestamp > ago(window)
| where operation_Name =~ '{0}'
| where success == true
| summarize successes = count()
| where successes == 0
| where iff(isnull(firstSeen), deployedAt < ago(window), firstSeen < ago(window))
'''

// The app's own warning line, whichever operation logged it (the timer run or the CLI in Azure).
var credentialExpiryQuery = '''
traces
| where message startswith '{0}'
| project timestamp, severityLevel, message, operation_Name
'''

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-export-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('${namePrefix}exp', 12)
    enabled: true
    emailReceivers: [
      {
        name: 'export-owner'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource exportFailed 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-export-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Graph user export failed'
    description: 'A run of the ${functionName} function failed. Its log line "Export failed: ..." says which setting or permission to fix.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: format(failedRunQuery, functionName)
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}

resource exportStale 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-export-stale'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'No successful Graph user export in ${staleAfterHours} hours'
    description: 'The ${functionName} function has not completed successfully for ${staleAfterHours} hours: the app may be stopped, unable to start, or its schedule broken.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    criteria: {
      allOf: [
        {
          query: format(staleQuery, functionName, staleAfterHours, deployedAt)
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}

resource credentialExpiry 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-credential-expiry'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Graph user export credential expires soon'
    description: 'The app registration\'s client secret or certificate in Key Vault expires soon (the log line "Credential expiry: ..." says which and when). Rotate it before then: infra/deploy.sh --rotate-secret, or --rotate-certificate (see "Choosing a credential" in README.md).'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: format(credentialExpiryQuery, credentialExpiryPrefix)
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}

// Who changed access to the export, its credential or its data (Administrative events, succeeded only).
resource accessChanged 'Microsoft.Insights/activityLogAlerts@2020-10-01' = {
  name: '${namePrefix}-access-changed'
  location: 'global'
  tags: tags
  properties: {
    description: 'A role assignment in resource group ${resourceGroup().name} was created or deleted, or its Key Vault was changed (network rules, access policies, deletion). Check the caller in the activity log; a run of infra/deploy.sh causes this too.'
    enabled: true
    scopes: [
      resourceGroup().id
    ]
    condition: {
      allOf: [
        {
          field: 'category'
          equals: 'Administrative'
        }
        {
          field: 'status'
          equals: 'Succeeded'
        }
        {
          anyOf: [for operation in accessChangeOperations: {
            field: 'operationName'
            equals: operation
          }]
        }
      ]
    }
    actions: {
      actionGroups: notify ? [
        {
          actionGroupId: actionGroup.id
        }
      ] : []
    }
  }
}

output actionGroupId string = notify ? actionGroup.id : ''
output failedRuleName string = exportFailed.name
output staleRuleName string = exportStale.name
output credentialExpiryRuleName string = credentialExpiry.name
output accessChangedAlertName string = accessChanged.name

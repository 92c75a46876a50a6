// Application Insights with Entra-authenticated ingestion only: local (instrumentation key)
// authentication is off, and each app's identity publishes with Monitoring Metrics Publisher.

param insightsName string
param workspaceName string
param location string
param publisherPrincipalIds array
param tags object

// Monitoring Metrics Publisher: despite its name, it is the role that lets an identity send
// all telemetry to Application Insights when local authentication is disabled.
var metricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
    features: {
      disableLocalAuth: true
    }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: insightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    // Telemetry carries names and thumbprints only, but IP addresses are still not kept.
    DisableIpMasking: false
  }
}

resource publishers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in publisherPrincipalIds: {
  name: guid(insights.id, principalId, metricsPublisher)
  scope: insights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', metricsPublisher)
  }
}]

// The connection string names the ingestion endpoint; with local authentication disabled its
// instrumentation key grants nothing on its own.
output connectionString string = insights.properties.ConnectionString

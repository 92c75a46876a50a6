// One Linux Function App running keyturn's custom handler, on its own plan, with its own
// user-assigned identity. Used twice by main.bicep: the rotator and the endpoint.

param name string
param location string
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string
param dedicatedSku string
param identityId string
param identityClientId string
param storageAccountName string
@description('Blob service endpoint of the storage account, ending in a slash.')
param blobEndpoint string
@description('Blob container holding this app\'s Flex Consumption deployment package.')
param deploymentContainerName string
param insightsConnectionString string
param minimumTlsVersion string
@description('Require a client certificate on every request (the mTLS endpoint).')
param requireClientCertificate bool
@description('keyturn\'s app settings for this app: [{ name, value }].')
param appSettings array
@description('Subnet for outbound VNet integration; empty for none.')
param integrationSubnetId string
@description('Flex Consumption instance memory. 2048 MB is the platform default and suits most apps.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048
@description('Flex Consumption scale-out ceiling. 40 is the lowest the platform accepts.')
param maximumInstanceCount int = 40
param tags object

var isFlex = hostingPlan == 'FlexConsumption'

// Identity-based host storage (no account key) and Entra-authenticated Application Insights.
var hostSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
]

// Flex Consumption rejects these settings: its runtime and package come from functionAppConfig.
var dedicatedHostSettings = [
  { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
  { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'custom' }
  { name: 'WEBSITE_RUN_FROM_PACKAGE', value: '1' }
]

var flexFunctionAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${blobEndpoint}${deploymentContainerName}'
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
    name: 'custom'
    version: '1.0'
  }
}

// Only one app is allowed per Flex Consumption plan, so each app has its own plan.
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy needs always-ready Flex instances or Premium v3 with three workers; keyturn's work is queued and retried, so a zone outage delays rotations rather than losing them.
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'linux'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: dedicatedSku
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_15: minTlsVersion comes from the minimumTlsVersion parameter, which @allowed limits to 1.2 and 1.3.
  // checkov:skip=CKV_AZURE_145: minTlsVersion comes from the minimumTlsVersion parameter, which @allowed limits to 1.2 and 1.3.
  // checkov:skip=CKV_AZURE_17: The endpoint app requires client certificates (requireClientCertificate); the rotator's caller is Event Grid, which presents none.
  // checkov:skip=CKV_AZURE_222: Devices call the endpoint and Event Grid calls the rotator over the internet; private networking covers the apps' outbound traffic.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances on demand and has no fixed worker count; triggers are retried across instances.
  // checkov:skip=CKV_AZURE_213: The custom handler serves only its function routes; SecretEndpoint requires a client certificate a health probe does not have.
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
    serverFarmId: plan.id
    httpsOnly: true
    // No clientCertExclusionPaths: exclusions force TLS renegotiation, which TLS 1.3 and
    // HTTP/2 do not have.
    clientCertEnabled: requireClientCertificate
    clientCertMode: requireClientCertificate ? 'Required' : 'Optional'
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(integrationSubnetId) ? null : integrationSubnetId
    // Flex Consumption takes its runtime, package location and scale here; the other plans
    // take them from app settings and siteConfig (null leaves a property unset).
    functionAppConfig: isFlex ? flexFunctionAppConfig : null
    siteConfig: {
      minTlsVersion: minimumTlsVersion
      scmMinTlsVersion: minimumTlsVersion
      ftpsState: 'Disabled'
      remoteDebuggingEnabled: false
      http20Enabled: true
      vnetRouteAllEnabled: !empty(integrationSubnetId)
      // Dedicated plans unload idle apps without Always On, which would stop the timer and the
      // Service Bus listener; Flex Consumption rejects the property. An empty linuxFxVersion is
      // what the custom-handler stack specifies on Linux.
      alwaysOn: isFlex ? null : true
      linuxFxVersion: isFlex ? null : ''
      appSettings: concat(hostSettings, isFlex ? [] : dedicatedHostSettings, appSettings)
    }
  }
}

// Deployments authenticate with Entra ID; publishing user names and passwords stay off.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName

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
@description('Object (principal) id of the app\'s identity.')
param identityPrincipalId string
@description('Give the app\'s identity Reader on this site alone, so it can read its own front-end configuration (clientCertEnabled, clientCertMode, clientCertExclusionPaths) from Azure Resource Manager.')
param readsOwnSite bool
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
// The platform accepts 1 to 1000 (the azurerm provider's azurerm_function_app_flex_consumption
// validates maximum_instance_count with IntBetween(1, 1000)); the former minimum of 40 no
// longer applies. Dedicated plans ignore it: they run the plan's worker count.
@description('Flex Consumption scale-out ceiling, 1 to 1000 instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int
param tags object

var isFlex = hostingPlan == 'FlexConsumption'

// Reader (built-in, the same id in every tenant), assigned on this one site: it reads the
// site's properties (clientCertEnabled, clientCertMode, clientCertExclusionPaths) and nothing
// secret: app settings, connection strings, publishing credentials and host keys are all
// behind list actions (Microsoft.Web/sites/config/list/action, .../host/listkeys/action)
// that Reader does not hold.
var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

// Identity-based host storage (no account key) and Entra-authenticated Application Insights.
// The service URIs are built from the deployment's own cloud (environment().suffixes.storage:
// core.windows.net, core.usgovcloudapi.net, core.chinacloudapi.cn), as Microsoft's Flex
// Consumption sample does (Azure-Samples/azure-functions-flex-consumption-samples,
// IaC/bicep/main.bicep); AzureWebJobsStorage__accountName alone assumes the public cloud's
// suffix. The queue URI is there because the host expects blob and queue together; no app
// has a queue trigger, so no queue role is granted. The table URI is where the host records
// diagnostic events (see hostDiagnosticEvents in main.bicep).
var storageSuffix = environment().suffixes.storage
var hostSettings = [
  { name: 'AzureWebJobsStorage__blobServiceUri', value: 'https://${storageAccountName}.blob.${storageSuffix}' }
  { name: 'AzureWebJobsStorage__queueServiceUri', value: 'https://${storageAccountName}.queue.${storageSuffix}' }
  { name: 'AzureWebJobsStorage__tableServiceUri', value: 'https://${storageAccountName}.table.${storageSuffix}' }
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

// siteConfig properties sent on Dedicated plans only. Azure Resource Manager refuses
// ftpsState on Flex Consumption sites (error 51021, "Site.SiteConfig.FtpsState for Flex
// Consumption sites is invalid"), and remoteDebuggingEnabled, vnetRouteAllEnabled, alwaysOn
// and linuxFxVersion are not Flex properties either: Microsoft's Flex sample sends none of
// them, and the azurerm provider's Flex resource has no ftps_state at all. A Flex app has no
// FTP endpoint and no remote debugging to turn off. Without route-all, VNet integration
// still carries traffic to private addresses, which is all private networking needs here:
// Storage, Service Bus and Key Vault resolve to private endpoints in the VNet.
// Dedicated plans unload idle apps without Always On, which would stop the timer and the
// Service Bus listener. An empty linuxFxVersion is what the custom-handler stack specifies on
// Linux.
var dedicatedSiteConfig = {
  ftpsState: 'Disabled'
  remoteDebuggingEnabled: false
  vnetRouteAllEnabled: !empty(integrationSubnetId)
  alwaysOn: true
  linuxFxVersion: ''
}

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
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances on demand and has no fixed worker count; a Dedicated plan runs its SKU's workers; triggers are retried across instances.
  // checkov:skip=CKV_AZURE_213: The custom handler serves only its function routes; SecretEndpoint requires a client certificate a health probe does not have.
  // checkov:skip=CKV_AZURE_78: ftpsState 'Disabled' is sent on Dedicated plans (dedicatedSiteConfig); Resource Manager refuses ftpsState on Flex Consumption (error 51021), which has no FTP endpoint. Checkov cannot read through the union() that adds it.
  // checkov:skip=CKV_AZURE_18: http20Enabled is true in siteConfig's first object; Checkov cannot read through the union() that adds the Dedicated-only properties.
  // checkov:skip=CKV_AZURE_67: http20Enabled is true in siteConfig's first object; Checkov cannot read through the union() that adds the Dedicated-only properties.
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
    siteConfig: union({
      minTlsVersion: minimumTlsVersion
      scmMinTlsVersion: minimumTlsVersion
      http20Enabled: true
      appSettings: concat(hostSettings, isFlex ? [] : dedicatedHostSettings, appSettings)
    }, isFlex ? {} : dedicatedSiteConfig)
  }
}

// Deployments authenticate with Entra ID; publishing user names and passwords stay off.
// The scm policy exists on every plan (Flex deployments go through the SCM site's
// /api/publish, and the azurerm provider's Flex resource manages exactly this policy).
resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// The ftp policy is sent on Dedicated plans only. Flex Consumption has no FTP endpoint, and
// nothing Microsoft publishes says Resource Manager accepts this child resource on a Flex
// site (the azurerm provider's Flex resource never writes it), so sending it there risks the
// same kind of refusal as ftpsState. infra/README.md ("Verify on first deployment") has the
// command that shows what a Flex site reports for it.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = if (!isFlex) {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

// The endpoint checks its own front end (client certificates required, no exclusion path)
// before it believes X-ARR-ClientCert; this is the least role that lets it read its site.
resource selfReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (readsOwnSite) {
  name: guid(site.id, identityPrincipalId, readerRoleId)
  scope: site
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName

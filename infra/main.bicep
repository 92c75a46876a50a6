// keyturn in a customer's own subscription: two Function Apps from one package (rotator and
// endpoint), each with its own user-assigned identity, and everything they need. No secret is
// needed to deploy or to run it: every connection is identity-based.
//
// Deploy into a resource group: see infra/README.md.

targetScope = 'resourceGroup'

@description('Short name used to derive resource names. Only its letters and digits are used, lower-cased (My-App becomes myapp), so every name derived from it is valid; with none, keyturn is used.')
@minLength(3)
@maxLength(11)
param baseName string = 'keyturn'

@description('Azure region of everything keyturn creates. Event Grid system topics follow their vault\'s region instead.')
param location string = resourceGroup().location

@description('Hosting plan of the rotator app. FlexConsumption (default) or Dedicated; see the README for why Elastic Premium and Linux Consumption are not offered.')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param rotatorHostingPlan string = 'FlexConsumption'

@description('Hosting plan of the endpoint app (the mTLS SecretEndpoint). Dedicated (default): App Service documents that clientCertMode Required makes its front end demand the TLS client certificate, which is what makes X-ARR-ClientCert trustworthy. Nothing Microsoft publishes says Flex Consumption enforces it; choose FlexConsumption only together with endpointFlexClientCertVerified, after the check in infra/README.md.')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param endpointHostingPlan string = 'Dedicated'

@description('Only with endpointHostingPlan FlexConsumption: true once the "Verify on first deployment" check in infra/README.md has shown that the Flex front end refuses a request without a client certificate. Until then the endpoint does not believe X-ARR-ClientCert (KEYTURN_TRUST_ARR_CLIENT_CERT=false) and refuses every request that carries it. Ignored on Dedicated, where the front end\'s enforcement is documented.')
param endpointFlexClientCertVerified bool = false

@description('Most instances the endpoint may run on Flex Consumption (1-1000). keyturn keeps its rate limits per instance, so the effective limits are the settings times the instance count: with 60 per certificate, 600 per address and 4 instances, one certificate may make up to 240 requests a minute and one address up to 2400 requests a minute. On Dedicated the endpoint runs the plan\'s worker count (one as deployed; this template configures no autoscale), and the same multiplication applies if you scale the plan out.')
@minValue(1)
@maxValue(1000)
param endpointMaximumInstanceCount int = 4

@description('App Service plan SKU used when a hosting plan is Dedicated. B1 is the smallest tier with client certificates.')
param dedicatedSku string = 'B1'

@description('Minimum inbound TLS version of both apps.')
@allowed([
  '1.2'
  '1.3'
])
param minimumTlsVersion string = '1.2'

@description('Key Vaults whose secrets and certificates keyturn rotates: [{ name, resourceGroup }]. Each gets an Event Grid system topic and the rotator\'s Key Vault roles.')
param managedVaults array

@description('Key Vaults the SecretEndpoint serves secrets from: [{ name, resourceGroup }]. The endpoint gets Key Vault Secrets User on each.')
param servedVaults array = []

@description('SecretEndpoint certificate policies that must all accept a device (trusted-thumbprints, chain, entra-device). Empty: the endpoint refuses every request.')
param endpointCertPolicies array = []

@description('SHA-256 thumbprints for the trusted-thumbprints policy.')
param endpointTrustedThumbprints array = []

@description('The SecretEndpoint access policy as JSON text (see docs/access-policy.md). The default grants nothing.')
param endpointAccessPolicy string = '{"version":1,"grants":[]}'

@description('Requests per minute one device certificate may make to one SecretEndpoint instance; the effective limit is this times the instance count (see endpointMaximumInstanceCount).')
param endpointRateLimitPerIdentity int = 60

@description('Requests per minute one source address may make to one SecretEndpoint instance; the effective limit is this times the instance count (see endpointMaximumInstanceCount).')
param endpointRateLimitPerAddress int = 600

@description('Create the Event Grid subscriptions to the rotator\'s KeyVaultEvents function. Event Grid checks that the function exists, so set this on the second deployment, after the package is deployed.')
param subscribeToVaultEvents bool = false

@description('Service Bus tier. Standard is the smallest with sessions, duplicate detection and scheduled messages; private networking forces Premium.')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Name of the Service Bus queue carrying rotation jobs.')
param rotationQueueName string = 'rotations'

@description('Name of the Service Bus queue carrying discovery jobs.')
param discoveryQueueName string = 'discovery'

@description('Table holding the hash-chained audit log.')
param auditTableName string = 'keyturnaudit'

@description('Table holding the inventory discovery writes: one row per credential and per vault, findings per scope and a snapshot per sweep (metadata only, never a secret value).')
param inventoryTableName string = 'keyturninventory'

@description('Six-field NCRONTAB schedule (UTC) of the ExpirySweep timer.')
param sweepSchedule string = '0 0 */6 * * *'

@description('Six-field NCRONTAB schedule (UTC) of the DiscoverySweep timer.')
param discoverySchedule string = '0 30 */6 * * *'

@description('NCRONTAB schedule (UTC) of AlertSweep (KEYTURN_ALERT_SCHEDULE): daily, after the discovery sweep has refreshed the inventory.')
param alertSchedule string = '0 0 8 * * *'

@description('NCRONTAB schedule (UTC) of EvidenceExport (KEYTURN_EVIDENCE_SCHEDULE): monthly, exporting the previous calendar month\'s evidence package into the audit checkpoint container.')
param evidenceSchedule string = '0 0 3 1 * *'

@description('Table of the alert ledger, what was sent to which route (KEYTURN_ALERT_TABLE).')
param alertTableName string = 'keyturnalerts'

@description('Alert routes (KEYTURN_ALERT_ROUTES): name=kind[:secret] separated by \';\', where kind is teams, slack or cloudevents (secret: the alert vault secret holding the webhook URL, never the URL) or mail (sent from alertMailbox). Empty (default): alerts are off, and each AlertSweep run logs that no route is configured.')
param alertRoutes string = ''

@description('The route (one of alertRoutes) carrying alerts no owner or keyturn-owner tag routes, and the digest (KEYTURN_ALERT_DEFAULT_ROUTE). Empty: such alerts are counted as unrouted and no digest is sent.')
param alertDefaultRoute string = ''

@description('Mailbox a mail route sends from through Graph sendMail (KEYTURN_ALERT_MAILBOX); required with a mail route. Mail.Send is not granted by this template: infra/README.md grants it restricted to this one mailbox.')
param alertMailbox string = ''

@description('Days before expiry at which a credential is alerted, comma separated, 0 meaning on expiry (KEYTURN_ALERT_THRESHOLDS).')
param alertThresholds string = '60,30,14,7,1,0'

@description('Days between digests to the default route (KEYTURN_ALERT_DIGEST_DAYS).')
@minValue(1)
@maxValue(366)
param alertDigestDays int = 7

@description('The digest lists what expires within this many days (KEYTURN_ALERT_DIGEST_HORIZON_DAYS).')
@minValue(1)
@maxValue(3650)
param alertDigestHorizonDays int = 30

@description('The Key Vault holding the webhook routes\' URLs as secrets (KEYTURN_ALERT_VAULT): { name, resourceGroup } of a vault using Azure RBAC. Empty (default): keyturn\'s own vault, the one holding the audit checkpoint key.')
param alertVault object = {}

@description('Names of the alert vault secrets holding webhook URLs (the secret of each teams, slack and cloudevents route). The rotator gets Key Vault Secrets User on each of these secrets alone, never on the vault; each must exist before it is listed here.')
param alertWebhookSecrets array = []

@description('keyturn log filter (KEYTURN_LOG_LEVEL).')
param logLevel string = 'info'

// environment() has no Microsoft Graph endpoint (its graph property is the retired Azure AD
// Graph), so the default follows the cloud's name.
@description('Microsoft Graph endpoint (KEYTURN_GRAPH_ENDPOINT). Default: the deployment cloud\'s, https://graph.microsoft.com (AzureCloud), https://graph.microsoft.us (AzureUSGovernment; DoD tenants use https://dod-graph.microsoft.us) or https://microsoftgraph.chinacloudapi.cn (AzureChinaCloud).')
param graphEndpoint string = environment().name == 'AzureUSGovernment' ? 'https://graph.microsoft.us' : (environment().name == 'AzureChinaCloud' ? 'https://microsoftgraph.chinacloudapi.cn' : 'https://graph.microsoft.com')
@description('Days a new credential or generated value is valid, for managed objects without a keyturn-validity-days tag.')
@minValue(1)
@maxValue(3650)
param defaultValidityDays int = 90

@description('Rotate this many days before expiry, for objects without a keyturn-rotate-before-days tag. Less than the validity.')
@minValue(1)
@maxValue(3650)
param defaultRotateBeforeDays int = 30

@description('Days the previous App Registration secret keeps working after a rotation, for objects without a keyturn-overlap-days tag.')
@minValue(0)
@maxValue(3650)
param defaultOverlapDays int = 7

@description('Subscriptions discovery inventories (the rotator\'s KEYTURN_DISCOVERY_SUBSCRIPTIONS): the rotator gets Key Vault Reader on each (never Secrets User), and Graph Application.Read.All with grantGraphPermissions. Empty: no discovery access is granted, and discovery lists every subscription the identity can see.')
param discoverySubscriptions array = []

// The Microsoft Graph Bicep extension deploys in the public cloud only
// (https://learn.microsoft.com/graph/templates/limitations: "Deployments are supported for
// the public cloud only"), so elsewhere the default is false and the README's script grants.
@description('Grant the identities their Microsoft Graph application permissions with the Microsoft Graph Bicep extension. Default: true in the public cloud (AzureCloud) only, the one cloud the extension deploys to. Grants to identities created in the same deployment can fail until Graph sees them (msgraph-bicep-types#193), and a second deployment that grants again fails with "already exists" (msgraph-bicep-types#161): infra/README.md deploys with false and grants in a step of its own. Set false wherever the deploying principal may not grant app roles, and run the script in infra/README.md.')
param grantGraphPermissions bool = environment().name == 'AzureCloud'

@description('Graph permission of the rotator. Application.ReadWrite.OwnedBy (default) limits it to apps whose owner it is; Application.ReadWrite.All is the documented alternative.')
@allowed([
  'Application.ReadWrite.OwnedBy'
  'Application.ReadWrite.All'
])
param rotatorGraphPermission string = 'Application.ReadWrite.OwnedBy'

@description('Route the apps\' outbound traffic through a VNet and reach Key Vault, Storage and Service Bus over private endpoints.')
param enablePrivateNetworking bool = false

@description('Address space of the VNet created when private networking is on.')
param vnetAddressPrefix string = '10.40.0.0/24'

@description('Subnets inside vnetAddressPrefix: the two apps\' integration subnets and the private endpoints\' subnet. Flex Consumption needs at least a /28 per app.')
param subnetPrefixes object = {
  rotator: '10.40.0.0/26'
  endpoint: '10.40.0.64/26'
  privateEndpoints: '10.40.0.128/26'
}

@description('Give both identities Storage Table Data Contributor on the whole storage account so the Functions hosts can record their diagnostic events (tables AzureFunctionsDiagnosticEvents<yyyyMM>, created monthly, so no narrower scope exists). Off by default: that role reaches every table in the account, including any table-backend secrets table kept there, where each identity now holds a role on the audit table alone; without it each host logs one warning at start and stops recording diagnostic events, and nothing else changes.')
param hostDiagnosticEvents bool = false

@description('Blob container of the audit log\'s signed checkpoints, kept under a time-based retention policy that allows protected append writes.')
param auditCheckpointContainerName string = 'audit-checkpoints'

@description('Days each audit checkpoint stays unchangeable and undeletable (the container\'s time-based retention period).')
@minValue(1)
param auditCheckpointRetentionDays int = 365

@description('The compliance exceptions register (KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB) as CONTAINER/NAME in the storage account, such as compliance/exceptions.json: EvidenceExport applies it to every package. The container is created; upload the register there (Storage Blob Data Contributor on that container). Empty (default): no register, nothing is excepted; set, a register that cannot be read or is malformed fails the export, naming the blob.')
param complianceExceptionsBlob string = ''

@description('Tags applied to every resource keyturn creates.')
param tags object = {
  application: 'keyturn'
}

// Storage account names take only lower-case letters and digits (3-24), and the others here
// letters, digits and hyphens, so names are derived from baseName's letters and digits alone,
// lower-cased: 'My-App' gives 'myapp'. Bicep has no pattern decorator to refuse a value, so
// deriving is how every accepted baseName yields valid names.
var baseNameChars = [for i in range(0, length(baseName)): substring(toLower(baseName), i, 1)]
var baseNameKept = join(filter(baseNameChars, c => contains('abcdefghijklmnopqrstuvwxyz0123456789', c)), '')
var base = empty(baseNameKept) ? 'keyturn' : baseNameKept
var suffix = uniqueString(resourceGroup().id, base)
var names = {
  storage: take('st${base}${suffix}', 24)
  serviceBus: 'sb-${base}-${suffix}'
  rotator: 'func-${base}-rotator-${suffix}'
  endpoint: 'func-${base}-endpoint-${suffix}'
  rotatorIdentity: 'id-${base}-rotator'
  endpointIdentity: 'id-${base}-endpoint'
  insights: 'appi-${base}-${suffix}'
  workspace: 'log-${base}-${suffix}'
  vnet: 'vnet-${base}-${suffix}'
  auditVault: take('kv-${suffix}-${base}', 24)
}
var deadLetterContainerName = 'eventgrid-deadletter'
var effectiveServiceBusSku = enablePrivateNetworking ? 'Premium' : serviceBusSku
var vaultUrls = [for v in managedVaults: 'https://${v.name}${environment().suffixes.keyvaultDns}/']
var tableEndpoint = 'https://${names.storage}.table.${environment().suffixes.storage}'
// The endpoint's keyvault backend reads the first served vault.
var secretsVaultUrl = empty(servedVaults) ? '' : 'https://${servedVaults[0].name}${environment().suffixes.keyvaultDns}/'
// X-ARR-ClientCert proves a certificate only where the front end demanded the TLS handshake.
// App Service documents that for clientCertMode Required on Dedicated plans; on Flex
// Consumption the header is believed only after the operator has checked enforcement.
var trustArrClientCert = (endpointHostingPlan == 'Dedicated' || endpointFlexClientCertVerified) ? 'true' : 'false'
// The webhook URLs' vault: the one given, or keyturn's own (created below for the audit
// checkpoint key). The rotator reads only the secrets alertWebhookSecrets names.
var alertVaultName = empty(alertVault) ? names.auditVault : alertVault.name
var alertVaultResourceGroup = empty(alertVault) ? resourceGroup().name : alertVault.resourceGroup
var alertVaultUrl = 'https://${alertVaultName}${environment().suffixes.keyvaultDns}/'

// Each app has its own identity, so the internet-facing endpoint holds only what it needs.
resource rotatorIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.rotatorIdentity
  location: location
  tags: tags
}

resource endpointIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.endpointIdentity
  location: location
  tags: tags
}

module network 'modules/network.bicep' = if (enablePrivateNetworking) {
  name: 'keyturn-network'
  params: {
    name: names.vnet
    location: location
    addressPrefix: vnetAddressPrefix
    subnetPrefixes: subnetPrefixes
    rotatorHostingPlan: rotatorHostingPlan
    endpointHostingPlan: endpointHostingPlan
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'keyturn-storage'
  params: {
    name: names.storage
    location: location
    auditTableName: auditTableName
    inventoryTableName: inventoryTableName
    alertTableName: alertTableName
    deadLetterContainerName: deadLetterContainerName
    auditCheckpointContainerName: auditCheckpointContainerName
    auditCheckpointRetentionDays: auditCheckpointRetentionDays
    exceptionsContainerName: empty(complianceExceptionsBlob) ? '' : first(split(complianceExceptionsBlob, '/'))
    deploymentContainerNames: [
      'deploy-rotator'
      'deploy-endpoint'
    ]
    rotatorPrincipalId: rotatorIdentity.properties.principalId
    endpointPrincipalId: endpointIdentity.properties.principalId
    hostDiagnosticEvents: hostDiagnosticEvents
    enablePrivateNetworking: enablePrivateNetworking
    privateEndpointSubnetId: enablePrivateNetworking ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneIds: enablePrivateNetworking ? network.outputs.storageDnsZoneIds : {}
    tags: tags
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'keyturn-servicebus'
  params: {
    name: names.serviceBus
    location: location
    sku: effectiveServiceBusSku
    queueName: rotationQueueName
    discoveryQueueName: discoveryQueueName
    rotatorPrincipalId: rotatorIdentity.properties.principalId
    enablePrivateNetworking: enablePrivateNetworking
    privateEndpointSubnetId: enablePrivateNetworking ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneId: enablePrivateNetworking ? network.outputs.serviceBusDnsZoneId : ''
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'keyturn-monitoring'
  params: {
    insightsName: names.insights
    workspaceName: names.workspace
    location: location
    publisherPrincipalIds: [
      rotatorIdentity.properties.principalId
      endpointIdentity.properties.principalId
    ]
    tags: tags
  }
}

// App settings, one `{ name: ..., value: ... }` entry per line: tests/api/infra.rs reads these
// lines and checks every name against keyturn's settings list (keyturn::config::SETTINGS).
// Settings the Functions platform itself needs (storage identity, Application Insights,
// runtime) are added by modules/function-app.bicep.
var rotatorAppSettings = [
  { name: 'KEYTURN_LOG_LEVEL', value: logLevel }
  { name: 'KEYTURN_CREDENTIAL', value: 'managed-identity' }
  { name: 'AZURE_CLIENT_ID', value: rotatorIdentity.properties.clientId }
  { name: 'AZURE_TENANT_ID', value: tenant().tenantId }
  { name: 'KEYTURN_AUTHORITY_HOST', value: environment().authentication.loginEndpoint }
  { name: 'KEYTURN_GRAPH_ENDPOINT', value: graphEndpoint }
  { name: 'KEYTURN_VAULTS', value: join(vaultUrls, ',') }
  { name: 'KEYTURN_SWEEP_SCHEDULE', value: sweepSchedule }
  { name: 'KEYTURN_ROTATION_QUEUE', value: rotationQueueName }
  { name: 'KEYTURN_DISCOVERY_SCHEDULE', value: discoverySchedule }
  { name: 'KEYTURN_DISCOVERY_QUEUE', value: discoveryQueueName }
  { name: 'KEYTURN_DISCOVERY_SUBSCRIPTIONS', value: join(discoverySubscriptions, ',') }
  { name: 'KEYTURN_ALERT_SCHEDULE', value: alertSchedule }
  { name: 'KEYTURN_ALERT_TABLE', value: alertTableName }
  { name: 'KEYTURN_EVIDENCE_SCHEDULE', value: evidenceSchedule }
  { name: 'KEYTURN_ALERT_THRESHOLDS', value: alertThresholds }
  { name: 'KEYTURN_ALERT_ROUTES', value: alertRoutes }
  { name: 'KEYTURN_ALERT_DEFAULT_ROUTE', value: alertDefaultRoute }
  { name: 'KEYTURN_ALERT_MAILBOX', value: alertMailbox }
  { name: 'KEYTURN_ALERT_VAULT', value: alertVaultUrl }
  { name: 'KEYTURN_ALERT_DIGEST_DAYS', value: string(alertDigestDays) }
  { name: 'KEYTURN_ALERT_DIGEST_HORIZON_DAYS', value: string(alertDigestHorizonDays) }
  { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: serviceBus.outputs.fullyQualifiedNamespace }
  { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
  { name: 'ServiceBusConnection__clientId', value: rotatorIdentity.properties.clientId }
  { name: 'KEYTURN_AUDIT_STORE', value: 'table' }
  { name: 'KEYTURN_AUDIT_TABLE', value: auditTableName }
  { name: 'KEYTURN_INVENTORY_TABLE', value: inventoryTableName }
  { name: 'KEYTURN_TABLE_ENDPOINT', value: tableEndpoint }
  { name: 'KEYTURN_AUDIT_CHECKPOINT_ENDPOINT', value: storage.outputs.blobEndpoint }
  { name: 'KEYTURN_AUDIT_CHECKPOINT_CONTAINER', value: storage.outputs.auditCheckpointContainer }
  { name: 'KEYTURN_AUDIT_SIGNING_KEY', value: auditSigning.outputs.keyUriWithVersion }
  { name: 'KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB', value: complianceExceptionsBlob }
  { name: 'KEYTURN_DEFAULT_VALIDITY_DAYS', value: string(defaultValidityDays) }
  { name: 'KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS', value: string(defaultRotateBeforeDays) }
  { name: 'KEYTURN_DEFAULT_OVERLAP_DAYS', value: string(defaultOverlapDays) }
  { name: 'AzureWebJobs.SecretEndpoint.Disabled', value: 'true' }
]

var endpointAppSettings = [
  { name: 'KEYTURN_LOG_LEVEL', value: logLevel }
  { name: 'KEYTURN_CREDENTIAL', value: 'managed-identity' }
  { name: 'AZURE_CLIENT_ID', value: endpointIdentity.properties.clientId }
  { name: 'KEYTURN_GRAPH_ENDPOINT', value: graphEndpoint }
  // The host resolves %KEYTURN_SWEEP_SCHEDULE%, %KEYTURN_ROTATION_QUEUE%, the discovery
  // ones, %KEYTURN_ALERT_SCHEDULE% and %KEYTURN_EVIDENCE_SCHEDULE% in every function.json
  // it indexes, disabled functions included, so the endpoint carries them too.
  { name: 'KEYTURN_SWEEP_SCHEDULE', value: sweepSchedule }
  { name: 'KEYTURN_ROTATION_QUEUE', value: rotationQueueName }
  { name: 'KEYTURN_DISCOVERY_SCHEDULE', value: discoverySchedule }
  { name: 'KEYTURN_DISCOVERY_QUEUE', value: discoveryQueueName }
  { name: 'KEYTURN_ALERT_SCHEDULE', value: alertSchedule }
  { name: 'KEYTURN_EVIDENCE_SCHEDULE', value: evidenceSchedule }
  { name: 'KEYTURN_AUDIT_STORE', value: 'table' }
  { name: 'KEYTURN_AUDIT_TABLE', value: auditTableName }
  { name: 'KEYTURN_TABLE_ENDPOINT', value: tableEndpoint }
  { name: 'KEYTURN_AUDIT_CHECKPOINT_ENDPOINT', value: storage.outputs.blobEndpoint }
  { name: 'KEYTURN_AUDIT_CHECKPOINT_CONTAINER', value: storage.outputs.auditCheckpointContainer }
  { name: 'KEYTURN_AUDIT_SIGNING_KEY', value: auditSigning.outputs.keyUriWithVersion }
  // Believed on Dedicated, or on Flex once enforcement is verified (trustArrClientCert), and
  // then only while the endpoint's own check of its site (read from this cloud's Resource
  // Manager with Reader on the site) finds client certificates required.
  { name: 'KEYTURN_TRUST_ARR_CLIENT_CERT', value: trustArrClientCert }
  { name: 'KEYTURN_RESOURCE_MANAGER_ENDPOINT', value: environment().resourceManager }
  { name: 'KEYTURN_CERT_POLICIES', value: join(endpointCertPolicies, ',') }
  { name: 'KEYTURN_TRUSTED_THUMBPRINTS', value: join(endpointTrustedThumbprints, ',') }
  { name: 'KEYTURN_ACCESS_POLICY', value: endpointAccessPolicy }
  { name: 'KEYTURN_SECRETS_VAULT', value: secretsVaultUrl }
  { name: 'KEYTURN_RATE_LIMIT_PER_IDENTITY', value: string(endpointRateLimitPerIdentity) }
  { name: 'KEYTURN_RATE_LIMIT_PER_ADDRESS', value: string(endpointRateLimitPerAddress) }
  { name: 'AzureWebJobs.KeyVaultEvents.Disabled', value: 'true' }
  { name: 'AzureWebJobs.ExpirySweep.Disabled', value: 'true' }
  { name: 'AzureWebJobs.RotationWorker.Disabled', value: 'true' }
  { name: 'AzureWebJobs.DiscoverySweep.Disabled', value: 'true' }
  { name: 'AzureWebJobs.DiscoveryWorker.Disabled', value: 'true' }
  { name: 'AzureWebJobs.AlertSweep.Disabled', value: 'true' }
  { name: 'AzureWebJobs.EvidenceExport.Disabled', value: 'true' }
]

module rotatorApp 'modules/function-app.bicep' = {
  name: 'keyturn-rotator-app'
  params: {
    name: names.rotator
    location: location
    hostingPlan: rotatorHostingPlan
    dedicatedSku: dedicatedSku
    identityId: rotatorIdentity.id
    identityClientId: rotatorIdentity.properties.clientId
    identityPrincipalId: rotatorIdentity.properties.principalId
    readsOwnSite: false
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: 'deploy-rotator'
    insightsConnectionString: monitoring.outputs.connectionString
    minimumTlsVersion: minimumTlsVersion
    // Event Grid delivers to KeyVaultEvents without a client certificate.
    requireClientCertificate: false
    // Rotations are bounded by Graph and Key Vault write limits long before 40 instances.
    maximumInstanceCount: 40
    appSettings: rotatorAppSettings
    integrationSubnetId: enablePrivateNetworking ? network.outputs.rotatorSubnetId : ''
    tags: tags
  }
}

module endpointApp 'modules/function-app.bicep' = {
  name: 'keyturn-endpoint-app'
  params: {
    name: names.endpoint
    location: location
    hostingPlan: endpointHostingPlan
    dedicatedSku: dedicatedSku
    identityId: endpointIdentity.id
    identityClientId: endpointIdentity.properties.clientId
    identityPrincipalId: endpointIdentity.properties.principalId
    // Reader on its own site: the endpoint's start-up and periodic check of its front end.
    readsOwnSite: true
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: 'deploy-endpoint'
    insightsConnectionString: monitoring.outputs.connectionString
    minimumTlsVersion: minimumTlsVersion
    requireClientCertificate: true
    maximumInstanceCount: endpointMaximumInstanceCount
    appSettings: endpointAppSettings
    integrationSubnetId: enablePrivateNetworking ? network.outputs.endpointSubnetId : ''
    tags: tags
  }
}

// The audit checkpoints' signing key, in a vault of keyturn's own: both apps write audit
// entries, so both may sign with it (and nothing else).
module auditSigning 'modules/audit-signing.bicep' = {
  name: 'keyturn-audit-signing'
  params: {
    name: names.auditVault
    location: location
    signerPrincipalIds: [
      rotatorIdentity.properties.principalId
      endpointIdentity.properties.principalId
    ]
    enablePrivateNetworking: enablePrivateNetworking
    tags: tags
  }
}

module auditVaultPrivateEndpoint 'modules/vault-private-endpoint.bicep' = if (enablePrivateNetworking) {
  name: 'keyturn-audit-vault-pe'
  params: {
    vaultId: auditSigning.outputs.vaultId
    name: 'pe-${names.auditVault}'
    location: location
    subnetId: enablePrivateNetworking ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneId: enablePrivateNetworking ? network.outputs.vaultDnsZoneId : ''
    tags: tags
  }
}

module rotatorVaultAccess 'modules/vault-access.bicep' = [for (v, i) in managedVaults: {
  name: 'keyturn-rotator-vault-${i}'
  scope: resourceGroup(v.resourceGroup)
  params: {
    vaultName: v.name
    principalId: rotatorIdentity.properties.principalId
    access: 'rotate'
  }
}]

module endpointVaultAccess 'modules/vault-access.bicep' = [for (v, i) in servedVaults: {
  name: 'keyturn-endpoint-vault-${i}'
  scope: resourceGroup(v.resourceGroup)
  params: {
    vaultName: v.name
    principalId: endpointIdentity.properties.principalId
    access: 'serve'
  }
}]

module vaultTopics 'modules/vault-topic.bicep' = [for (v, i) in managedVaults: {
  name: 'keyturn-vault-topic-${i}'
  scope: resourceGroup(v.resourceGroup)
  params: {
    vaultName: v.name
    tags: tags
  }
}]

// Event Grid writes dead letters with the topic's own identity, because the storage account
// accepts no shared key.
module deadLetterAccess 'modules/deadletter-access.bicep' = [for (v, i) in managedVaults: {
  name: 'keyturn-deadletter-access-${i}'
  params: {
    storageAccountName: storage.outputs.name
    containerName: deadLetterContainerName
    principalId: vaultTopics[i].outputs.principalId
  }
}]

module vaultSubscriptions 'modules/vault-subscription.bicep' = [for (v, i) in managedVaults: if (subscribeToVaultEvents) {
  name: 'keyturn-vault-subscription-${i}'
  scope: resourceGroup(v.resourceGroup)
  params: {
    topicName: vaultTopics[i].outputs.name
    rotatorAppId: rotatorApp.outputs.id
    deadLetterStorageId: storage.outputs.id
    deadLetterContainerName: deadLetterContainerName
  }
  dependsOn: [
    deadLetterAccess[i]
  ]
}]

module vaultPrivateEndpoints 'modules/vault-private-endpoint.bicep' = [for (v, i) in union(managedVaults, servedVaults): if (enablePrivateNetworking) {
  name: 'keyturn-vault-pe-${i}'
  params: {
    vaultId: resourceId(v.resourceGroup, 'Microsoft.KeyVault/vaults', v.name)
    name: 'pe-${v.name}'
    location: location
    subnetId: enablePrivateNetworking ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneId: enablePrivateNetworking ? network.outputs.vaultDnsZoneId : ''
    tags: tags
  }
}]

// The alert routes' webhook URLs: Key Vault Secrets User on each named secret alone, for the
// rotator (which runs AlertSweep). In keyturn's own vault by default, so after that vault.
module alertSecretAccess 'modules/alert-secret-access.bicep' = if (!empty(alertWebhookSecrets)) {
  name: 'keyturn-alert-secrets'
  scope: resourceGroup(alertVaultResourceGroup)
  params: {
    vaultName: alertVaultName
    principalId: rotatorIdentity.properties.principalId
    secretNames: alertWebhookSecrets
  }
  dependsOn: [
    auditSigning
  ]
}

module discoveryAccess 'modules/discovery-access.bicep' = [for (subscriptionId, i) in discoverySubscriptions: {
  name: 'keyturn-discovery-${i}'
  scope: subscription(subscriptionId)
  params: {
    principalId: rotatorIdentity.properties.principalId
  }
}]

// Microsoft Graph application permissions. This module is the one file Checkov cannot parse
// (it uses the `extension` keyword); see infra/README.md. infra/README.md deploys with
// grantGraphPermissions=false and grants in a step of its own (msgraph-bicep-types#193, #161).
module graphPermissions 'modules/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'keyturn-graph-permissions'
  params: {
    rotatorPrincipalId: rotatorIdentity.properties.principalId
    endpointPrincipalId: endpointIdentity.properties.principalId
    rotatorPermission: rotatorGraphPermission
    discovery: !empty(discoverySubscriptions)
  }
}

@description('URL of the SecretEndpoint function (route secrets/{name}).')
output endpointUrl string = 'https://${endpointApp.outputs.defaultHostName}/api/secrets/'

@description('Client id of the rotator\'s user-assigned identity.')
output rotatorClientId string = rotatorIdentity.properties.clientId

@description('Client id of the endpoint\'s user-assigned identity.')
output endpointClientId string = endpointIdentity.properties.clientId

@description('Object (principal) id of the rotator\'s identity: make it owner of every app registration it rotates.')
output rotatorPrincipalId string = rotatorIdentity.properties.principalId

@description('Object (principal) id of the endpoint\'s identity, for the Graph permission script.')
output endpointPrincipalId string = endpointIdentity.properties.principalId

@description('Whether the endpoint believes X-ARR-ClientCert (KEYTURN_TRUST_ARR_CLIENT_CERT).')
output endpointTrustsArrClientCert string = trustArrClientCert

@description('Service Bus queue carrying rotation jobs.')
output rotationQueueName string = serviceBus.outputs.queueName

@description('Service Bus queue carrying discovery jobs.')
output discoveryQueueName string = serviceBus.outputs.discoveryQueueName

@description('Versioned URL of the Key Vault key that signs the audit checkpoints: `az keyvault key show --id` it to hand an auditor the public key.')
output auditSigningKeyUrl string = auditSigning.outputs.keyUriWithVersion

@description('Name of the vault AlertSweep reads the webhook URLs from: store each as a secret there and list its name in alertWebhookSecrets.')
output alertVaultName string = alertVaultName

output rotatorAppName string = rotatorApp.outputs.name
output endpointAppName string = endpointApp.outputs.name

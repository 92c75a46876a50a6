// Storage for the Functions host, the audit log table, Event Grid dead letters and the Flex
// Consumption deployment packages. No account key is usable: every caller uses an identity.

param name string
param location string
param auditTableName string
@description('Table of the inventory discovery writes (credentials, vaults, findings, sweep snapshots).')
param inventoryTableName string
@description('Table of the alert ledger: which alert and digest went to which route, so each goes out once.')
param alertTableName string
param deadLetterContainerName string
param deploymentContainerNames array
@description('Container of the audit log\'s signed checkpoints (append blobs under a time-based retention policy).')
param auditCheckpointContainerName string
@description('Days each audit checkpoint blob is kept unchangeable and undeletable.')
@minValue(1)
param auditCheckpointRetentionDays int
@description('Container of the compliance exceptions register EvidenceExport reads; empty: none is created.')
param exceptionsContainerName string
param rotatorPrincipalId string
param endpointPrincipalId string
@description('Grant both identities Storage Table Data Contributor on the account, for the Functions hosts\' diagnostic events.')
param hostDiagnosticEvents bool
param enablePrivateNetworking bool
param privateEndpointSubnetId string
@description('Private DNS zone ids by storage sub-resource: { blob, table }.')
param privateDnsZoneIds object
param tags object

// Built-in role definition ids (stable across tenants); the README lists them.
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}
// Only the services keyturn and its host use get a private endpoint.
var privateSubResources = [
  'blob'
  'table'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Deny is set with enablePrivateNetworking; without a VNet the Functions host reaches its storage publicly, and only Entra ID tokens are accepted (shared keys are off).
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  // Geo-redundant: the audit chain outlives the loss of a region.
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: enablePrivateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      // Event Grid (dead letters, with its own identity) is a trusted Azure service.
      bypass: 'AzureServices'
      defaultAction: enablePrivateNetworking ? 'Deny' : 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The audit log's anchors: signed checkpoints of each writer's chain head, appended to
// append blobs. A time-based retention policy that allows protected append writes lets
// any writer create a blob and append blocks, while nobody, whatever data role they hold
// (both identities are Blob Data Owner for the Functions host), can change or delete a
// written block until the retention period ends. Removing the policy is a control-plane
// action (immutabilityPolicies/delete) neither identity holds; lock it after deploying to
// keep even subscription owners from shortening it (infra/README.md).
resource auditCheckpointContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: auditCheckpointContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource auditCheckpointRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: auditCheckpointContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditCheckpointRetentionDays
    allowProtectedAppendWrites: true
  }
}

// The compliance exceptions register (KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB), which operators
// keep and EvidenceExport only reads: an ordinary container, so a corrected register
// replaces the old one. The rotator reads it through the Blob Data Owner role on the
// account that its Functions host requires (below); a narrower read role on this container
// would narrow nothing while that holds, so none is added. Operators who keep the register
// need Storage Blob Data Contributor on this container alone.
resource exceptionsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (!empty(exceptionsContainerName)) {
  parent: blobService
  name: empty(exceptionsContainerName) ? 'unused' : exceptionsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in deploymentContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource auditTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: auditTableName
}

// The inventory: metadata of every credential discovery finds, never a value. Its own table,
// so that the identity that keeps it holds no role on the audit log through it and readers
// of the inventory (Storage Table Data Reader on this table) read nothing else.
resource inventoryTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: inventoryTableName
}

// The alert ledger: one row per alert or digest delivered (credential, threshold, route,
// time), never a value or a webhook URL. AlertSweep runs in the rotator app.
resource alertTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: alertTableName
}

// The rotation leases that fence instances off each other's objects (one row per object, a
// growing fencing token). The name is fixed in keyturn (startup's LEASE_TABLE).
resource leaseTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'keyturnleases'
}

// The Functions host keeps keys, leases and timer state in blob containers it creates itself,
// so its role is on the account: Blob Data Owner is what identity-based AzureWebJobsStorage
// requires. Neither app uses queue-backed triggers, so no queue role is granted.
resource rotatorHostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, rotatorPrincipalId, roles.blobDataOwner)
  scope: account
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
  }
}

resource endpointHostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, endpointPrincipalId, roles.blobDataOwner)
  scope: account
  properties: {
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
  }
}

// Table roles are scoped to the one table, the narrowest scope Azure RBAC offers for tables.
resource rotatorTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(auditTable.id, rotatorPrincipalId, roles.tableDataContributor)
  scope: auditTable
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// Discovery runs in the rotator app (timer and Service Bus jobs), so the rotator keeps the
// inventory: it upserts rows and deletes those of credentials gone since the last sweep,
// which needs Contributor. The endpoint never touches the inventory.
resource rotatorInventoryTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(inventoryTable.id, rotatorPrincipalId, roles.tableDataContributor)
  scope: inventoryTable
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// AlertSweep reads and inserts ledger rows and deletes old ones (and a digest claim whose
// sending failed): Contributor on this table alone. The endpoint never touches it.
resource rotatorAlertTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertTable.id, rotatorPrincipalId, roles.tableDataContributor)
  scope: alertTable
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// Only the rotator takes rotation leases; the endpoint never touches them.
resource rotatorLeaseTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(leaseTable.id, rotatorPrincipalId, roles.tableDataContributor)
  scope: leaseTable
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// The endpoint audits every grant and refusal, so it appends to the audit table: appends
// are inserts, which need Contributor (no Table role grants insert without update).
// Table Data Reader is what the endpoint gets on a table that serves secrets.
resource endpointTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(auditTable.id, endpointPrincipalId, roles.tableDataContributor)
  scope: auditTable
  properties: {
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// The Functions host records diagnostic events in tables it creates each month
// (AzureFunctionsDiagnosticEvents<yyyyMM>), so only an account-wide role covers them. Without
// it the host logs one warning ("...make sure it has been assigned the 'Storage Table Data
// Contributor' role", azure-functions-host DiagnosticEventTableStorageRepository) and stops
// recording them; keyturn itself is unaffected. Off unless main.bicep's hostDiagnosticEvents
// asks for it, because the account-wide role reaches every table in the account.
resource hostDiagnosticTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in [
  rotatorPrincipalId
  endpointPrincipalId
]: if (hostDiagnosticEvents) {
  name: guid(account.id, principalId, roles.tableDataContributor)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for sub in privateSubResources: if (enablePrivateNetworking) {
  name: 'pe-${name}-${sub}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'pe-${name}-${sub}'
        properties: {
          privateLinkServiceId: account.id
          groupIds: [
            sub
          ]
        }
      }
    ]
  }
}]

resource privateDnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (sub, i) in privateSubResources: if (enablePrivateNetworking) {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: sub
        properties: {
          privateDnsZoneId: enablePrivateNetworking ? privateDnsZoneIds[sub] : ''
        }
      }
    ]
  }
}]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output tableEndpoint string = account.properties.primaryEndpoints.table
output auditCheckpointContainer string = auditCheckpointContainer.name

// The Service Bus namespace, the session-enabled queue that carries rotation jobs and the one
// that carries discovery jobs. Local (SAS) authentication is off: only Entra identities can
// send or receive.

param name string
param location string
@allowed([
  'Standard'
  'Premium'
])
param sku string
param queueName string
param discoveryQueueName string
param rotatorPrincipalId string
param enablePrivateNetworking bool
param privateEndpointSubnetId string
param privateDnsZoneId string
param tags object

// Azure Service Bus Data Owner (built-in, the same id in every tenant).
var dataOwner = '090c5cfd-751d-490a-894a-3ce6f1109419'

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
    // Messaging units on Premium; Standard ignores it.
    capacity: 1
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    // Private endpoints exist only on Premium, which private networking selects.
    publicNetworkAccess: enablePrivateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: queueName
  properties: {
    // One session per secret: jobs for the same secret run one at a time, in order.
    requiresSession: true
    // Job ids are derived from the secret version and action, so a job enqueued twice (Event
    // Grid redelivers at least once, for up to the 24-hour event time-to-live set on the
    // subscription, and ExpirySweep re-plans every six hours) is dropped when the window covers
    // that horizon. One day covers Event Grid's retry horizon; longer would only cost memory.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'P1D'
    // Five minutes is Service Bus's maximum lock; a rotation (Graph call, Key Vault write,
    // token proof) takes seconds, and the host renews the lock while the handler runs.
    lockDuration: 'PT5M'
    // Transient failures retry through redelivery; a job that fails five times is parked in
    // the dead-letter queue for an operator, and ExpirySweep plans it again later.
    maxDeliveryCount: 5
    // A job older than two weeks is stale (the sweep will have planned a fresh one); keep it
    // for inspection instead of dropping it.
    defaultMessageTimeToLive: 'P14D'
    deadLetteringOnMessageExpiration: true
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// Discovery's jobs (DiscoverySweep queues them, DiscoveryWorker runs them and queues the
// ones each fans out to) under the rotation queue's policy: the same lock, delivery count and
// time-to-live, so both queues behave as the code and local mode expect. Each job's id is
// derived from its sweep and scope, so duplicate detection drops a job queued twice.
resource discoveryQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: discoveryQueueName
  properties: {
    requiresSession: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'P1D'
    lockDuration: 'PT5M'
    maxDeliveryCount: 5
    defaultMessageTimeToLive: 'P14D'
    deadLetteringOnMessageExpiration: true
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// Data Owner on the queue alone, not the namespace. It covers sending (KeyVaultEvents,
// ExpirySweep) and receiving (RotationWorker's trigger), and it carries the Manage right the
// Functions scale controller needs to read the queue's length: with Receiver and Sender only,
// "scaling isn't as accurate because the queue length can't be used to inform scaling
// decisions" (Azure Functions, event-driven scaling), which on Flex Consumption means a
// rotator scaled to zero may not wake for scheduled retries until its timer or an event does.
// Functions lists Data Owner among the roles for the Service Bus trigger.
// What Data Owner adds at this scope: control-plane rights on this one queue (its Actions are
// Microsoft.ServiceBus/*), so the rotator could change or delete its own queue. It cannot
// touch other entities or the namespace, and a SAS rule it might add to the queue is useless:
// local (SAS) authentication is disabled on the namespace, a setting outside this scope.
resource owner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, rotatorPrincipalId, dataOwner)
  scope: queue
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataOwner)
  }
}

// The same on the discovery queue: the rotator sends (DiscoverySweep, DiscoveryWorker's
// follow-ups) and receives (DiscoveryWorker's trigger), and the scale controller reads the
// queue's length.
resource discoveryOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(discoveryQueue.id, rotatorPrincipalId, dataOwner)
  scope: discoveryQueue
  properties: {
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataOwner)
  }
}

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = if (enablePrivateNetworking) {
  name: 'pe-${name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'pe-${name}'
        properties: {
          privateLinkServiceId: namespace.id
          groupIds: [
            'namespace'
          ]
        }
      }
    ]
  }
}

resource privateDnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = if (enablePrivateNetworking) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'servicebus'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

output queueName string = queue.name
output discoveryQueueName string = discoveryQueue.name
// The host name from the namespace's own endpoint (https://<name>.servicebus.<cloud suffix>:443/),
// so sovereign clouds get their suffix.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')

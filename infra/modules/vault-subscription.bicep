// Delivers a vault's expiry events to the rotator's KeyVaultEvents function, with retries and
// identity-based dead-lettering.

param topicName string
@description('Resource id of the rotator Function App.')
param rotatorAppId string
param deadLetterStorageId string
param deadLetterContainerName string

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'keyturn-rotation-triggers'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      // Event Grid calls the function through the Functions host with a key it obtains itself,
      // so no secret is configured here.
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${rotatorAppId}/functions/KeyVaultEvents'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    // The event types KeyVaultEvents turns into rotation jobs; tests/api/infra.rs checks this
    // list against keyturn::events::keyvault::KeyVaultEventKind::ROTATION_TRIGGERS.
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
        'Microsoft.KeyVault.CertificateNearExpiry'
        'Microsoft.KeyVault.CertificateExpired'
      ]
    }
    // Event Grid's maximum of 30 attempts over a day: a NearExpiry event is raised 30 days
    // ahead, so a day of retries loses nothing, and ExpirySweep covers anything dead-lettered.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

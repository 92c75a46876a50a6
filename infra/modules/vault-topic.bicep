// The Event Grid system topic of one managed Key Vault, in the vault's resource group and
// region (a system topic must share its source's region).

param vaultName string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-keyturn-${vaultName}'
  location: vault.location
  tags: tags
  // The topic's identity writes dead letters, since the storage account takes no keys.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId

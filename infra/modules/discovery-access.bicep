// Discovery's read access to one subscription: Key Vault Reader, deployed at subscription
// scope so it covers every vault there (listed through Resource Manager) and each vault's
// secrets, certificates and keys as metadata. Key Vault Reader cannot read a secret value or
// key material (its data actions are `vaults/*/read` and `secrets/readMetadata/action`), so
// discovery never holds the right to read one: a stronger guarantee than never calling it.
// Never Key Vault Secrets User here. A vault still in access-policy mode ignores this role
// and needs an access policy with list permissions only; the inventory flags such vaults.

targetScope = 'subscription'

param principalId string

// Key Vault Reader.
var keyVaultReader = '21090545-7ca7-4776-b22c-e363652d74d2'

resource discoveryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, keyVaultReader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultReader)
  }
}

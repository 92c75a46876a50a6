// The rotator's read access to the alert routes' webhook URLs: Key Vault Secrets User on each
// named secret of the alert vault, and on nothing else in it. Deployed in the vault's resource
// group. A webhook URL authorises posting to its channel, so AlertSweep reads exactly the
// secrets its routes name; an assignment on the vault would let the rotator read every other
// secret there too. Key Vault evaluates role assignments at secret scope only on vaults using
// the Azure RBAC permission model, and each secret must exist before it is named here.

@description('Name of the vault holding the webhook URLs.')
param vaultName string
@description('Object id of the identity that runs AlertSweep (the rotator).')
param principalId string
@description('Names of the secrets holding the webhook routes\' URLs.')
param secretNames array

// Key Vault Secrets User: read a secret's value (data actions secrets/getSecret/action and
// secrets/readMetadata/action), nothing else.
var secretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for name in secretNames: {
  parent: vault
  name: name
}]

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in secretNames: {
  name: guid(secrets[i].id, principalId, secretsUser)
  scope: secrets[i]
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
}]

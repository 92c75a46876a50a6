// Key Vault data-plane roles for one keyturn identity on one vault, deployed in the vault's
// resource group. The vault itself is the customer's and must use Azure RBAC authorization.

param vaultName string
param principalId string
@description('rotate: Secrets Officer and Certificates Officer (the rotator); serve: Secrets User (the endpoint).')
@allowed([
  'rotate'
  'serve'
])
param access string

var roles = {
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  certificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}
// A vault is the narrowest scope these roles can be assigned at from a template that does
// not know the secret names in advance.
var roleIds = access == 'rotate' ? [
  roles.secretsOfficer
  roles.certificatesOfficer
] : [
  roles.secretsUser
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in roleIds: {
  name: guid(vault.id, principalId, roleId)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}]

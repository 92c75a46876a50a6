// The key that signs the audit log's checkpoints: an EC P-256 key in a vault of its own,
// usable to sign and verify only, and a custom role with exactly the two data actions a
// writer needs (sign, and read the public key), assigned on that one key to the
// identities that write audit entries. Neither identity can export, change, rotate or
// delete the key, nor read any other key, secret or certificate in the vault.

param name string
param location string
@description('Principal ids of the identities that write audit entries.')
param signerPrincipalIds array
param enablePrivateNetworking bool
param tags object

@description('Name of the checkpoint key in the vault.')
param keyName string = 'audit-checkpoints'

// The only data actions the checkpoint signer uses: Key Vault's sign operation, and
// get-key for the public half (`keyturn audit verify`, and a writer's own checks).
var signerDataActions = [
  'Microsoft.KeyVault/vaults/keys/sign/action'
  'Microsoft.KeyVault/vaults/keys/read'
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Without enablePrivateNetworking the apps reach the vault from Flex Consumption's shared outbound addresses, which no firewall rule can name; with it, the vault denies every network but its private endpoint. Only Entra tokens holding the signer role on the key can use it.
  // checkov:skip=CKV_AZURE_189: As CKV_AZURE_109: public network access is disabled with enablePrivateNetworking and needed without it.
  // checkov:skip=CKV2_AZURE_32: A private endpoint is created with enablePrivateNetworking (modules/vault-private-endpoint.bicep, from main.bicep).
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    // Premium: the key is HSM-protected (EC-HSM).
    sku: {
      family: 'A'
      name: 'premium'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: enablePrivateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'None'
      defaultAction: enablePrivateNetworking ? 'Deny' : 'Allow'
    }
  }
}

resource key 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  // checkov:skip=CKV_AZURE_40: The checkpoint key must keep signing for as long as keyturn runs: Key Vault refuses sign with an expired key, which would leave every later batch unanchored. Rotating it is a new version whose URL the apps are given (infra/README.md).
  parent: vault
  name: keyName
  tags: tags
  properties: {
    kty: 'EC-HSM'
    curveName: 'P-256'
    keyOps: [
      'sign'
      'verify'
    ]
    attributes: {
      enabled: true
      exportable: false
    }
  }
}

resource signerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'keyturn-audit-checkpoint-signer')
  properties: {
    roleName: 'keyturn audit checkpoint signer (${resourceGroup().name})'
    description: 'Sign with a Key Vault key and read its public half; nothing else.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: signerDataActions
        notDataActions: []
      }
    ]
  }
}

resource signerAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in signerPrincipalIds: {
  name: guid(key.id, principalId, signerRole.id)
  scope: key
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: signerRole.id
  }
}]

output vaultId string = vault.id
output vaultName string = vault.name
@description('The key\'s versioned URL: what the apps sign with (KEYTURN_AUDIT_SIGNING_KEY).')
output keyUriWithVersion string = key.properties.keyUriWithVersion

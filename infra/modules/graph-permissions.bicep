// Microsoft Graph application permissions of keyturn's two identities, through the Microsoft
// Graph Bicep extension. This is the only keyturn Bicep file Checkov 3.3.30 cannot parse (its
// parser does not know the `extension` keyword); .ci/checkov allows exactly this file.
// Where a tenant does not let the deploying principal grant app roles, deploy with
// grantGraphPermissions=false and run the script in infra/README.md instead.

extension microsoftGraphV1

@description('Object id of the rotator\'s user-assigned identity.')
param rotatorPrincipalId string
@description('Object id of the endpoint\'s user-assigned identity.')
param endpointPrincipalId string
@allowed([
  'Application.ReadWrite.OwnedBy'
  'Application.ReadWrite.All'
])
param rotatorPermission string = 'Application.ReadWrite.OwnedBy'
@description('Grant Application.Read.All for discovery (every application\'s and service principal\'s credentials, as metadata).')
param discovery bool = false

// Microsoft Graph's well-known application id, the same in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Application.ReadWrite.OwnedBy: add and remove credentials on the app registrations whose
// owner the rotator is, and on no others.
resource rotatorGraph 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: rotatorPrincipalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == rotatorPermission)[0].id
}

// Policy.Read.All: before adding a credential the rotator reads the tenant's default app
// management policy and the application's own, to cap the credential's lifetime to what they
// allow and to fail clearly where they forbid passwords. Microsoft documents Policy.Read.All
// as the least privileged application permission for both reads.
resource rotatorPolicyRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: rotatorPrincipalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == 'Policy.Read.All')[0].id
}

// Application.Read.All: discovery lists every application and service principal with its
// password and key credentials (never a secret: Graph does not return one after creation)
// and owners. Read only; OwnedBy would see only the apps the rotator owns.
resource rotatorDiscovery 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (discovery) {
  principalId: rotatorPrincipalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == 'Application.Read.All')[0].id
}

// Device.Read.All: the endpoint looks up the device a client certificate belongs to.
resource endpointGraph 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: endpointPrincipalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, role => role.value == 'Device.Read.All')[0].id
}

using './main.bicep'

// An example: replace the vault names and resource groups with your own.
param baseName = 'keyturn'

param managedVaults = [
  {
    name: 'kv-contoso-apps'
    resourceGroup: 'rg-contoso-secrets'
  }
]

param servedVaults = [
  {
    name: 'kv-contoso-devices'
    resourceGroup: 'rg-contoso-secrets'
  }
]

// First deployment: false. After `keyturn package` and the zip deployment, deploy again with
// true so Event Grid can find the KeyVaultEvents function.
param subscribeToVaultEvents = false

param rotatorHostingPlan = 'FlexConsumption'
param endpointHostingPlan = 'FlexConsumption'
param serviceBusSku = 'Standard'
param sweepSchedule = '0 0 */6 * * *'
param grantGraphPermissions = true
param rotatorGraphPermission = 'Application.ReadWrite.OwnedBy'
param enablePrivateNetworking = false

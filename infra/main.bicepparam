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
// Dedicated: the plan whose front end is documented to demand client certificates. See
// endpointFlexClientCertVerified in main.bicep before choosing FlexConsumption.
param endpointHostingPlan = 'Dedicated'
param serviceBusSku = 'Standard'
param sweepSchedule = '0 0 */6 * * *'
param discoverySchedule = '0 30 */6 * * *'
// grantGraphPermissions is left to the command line: infra/README.md passes false on every
// deployment and grants Graph permissions in a step of their own.
param rotatorGraphPermission = 'Application.ReadWrite.OwnedBy'
param enablePrivateNetworking = false

// Alerts (off until a route is given). Each webhook route names a secret of the alert vault
// (keyturn's own unless alertVault names one) holding its URL; list those secrets in
// alertWebhookSecrets once they exist, so the rotator may read them and nothing else.
// A mail route also needs Mail.Send restricted to the mailbox (infra/README.md).
param alertRoutes = ''
param alertDefaultRoute = ''
param alertMailbox = ''
param alertWebhookSecrets = []

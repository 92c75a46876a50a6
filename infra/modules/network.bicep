// Optional private networking: a VNet whose integration subnets carry the apps' outbound
// traffic, and a subnet of private endpoints for Key Vault, Storage and Service Bus, with the
// private DNS zones that make the services' usual host names resolve to them.

param name string
param location string
@description('VNet address space.')
param addressPrefix string
@description('Subnet prefixes inside addressPrefix: { rotator, endpoint, privateEndpoints }.')
param subnetPrefixes object
param rotatorHostingPlan string
param endpointHostingPlan string
param tags object

// Flex Consumption integrates through Container Apps infrastructure; App Service plans
// through server farms. Each plan type requires its own subnet delegation.
var delegation = {
  FlexConsumption: 'Microsoft.App/environments'
  Dedicated: 'Microsoft.Web/serverFarms'
}
// Private DNS zone names follow the deployment's cloud, all derived from environment():
//   cloud              storage suffix           Service Bus zone                          Key Vault zone
//   AzureCloud         core.windows.net         privatelink.servicebus.windows.net        privatelink.vaultcore.azure.net
//   AzureUSGovernment  core.usgovcloudapi.net   privatelink.servicebus.usgovcloudapi.net  privatelink.vaultcore.usgovcloudapi.net
//   AzureChinaCloud    core.chinacloudapi.cn    privatelink.servicebus.chinacloudapi.cn   privatelink.vaultcore.azure.cn
// Service Bus shares the storage suffix's domain (core.X -> servicebus.X); Key Vault's zone is
// its DNS suffix (.vault.azure.net, .vault.usgovcloudapi.net, .vault.azure.cn) with vaultcore
// in place of vault. Neither 'core.' nor '.vault.' occurs anywhere else in those suffixes.
var storageSuffix = environment().suffixes.storage
var zones = {
  blob: 'privatelink.blob.${storageSuffix}'
  table: 'privatelink.table.${storageSuffix}'
  serviceBus: replace(storageSuffix, 'core.', 'privatelink.servicebus.')
  vault: replace(environment().suffixes.keyvaultDns, '.vault.', 'privatelink.vaultcore.')
}
var zoneNames = [
  zones.blob
  zones.table
  zones.serviceBus
  zones.vault
]

// Default rules only: the subnets carry outbound traffic and private endpoints; nothing
// inbound from the internet lands here.
resource nsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: 'nsg-${name}'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'snet-rotator'
        properties: {
          addressPrefix: subnetPrefixes.rotator
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'rotator'
              properties: {
                serviceName: delegation[rotatorHostingPlan]
              }
            }
          ]
        }
      }
      {
        name: 'snet-endpoint'
        properties: {
          addressPrefix: subnetPrefixes.endpoint
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'endpoint'
              properties: {
                serviceName: delegation[endpointHostingPlan]
              }
            }
          ]
        }
      }
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: subnetPrefixes.privateEndpoints
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource dnsLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in zoneNames: {
  parent: dnsZones[i]
  name: 'link-${name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output rotatorSubnetId string = vnet.properties.subnets[0].id
output endpointSubnetId string = vnet.properties.subnets[1].id
output privateEndpointSubnetId string = vnet.properties.subnets[2].id
output storageDnsZoneIds object = {
  blob: dnsZones[0].id
  table: dnsZones[1].id
}
output serviceBusDnsZoneId string = dnsZones[2].id
output vaultDnsZoneId string = dnsZones[3].id

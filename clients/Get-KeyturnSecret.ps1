<#
.SYNOPSIS
    Reads one secret from a keyturn SecretEndpoint with a client certificate from the
    Windows certificate store.

.DESCRIPTION
    Picks the certificate by thumbprint (SHA-1 as the store shows it, or SHA-256), or,
    with -EntraDevice, the device's own Entra ID certificate: the one in
    Cert:\LocalMachine\My issued by MS-Organization-Access whose subject is CN=<deviceId>
    (the device id comes from `dsregcmd /status`). Returns the secret's value as a
    SecureString unless -AsPlainText is given. Errors carry keyturn's error code and
    request id, which lead to the audit entry.

.EXAMPLE
    Get-KeyturnSecret.ps1 -Url https://keyturn.example.com -Name wifi-psk -EntraDevice

.EXAMPLE
    Get-KeyturnSecret.ps1 -Url https://keyturn.example.com -Name db-password `
        -Thumbprint 1BBF43F156D6544D87BD98580273C75F0344DA56 -StoreLocation CurrentUser
#>
[CmdletBinding(DefaultParameterSetName = 'Thumbprint')]
param(
    [Parameter(Mandatory)] [ValidatePattern('^https://')] [string] $Url,
    [Parameter(Mandatory)] [ValidatePattern('^[0-9A-Za-z-]{1,127}$')] [string] $Name,
    [Parameter(Mandatory, ParameterSetName = 'Thumbprint')] [string] $Thumbprint,
    [Parameter(Mandatory, ParameterSetName = 'EntraDevice')] [switch] $EntraDevice,
    [ValidateSet('LocalMachine', 'CurrentUser')] [string] $StoreLocation = 'LocalMachine',
    [switch] $AsPlainText
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Get-DeviceId {
    $line = (& dsregcmd.exe /status) | Where-Object { $_ -match '^\s*DeviceId\s*:' } | Select-Object -First 1
    if (-not $line) { throw 'this device is not joined or registered to Entra ID (dsregcmd /status shows no DeviceId)' }
    return ($line -split ':', 2)[1].Trim()
}

function Select-Certificate {
    $store = "Cert:\$StoreLocation\My"
    if ($EntraDevice) {
        $deviceId = Get-DeviceId
        $found = Get-ChildItem $store | Where-Object {
            $_.Subject -eq "CN=$deviceId" -and $_.Issuer -match 'CN=MS-Organization-Access' -and $_.HasPrivateKey -and $_.NotAfter -gt (Get-Date)
        } | Sort-Object NotAfter -Descending | Select-Object -First 1
        if (-not $found) { throw "no Entra device certificate for device $deviceId in $store" }
        return $found
    }
    $wanted = ($Thumbprint -replace '[\s:]', '').ToUpperInvariant()
    $found = Get-ChildItem $store | Where-Object {
        $_.Thumbprint -eq $wanted -or
        ([BitConverter]::ToString([Security.Cryptography.SHA256]::Create().ComputeHash($_.RawData)) -replace '-', '') -eq $wanted
    } | Select-Object -First 1
    if (-not $found) { throw "no certificate with thumbprint $wanted in $store" }
    if (-not $found.HasPrivateKey) { throw "the certificate $wanted has no private key on this device" }
    return $found
}

# TLS 1.2 at least; Windows PowerShell 5.1 still defaults to older protocols.
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12

$certificate = Select-Certificate
$uri = '{0}/api/secrets/{1}' -f $Url.TrimEnd('/'), $Name
try {
    $response = Invoke-RestMethod -Uri $uri -Method Get -Certificate $certificate -Headers @{ Accept = 'application/json' }
} catch {
    $detail = $null
    if ($_.ErrorDetails -and $_.ErrorDetails.Message) {
        try { $detail = $_.ErrorDetails.Message | ConvertFrom-Json } catch { $detail = $null }
    }
    if ($detail) {
        throw ('keyturn refused: {0} (request id {1})' -f $detail.error, $detail.requestId)
    }
    throw "no answer from ${Url}: $($_.Exception.Message)"
}
if ($AsPlainText) {
    return $response.value
}
return (ConvertTo-SecureString -String $response.value -AsPlainText -Force)

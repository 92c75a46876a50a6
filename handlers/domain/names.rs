//! Key Vault identifiers that parse: vault names, object names and versions, vault URLs
//! and object ids. Past these types nothing re-checks a Key Vault string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::{Host, Url};

/// Vault names are 3 to 24 characters (Azure resource naming rules for
/// `Microsoft.KeyVault/vaults`; the name becomes a DNS label under the vault domain).
pub(crate) const VAULT_NAME_MIN_LEN: usize = 3;
/// See [`VAULT_NAME_MIN_LEN`].
pub(crate) const VAULT_NAME_MAX_LEN: usize = 24;

/// Secret, certificate and key names are 1 to 127 characters of `0-9a-zA-Z-`
/// (Key Vault "About keys, secrets, and certificates", Object identifiers).
pub const OBJECT_NAME_MAX_LEN: usize = 127;

/// Key Vault versions are 32 hexadecimal characters (a GUID without dashes), as every
/// object id Key Vault returns shows.
pub const OBJECT_VERSION_LEN: usize = 32;

/// DNS suffixes of Key Vault in the public and sovereign clouds: `vault.azure.net`
/// (public), `vault.azure.cn` (Azure China), `vault.usgovcloudapi.net` (US Government),
/// `vault.microsoftazure.de` (the former Azure Germany).
pub(crate) const KEY_VAULT_DNS_SUFFIXES: [&str; 4] = [
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
];

/// Why a Key Vault identifier was refused. Messages name the rule broken and at most the
/// offending character or host; they never echo a whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error(
        "a vault name must be {VAULT_NAME_MIN_LEN} to {VAULT_NAME_MAX_LEN} characters, found {len}"
    )]
    VaultNameLength { len: usize },
    #[error(
        "a vault name may contain only letters, digits and hyphens; found {found:?} at position {position}"
    )]
    VaultNameCharacter { position: usize, found: char },
    #[error("a vault name must start with a letter")]
    VaultNameStart,
    #[error("a vault name must end with a letter or digit")]
    VaultNameEnd,
    #[error("a vault name must not contain consecutive hyphens")]
    VaultNameConsecutiveHyphens,
    #[error("an object name must be 1 to {OBJECT_NAME_MAX_LEN} characters, found {len}")]
    ObjectNameLength { len: usize },
    #[error(
        "an object name may contain only letters, digits and hyphens; found {found:?} at position {position}"
    )]
    ObjectNameCharacter { position: usize, found: char },
    #[error(
        "an object version must be {OBJECT_VERSION_LEN} hexadecimal characters, found {len} characters"
    )]
    ObjectVersionLength { len: usize },
    #[error("an object version must be hexadecimal; found {found:?} at position {position}")]
    ObjectVersionCharacter { position: usize, found: char },
    #[error("an object type must be Secret, Certificate or Key, found {found:?}")]
    ObjectType { found: String },
    #[error("not a URL: {reason}")]
    UrlSyntax { reason: String },
    #[error("a Key Vault URL must use https, found {scheme:?}")]
    UrlScheme { scheme: String },
    #[error("a Key Vault URL must not carry a user name or password")]
    UrlCredentials,
    #[error("a Key Vault URL must not carry a query")]
    UrlQuery,
    #[error("a Key Vault URL must not carry a fragment")]
    UrlFragment,
    #[error("a vault URL must not carry a path; give only https://host[:port]/")]
    UrlPath,
    #[error(
        "host {host:?} is under a Key Vault domain but does not start with a valid vault name: {reason}"
    )]
    VaultHost {
        host: String,
        reason: Box<NameError>,
    },
    #[error(
        "a Key Vault object id must have the path /{{secrets|certificates|keys}}/{{name}}[/{{version}}], found {segments} path segments"
    )]
    ObjectIdPath { segments: usize },
    #[error(
        "a Key Vault object id must be under /secrets, /certificates or /keys, found {found:?}"
    )]
    ObjectIdCollection { found: String },
}

/// Serialises a type as its `Display` text and deserialises it through its `parse`, so
/// invalid stored or received data is refused at the edge.
macro_rules! serde_via_parse {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $type {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

/// A Key Vault name: 3–24 letters, digits and hyphens, starting with a letter, ending
/// with a letter or digit, without consecutive hyphens. Stored in lowercase because it
/// is a DNS label and Key Vault compares names without case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultName(String);

impl VaultName {
    pub(crate) fn parse(text: &str) -> Result<Self, NameError> {
        let len = text.chars().count();
        if !(VAULT_NAME_MIN_LEN..=VAULT_NAME_MAX_LEN).contains(&len) {
            return Err(NameError::VaultNameLength { len });
        }
        if let Some((position, found)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(NameError::VaultNameCharacter { position, found });
        }
        if !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(NameError::VaultNameStart);
        }
        if !text.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(NameError::VaultNameEnd);
        }
        if text.contains("--") {
            return Err(NameError::VaultNameConsecutiveHyphens);
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The public-cloud URL of this vault, `https://{name}.vault.azure.net/`.
    pub(crate) fn public_cloud_url(&self) -> VaultUrl {
        VaultUrl::parse(&format!(
            "https://{}.{}/",
            self.0, KEY_VAULT_DNS_SUFFIXES[0]
        ))
        .expect("a valid vault name under the public suffix is a valid vault URL")
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_parse!(VaultName);

/// The name of a secret, certificate or key: 1–127 characters of `0-9a-zA-Z-`. Kept in
/// the casing it was given, as Key Vault returns it; Key Vault itself compares names
/// without case, which [`ObjectName::matches`] does too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

impl ObjectName {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let len = text.chars().count();
        if !(1..=OBJECT_NAME_MAX_LEN).contains(&len) {
            return Err(NameError::ObjectNameLength { len });
        }
        if let Some((position, found)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(NameError::ObjectNameCharacter { position, found });
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names denote the same Key Vault object (names compare without case).
    pub(crate) fn matches(&self, other: &ObjectName) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_parse!(ObjectName);

/// A Key Vault object version: 32 hexadecimal characters, kept in lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectVersion(String);

impl ObjectVersion {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let len = text.chars().count();
        if len != OBJECT_VERSION_LEN {
            return Err(NameError::ObjectVersionLength { len });
        }
        if let Some((position, found)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(NameError::ObjectVersionCharacter { position, found });
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_parse!(ObjectVersion);

/// The kind of a Key Vault object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Secret,
    Certificate,
    Key,
}

impl ObjectType {
    pub(crate) const ALL: [ObjectType; 3] = [Self::Secret, Self::Certificate, Self::Key];

    /// The name Key Vault events use: `Secret`, `Certificate`, `Key`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::Certificate => "Certificate",
            Self::Key => "Key",
        }
    }

    /// The URL path segment of the collection: `secrets`, `certificates`, `keys`.
    pub(crate) fn collection(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::Certificate => "certificates",
            Self::Key => "keys",
        }
    }

    /// Parses `Secret`, `Certificate` or `Key` in any case.
    pub(crate) fn parse(text: &str) -> Result<Self, NameError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| NameError::ObjectType {
                found: truncated(text),
            })
    }

    fn from_collection(segment: &str) -> Result<Self, NameError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.collection().eq_ignore_ascii_case(segment))
            .ok_or_else(|| NameError::ObjectIdCollection {
                found: truncated(segment),
            })
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_parse!(ObjectType);

/// The base URL of a vault: `https://{host}[:port]/`, always with a trailing slash and
/// without user name, query, fragment or path. Hosts under a Key Vault domain must start
/// with a valid vault name; any other https host (an HTTPS stand-in on loopback, say) is
/// accepted and has no [`VaultUrl::vault_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultUrl {
    url: Url,
    vault_name: Option<VaultName>,
}

impl VaultUrl {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let url = Url::parse(text).map_err(|error| NameError::UrlSyntax {
            reason: error.to_string(),
        })?;
        Self::from_url(url)
    }

    fn from_url(url: Url) -> Result<Self, NameError> {
        check_https_origin(&url)?;
        if url.path() != "/" {
            return Err(NameError::UrlPath);
        }
        let vault_name = match url.host() {
            Some(Host::Domain(host)) => vault_name_of_host(host)?,
            _ => None,
        };
        Ok(Self { url, vault_name })
    }

    /// The vault's name when the host is under a Key Vault domain.
    pub(crate) fn vault_name(&self) -> Option<&VaultName> {
        self.vault_name.as_ref()
    }

    pub(crate) fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The id of an object in this vault.
    pub fn object_id(
        &self,
        object_type: ObjectType,
        name: ObjectName,
        version: Option<ObjectVersion>,
    ) -> ObjectId {
        ObjectId {
            vault: self.clone(),
            object_type,
            name,
            version,
        }
    }
}

impl fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

serde_via_parse!(VaultUrl);

/// The id of a secret, certificate or key:
/// `https://{vault}/{secrets|certificates|keys}/{name}[/{version}]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    vault: VaultUrl,
    object_type: ObjectType,
    name: ObjectName,
    version: Option<ObjectVersion>,
}

impl ObjectId {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let url = Url::parse(text).map_err(|error| NameError::UrlSyntax {
            reason: error.to_string(),
        })?;
        check_https_origin(&url)?;
        let mut segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
        // Some SDKs print ids with a trailing slash; it adds nothing.
        if segments.len() > 1 && segments.last() == Some(&"") {
            segments.pop();
        }
        let (collection, name, version) = match segments.as_slice() {
            [collection, name] => (*collection, *name, None),
            [collection, name, version] => (*collection, *name, Some(*version)),
            other => {
                return Err(NameError::ObjectIdPath {
                    segments: other.len(),
                });
            }
        };
        let object_type = ObjectType::from_collection(collection)?;
        let name = ObjectName::parse(name)?;
        let version = version.map(ObjectVersion::parse).transpose()?;
        let mut base = url.clone();
        base.set_path("/");
        let vault = VaultUrl::from_url(base)?;
        Ok(Self {
            vault,
            object_type,
            name,
            version,
        })
    }

    pub fn vault(&self) -> &VaultUrl {
        &self.vault
    }

    pub fn object_type(&self) -> ObjectType {
        self.object_type
    }

    pub fn name(&self) -> &ObjectName {
        &self.name
    }

    pub fn version(&self) -> Option<&ObjectVersion> {
        self.version.as_ref()
    }

    /// The same object without a version: its "base identifier".
    pub fn without_version(&self) -> ObjectId {
        Self {
            version: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}/{}",
            self.vault,
            self.object_type.collection(),
            self.name
        )?;
        if let Some(version) = &self.version {
            write!(f, "/{version}")?;
        }
        Ok(())
    }
}

serde_via_parse!(ObjectId);

/// Longest excerpt of a refused input an error may quote: enough to recognise a typo,
/// too short to carry anything of size.
const MAX_QUOTED_LEN: usize = 32;

fn truncated(text: &str) -> String {
    text.chars().take(MAX_QUOTED_LEN).collect()
}

fn check_https_origin(url: &Url) -> Result<(), NameError> {
    if url.scheme() != "https" {
        return Err(NameError::UrlScheme {
            scheme: truncated(url.scheme()),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NameError::UrlCredentials);
    }
    if url.query().is_some() {
        return Err(NameError::UrlQuery);
    }
    if url.fragment().is_some() {
        return Err(NameError::UrlFragment);
    }
    Ok(())
}

fn vault_name_of_host(host: &str) -> Result<Option<VaultName>, NameError> {
    for suffix in KEY_VAULT_DNS_SUFFIXES {
        let label = if host == suffix {
            Some("")
        } else {
            host.strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
        };
        if let Some(label) = label {
            return VaultName::parse(label)
                .map(Some)
                .map_err(|reason| NameError::VaultHost {
                    host: truncated(host),
                    reason: Box::new(reason),
                });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_that_follow_the_rules_parse_to_lowercase() {
        for name in [
            "kv1",
            "sample-kv",
            "Contoso-Vault-2024",
            "abcdefghijklmnopqrstuvwx",
        ] {
            let parsed = VaultName::parse(name).expect("valid vault name");
            assert_eq!(parsed.as_str(), name.to_ascii_lowercase());
        }
    }

    #[test]
    fn vault_name_refuses_two_characters() {
        assert_eq!(
            VaultName::parse("kv"),
            Err(NameError::VaultNameLength { len: 2 })
        );
    }

    #[test]
    fn vault_name_refuses_twenty_five_characters() {
        assert_eq!(
            VaultName::parse("abcdefghijklmnopqrstuvwxy"),
            Err(NameError::VaultNameLength { len: 25 })
        );
    }

    #[test]
    fn vault_name_refuses_an_underscore() {
        assert_eq!(
            VaultName::parse("my_vault"),
            Err(NameError::VaultNameCharacter {
                position: 2,
                found: '_'
            })
        );
    }

    #[test]
    fn vault_name_refuses_a_dot() {
        assert_eq!(
            VaultName::parse("my.vault"),
            Err(NameError::VaultNameCharacter {
                position: 2,
                found: '.'
            })
        );
    }

    #[test]
    fn vault_name_refuses_a_leading_digit() {
        assert_eq!(VaultName::parse("1vault"), Err(NameError::VaultNameStart));
    }

    #[test]
    fn vault_name_refuses_a_leading_hyphen() {
        assert_eq!(VaultName::parse("-vault"), Err(NameError::VaultNameStart));
    }

    #[test]
    fn vault_name_refuses_a_trailing_hyphen() {
        assert_eq!(VaultName::parse("vault-"), Err(NameError::VaultNameEnd));
    }

    #[test]
    fn vault_name_refuses_consecutive_hyphens() {
        assert_eq!(
            VaultName::parse("my--vault"),
            Err(NameError::VaultNameConsecutiveHyphens)
        );
    }

    #[test]
    fn vault_name_refuses_non_ascii_letters() {
        assert_eq!(
            VaultName::parse("vaulté"),
            Err(NameError::VaultNameCharacter {
                position: 5,
                found: 'é'
            })
        );
    }

    #[test]
    fn object_names_keep_their_casing_and_match_without_it() {
        let upper = ObjectName::parse("Db-Password-1").expect("valid name");
        let lower = ObjectName::parse("db-password-1").expect("valid name");
        assert_eq!(upper.as_str(), "Db-Password-1");
        assert!(upper.matches(&lower));
        assert!(ObjectName::parse("-").is_ok());
        assert!(ObjectName::parse(&"a".repeat(OBJECT_NAME_MAX_LEN)).is_ok());
    }

    #[test]
    fn object_name_refuses_empty() {
        assert_eq!(
            ObjectName::parse(""),
            Err(NameError::ObjectNameLength { len: 0 })
        );
    }

    #[test]
    fn object_name_refuses_128_characters() {
        assert_eq!(
            ObjectName::parse(&"a".repeat(128)),
            Err(NameError::ObjectNameLength { len: 128 })
        );
    }

    #[test]
    fn object_name_refuses_an_underscore() {
        assert_eq!(
            ObjectName::parse("db_password"),
            Err(NameError::ObjectNameCharacter {
                position: 2,
                found: '_'
            })
        );
    }

    #[test]
    fn object_name_refuses_a_slash() {
        assert_eq!(
            ObjectName::parse("a/b"),
            Err(NameError::ObjectNameCharacter {
                position: 1,
                found: '/'
            })
        );
    }

    #[test]
    fn object_name_refuses_a_space() {
        assert_eq!(
            ObjectName::parse("objectName "),
            Err(NameError::ObjectNameCharacter {
                position: 10,
                found: ' '
            })
        );
    }

    #[test]
    fn object_versions_are_lowercased() {
        let version =
            ObjectVersion::parse("EE059B2BB5BC48398A53B168C6CDCB10").expect("valid version");
        assert_eq!(version.as_str(), "ee059b2bb5bc48398a53b168c6cdcb10");
    }

    #[test]
    fn object_version_refuses_31_characters() {
        assert_eq!(
            ObjectVersion::parse("ee059b2bb5bc48398a53b168c6cdcb1"),
            Err(NameError::ObjectVersionLength { len: 31 })
        );
    }

    #[test]
    fn object_version_refuses_a_guid_with_dashes() {
        assert_eq!(
            ObjectVersion::parse("ee059b2b-b5bc-4839-8a53-b168c6cdcb10"),
            Err(NameError::ObjectVersionLength { len: 36 })
        );
    }

    #[test]
    fn object_version_refuses_non_hex() {
        assert_eq!(
            ObjectVersion::parse("zz059b2bb5bc48398a53b168c6cdcb10"),
            Err(NameError::ObjectVersionCharacter {
                position: 0,
                found: 'z'
            })
        );
    }

    #[test]
    fn object_types_parse_in_any_case() {
        assert_eq!(ObjectType::parse("secret"), Ok(ObjectType::Secret));
        assert_eq!(
            ObjectType::parse("CERTIFICATE"),
            Ok(ObjectType::Certificate)
        );
        assert_eq!(ObjectType::parse("Key"), Ok(ObjectType::Key));
    }

    #[test]
    fn object_type_refuses_vault() {
        assert_eq!(
            ObjectType::parse("Vault"),
            Err(NameError::ObjectType {
                found: "Vault".into()
            })
        );
    }

    #[test]
    fn vault_urls_in_every_cloud_name_their_vault() {
        for (text, normalised) in [
            (
                "https://sample-kv.vault.azure.net",
                "https://sample-kv.vault.azure.net/",
            ),
            (
                "https://Sample-KV.vault.azure.net/",
                "https://sample-kv.vault.azure.net/",
            ),
            (
                "https://kv-cn.vault.azure.cn/",
                "https://kv-cn.vault.azure.cn/",
            ),
            (
                "https://kv-gov.vault.usgovcloudapi.net",
                "https://kv-gov.vault.usgovcloudapi.net/",
            ),
            (
                "https://kv-de.vault.microsoftazure.de",
                "https://kv-de.vault.microsoftazure.de/",
            ),
            (
                "https://kv1.vault.azure.net:443/",
                "https://kv1.vault.azure.net/",
            ),
        ] {
            let url = VaultUrl::parse(text).expect("valid vault URL");
            assert_eq!(url.as_str(), normalised);
            let expected_name = normalised
                .trim_start_matches("https://")
                .split('.')
                .next()
                .expect("split yields at least one part");
            assert_eq!(url.vault_name().map(VaultName::as_str), Some(expected_name));
        }
    }

    #[test]
    fn vault_urls_on_loopback_stand_ins_have_no_vault_name() {
        for (text, normalised) in [
            ("https://127.0.0.1:8443/", "https://127.0.0.1:8443/"),
            ("https://localhost:8443", "https://localhost:8443/"),
            ("https://[::1]:8443", "https://[::1]:8443/"),
        ] {
            let url = VaultUrl::parse(text).expect("valid https URL");
            assert_eq!(url.as_str(), normalised);
            assert_eq!(url.vault_name(), None);
        }
    }

    #[test]
    fn vault_name_gives_its_public_cloud_url() {
        let name = VaultName::parse("sample-kv").expect("valid name");
        assert_eq!(
            name.public_cloud_url().as_str(),
            "https://sample-kv.vault.azure.net/"
        );
    }

    #[test]
    fn vault_url_refuses_http() {
        assert_eq!(
            VaultUrl::parse("http://sample-kv.vault.azure.net/"),
            Err(NameError::UrlScheme {
                scheme: "http".into()
            })
        );
    }

    #[test]
    fn vault_url_refuses_a_relative_url() {
        assert!(matches!(
            VaultUrl::parse("sample-kv.vault.azure.net"),
            Err(NameError::UrlSyntax { .. })
        ));
    }

    #[test]
    fn vault_url_refuses_userinfo() {
        assert_eq!(
            VaultUrl::parse("https://user:pw@sample-kv.vault.azure.net/"),
            Err(NameError::UrlCredentials)
        );
    }

    #[test]
    fn vault_url_refuses_a_query() {
        assert_eq!(
            VaultUrl::parse("https://sample-kv.vault.azure.net/?api-version=7.5"),
            Err(NameError::UrlQuery)
        );
    }

    #[test]
    fn vault_url_refuses_a_fragment() {
        assert_eq!(
            VaultUrl::parse("https://sample-kv.vault.azure.net/#x"),
            Err(NameError::UrlFragment)
        );
    }

    #[test]
    fn vault_url_refuses_a_path() {
        assert_eq!(
            VaultUrl::parse("https://sample-kv.vault.azure.net/secrets"),
            Err(NameError::UrlPath)
        );
    }

    #[test]
    fn vault_url_refuses_an_invalid_vault_label() {
        assert!(matches!(
            VaultUrl::parse("https://my--vault.vault.azure.net/"),
            Err(NameError::VaultHost { .. })
        ));
    }

    #[test]
    fn vault_url_refuses_a_nested_subdomain_of_a_vault_domain() {
        assert!(matches!(
            VaultUrl::parse("https://a.b.vault.azure.net/"),
            Err(NameError::VaultHost { .. })
        ));
    }

    #[test]
    fn vault_url_refuses_the_bare_vault_domain() {
        assert!(matches!(
            VaultUrl::parse("https://vault.azure.net/"),
            Err(NameError::VaultHost { .. })
        ));
    }

    #[test]
    fn object_ids_parse_with_and_without_version() {
        let id = ObjectId::parse(
            "https://sample-kv.vault.azure.net/secrets/newsecret/EE059B2BB5BC48398A53B168C6CDCB10",
        )
        .expect("valid id");
        assert_eq!(id.vault().as_str(), "https://sample-kv.vault.azure.net/");
        assert_eq!(id.object_type(), ObjectType::Secret);
        assert_eq!(id.name().as_str(), "newsecret");
        assert_eq!(
            id.version().map(ObjectVersion::as_str),
            Some("ee059b2bb5bc48398a53b168c6cdcb10")
        );
        assert_eq!(
            id.to_string(),
            "https://sample-kv.vault.azure.net/secrets/newsecret/ee059b2bb5bc48398a53b168c6cdcb10"
        );
        assert_eq!(
            id.without_version().to_string(),
            "https://sample-kv.vault.azure.net/secrets/newsecret"
        );

        let base =
            ObjectId::parse("https://127.0.0.1:8443/certificates/web-cert/").expect("valid id");
        assert_eq!(base.object_type(), ObjectType::Certificate);
        assert_eq!(base.version(), None);
        assert_eq!(
            base.to_string(),
            "https://127.0.0.1:8443/certificates/web-cert"
        );
    }

    #[test]
    fn object_id_refuses_an_unknown_collection() {
        assert_eq!(
            ObjectId::parse("https://sample-kv.vault.azure.net/storage/acct"),
            Err(NameError::ObjectIdCollection {
                found: "storage".into()
            })
        );
    }

    #[test]
    fn object_id_refuses_a_missing_name() {
        assert_eq!(
            ObjectId::parse("https://sample-kv.vault.azure.net/secrets"),
            Err(NameError::ObjectIdPath { segments: 1 })
        );
    }

    #[test]
    fn object_id_refuses_extra_segments() {
        assert_eq!(
            ObjectId::parse(
                "https://sample-kv.vault.azure.net/secrets/a/ee059b2bb5bc48398a53b168c6cdcb10/x"
            ),
            Err(NameError::ObjectIdPath { segments: 4 })
        );
    }

    #[test]
    fn object_id_refuses_a_bad_version() {
        assert_eq!(
            ObjectId::parse("https://sample-kv.vault.azure.net/secrets/a/latest"),
            Err(NameError::ObjectVersionLength { len: 6 })
        );
    }

    #[test]
    fn object_id_refuses_a_bad_name() {
        assert!(matches!(
            ObjectId::parse("https://sample-kv.vault.azure.net/keys/a%20b"),
            Err(NameError::ObjectNameCharacter { .. })
        ));
    }

    #[test]
    fn object_id_refuses_http() {
        assert!(matches!(
            ObjectId::parse("http://sample-kv.vault.azure.net/keys/a"),
            Err(NameError::UrlScheme { .. })
        ));
    }

    #[test]
    fn object_id_refuses_a_query() {
        assert_eq!(
            ObjectId::parse("https://sample-kv.vault.azure.net/keys/a?x=1"),
            Err(NameError::UrlQuery)
        );
    }

    #[test]
    fn names_deserialise_only_when_valid() {
        let name: Result<VaultName, _> = serde_json::from_str("\"sample-kv\"");
        assert_eq!(
            name.map(|n| n.to_string()).ok(),
            Some("sample-kv".to_owned())
        );
        assert!(serde_json::from_str::<VaultName>("\"bad--name\"").is_err());
        assert!(serde_json::from_str::<ObjectName>("\"a_b\"").is_err());
        assert!(serde_json::from_str::<ObjectVersion>("\"1\"").is_err());
        assert!(serde_json::from_str::<VaultUrl>("\"http://x/\"").is_err());
        let id: ObjectId = serde_json::from_str(
            "\"https://sample-kv.vault.azure.net/keys/k1/ee059b2bb5bc48398a53b168c6cdcb10\"",
        )
        .expect("valid id");
        assert_eq!(
            serde_json::to_string(&id).ok(),
            Some(
                "\"https://sample-kv.vault.azure.net/keys/k1/ee059b2bb5bc48398a53b168c6cdcb10\""
                    .to_owned()
            )
        );
    }
}

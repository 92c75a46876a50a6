//! access: the access policy that decides which authenticated client may read which
//! secret, and from which backend; and the rate limits in front of it.
//!
//! The policy is JSON (a file, or the text itself in the setting). Each grant names
//! identities (by thumbprint, device id, subject, SAN or issuer pattern), secret names or
//! name patterns, and the backend those secrets are read from. A request is granted by
//! the first grant, in file order, that matches both the caller and the name; anything
//! else is denied. `docs/access-policy.md` documents the format with examples.

use std::path::Path;

use serde::Deserialize;

use crate::domain::dn::split_rdns;
use crate::domain::file::{CappedReadError, read_capped_text};
use crate::domain::identity::{Authenticated, SubjectAltName};
use crate::domain::ids::DeviceId;
use crate::domain::names::ObjectName;
use crate::domain::thumbprint::Thumbprint;

pub(crate) mod pattern;
pub mod rate_limit;

use pattern::{Pattern, PatternError};

/// The largest policy accepted (file or setting). A policy of thousands of grants is
/// tens of KiB; 1 MiB keeps a wrong path (a log, an archive) from being read as one.
pub(crate) const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Why an access policy cannot be used. These stop start-up; they never reach a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessPolicyError {
    #[error("cannot read the access policy {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("the access policy is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("the access policy is not valid JSON of the documented shape: {detail}")]
    Json { detail: String },
    #[error("access policy version {found} is not supported (expected 1)")]
    Version { found: u32 },
    #[error("grant #{grant}: {problem}")]
    Grant { grant: usize, problem: String },
    #[error("grant #{grant} reads from backend `{backend}`, which is not configured")]
    UnknownBackend { grant: usize, backend: String },
}

/// Who a grant is for. Any one matching selector makes the grant apply to the caller.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) enum Selector {
    /// The leaf's SHA-256 thumbprint.
    Thumbprint(Thumbprint),
    /// An Entra device id, verified by the `entra-device` policy (never read from an
    /// unverified certificate field).
    DeviceId(DeviceId),
    /// The leaf's subject DN, RFC 4514 style (`CN=laptop-7, O=Contoso`), matched one
    /// RDN at a time.
    Subject(DnPattern),
    /// Any of the leaf's subjectAltName values (DNS, e-mail, URI, IP address).
    San(Pattern),
    /// The leaf's issuer DN: the CA that issued it, matched one RDN at a time.
    Issuer(DnPattern),
}

/// A distinguished-name pattern: one text pattern per RDN, written like an RFC 4514
/// string (`CN=kiosk-*, O=Contoso`). A DN matches when it has exactly as many RDNs and
/// each matches its pattern, so `*` never reaches past an RDN and a value holding an
/// (escaped) comma can never pass for two RDNs.
#[derive(Debug, Clone)]
pub(crate) struct DnPattern(Vec<Pattern>);

impl DnPattern {
    pub(crate) fn parse(text: &str) -> Result<Self, PatternError> {
        split_rdns(text)
            .iter()
            .map(|rdn| Pattern::parse(rdn))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `dn` (an RFC 4514 string, as [`crate::domain::dn::rfc4514`] renders it) matches.
    pub(crate) fn matches(&self, dn: &str) -> bool {
        let rdns = split_rdns(dn);
        rdns.len() == self.0.len() && self.0.iter().zip(&rdns).all(|(p, rdn)| p.matches(rdn))
    }
}

/// One grant.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub name: Option<String>,
    pub identities: Vec<Selector>,
    pub secrets: Vec<Pattern>,
    pub backend: String,
}

/// The whole policy. The default policy grants nothing.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    grants: Vec<Grant>,
}

/// What the policy decided for one caller and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'p> {
    Granted {
        /// The grant's position in the file, from 0.
        grant: usize,
        grant_name: Option<&'p str>,
        backend: &'p str,
    },
    Denied,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    grants: Vec<GrantFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    #[serde(default)]
    name: Option<String>,
    identities: Vec<SelectorFile>,
    secrets: Vec<String>,
    backend: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
enum SelectorFile {
    Thumbprint(String),
    DeviceId(String),
    Subject(String),
    San(String),
    Issuer(String),
}

impl AccessPolicy {
    /// A policy from the setting's value: JSON text when it starts with `{`, otherwise
    /// the path of a JSON file.
    pub(crate) fn load(setting: &str) -> Result<Self, AccessPolicyError> {
        let trimmed = setting.trim();
        if trimmed.starts_with('{') {
            return Self::parse(trimmed);
        }
        let path = Path::new(trimmed);
        let read_error = |detail: String| AccessPolicyError::Read {
            path: path.display().to_string(),
            detail,
        };
        let text = read_capped_text(path, MAX_POLICY_BYTES as u64).map_err(|e| match e {
            CappedReadError::TooLarge { .. } => AccessPolicyError::TooLarge,
            other => read_error(other.to_string()),
        })?;
        Self::parse(&text)
    }

    /// Parses policy JSON. Unknown fields are errors: a misspelt key must not silently
    /// widen or narrow what a grant covers.
    pub fn parse(text: &str) -> Result<Self, AccessPolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(AccessPolicyError::TooLarge);
        }
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| AccessPolicyError::Json {
            detail: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(AccessPolicyError::Version {
                found: file.version,
            });
        }
        let grants = file
            .grants
            .into_iter()
            .enumerate()
            .map(|(index, grant)| Grant::from_file(index, grant))
            .collect::<Result<_, _>>()?;
        Ok(Self { grants })
    }

    #[cfg(test)]
    pub(crate) fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Checks that every grant names one of the configured backends.
    pub fn check_backends(&self, configured: &[&str]) -> Result<(), AccessPolicyError> {
        for (grant, g) in self.grants.iter().enumerate() {
            if !configured.contains(&g.backend.as_str()) {
                return Err(AccessPolicyError::UnknownBackend {
                    grant,
                    backend: g.backend.clone(),
                });
            }
        }
        Ok(())
    }

    /// The first grant covering both the caller and the name, or `Denied`.
    pub fn authorize(&self, who: &Authenticated, name: &ObjectName) -> Decision<'_> {
        self.grants
            .iter()
            .enumerate()
            .find(|(_, grant)| {
                grant.secrets.iter().any(|p| p.matches(name.as_str()))
                    && grant.identities.iter().any(|s| s.matches(who))
            })
            .map_or(Decision::Denied, |(grant, g)| Decision::Granted {
                grant,
                grant_name: g.name.as_deref(),
                backend: &g.backend,
            })
    }
}

impl Grant {
    fn from_file(index: usize, file: GrantFile) -> Result<Self, AccessPolicyError> {
        let problem = |problem: String| AccessPolicyError::Grant {
            grant: index,
            problem,
        };
        if file.identities.is_empty() {
            return Err(problem("names no identities".into()));
        }
        if file.secrets.is_empty() {
            return Err(problem("names no secrets".into()));
        }
        if file.backend.trim().is_empty() {
            return Err(problem("names no backend".into()));
        }
        let pattern = |what: &str, text: &str, parse: fn(&str) -> Result<Pattern, PatternError>| {
            parse(text).map_err(|e| problem(format!("{what} `{text}`: {e}")))
        };
        let identities = file
            .identities
            .iter()
            .map(|selector| match selector {
                SelectorFile::Thumbprint(text) => {
                    let thumbprint = Thumbprint::parse(text)
                        .map_err(|e| problem(format!("thumbprint `{text}`: {e}")))?;
                    if thumbprint.is_legacy_sha1() {
                        return Err(problem(format!(
                            "thumbprint `{text}` is SHA-1; grants name SHA-256 thumbprints"
                        )));
                    }
                    Ok(Selector::Thumbprint(thumbprint))
                }
                SelectorFile::DeviceId(text) => DeviceId::parse(text)
                    .map(Selector::DeviceId)
                    .map_err(|e| problem(format!("deviceId `{text}`: {e}"))),
                SelectorFile::Subject(text) => DnPattern::parse(text)
                    .map(Selector::Subject)
                    .map_err(|e| problem(format!("subject `{text}`: {e}"))),
                SelectorFile::San(text) => pattern("san", text, Pattern::parse).map(Selector::San),
                SelectorFile::Issuer(text) => DnPattern::parse(text)
                    .map(Selector::Issuer)
                    .map_err(|e| problem(format!("issuer `{text}`: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        let secrets = file
            .secrets
            .iter()
            .map(|text| pattern("secret", text, Pattern::parse_secret))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: file.name,
            identities,
            secrets,
            backend: file.backend.trim().to_owned(),
        })
    }
}

impl Selector {
    fn matches(&self, who: &Authenticated) -> bool {
        let identity = &who.identity;
        match self {
            Self::Thumbprint(thumbprint) => identity.thumbprint() == *thumbprint,
            Self::DeviceId(device_id) => who.device_id.as_ref() == Some(device_id),
            Self::Subject(pattern) => pattern.matches(identity.subject()),
            Self::Issuer(pattern) => pattern.matches(identity.issuer()),
            Self::San(pattern) => identity.subject_alt_names().iter().any(|san| match san {
                SubjectAltName::Dns(v) | SubjectAltName::Email(v) | SubjectAltName::Uri(v) => {
                    pattern.matches(v)
                }
                SubjectAltName::Ip(ip) => pattern.matches(&ip.to_string()),
                _ => false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dn_pattern_matches_rdn_by_rdn_and_a_comma_in_a_value_cannot_pass_for_two() {
        let pattern = DnPattern::parse("CN=kiosk-*, O=Contoso").expect("valid");
        assert!(pattern.matches("CN=kiosk-12,O=Contoso"));
        assert!(pattern.matches("cn=KIOSK-12, o=contoso"));
        assert!(!pattern.matches("CN=kiosk-12"));
        assert!(!pattern.matches("CN=kiosk-12,O=Contoso,C=NL"));
        // One CN whose value is "kiosk-9, O=Contoso", as rfc4514 renders it.
        assert!(!pattern.matches("CN=kiosk-9\\, O\\=Contoso"));
        // A star stays inside its RDN.
        let broad = DnPattern::parse("CN=*").expect("valid");
        assert!(!broad.matches("CN=a,O=b"));
    }

    use super::*;
    use crate::domain::identity::{CertificateDetails, ClientIdentity, PolicyKind};

    /// A chain-validated caller whose subject is `CN={cn}` and whose one SAN is the DNS
    /// name `san`, as `mtls` would describe it after parsing such a certificate.
    fn who(cn: &str, san: &str) -> Authenticated {
        let details = CertificateDetails {
            thumbprint: Thumbprint::of_der(format!("{cn}/{san}").as_bytes()),
            subject: format!("CN={cn}"),
            issuer: format!("CN={cn}"),
            serial_hex: "01".to_owned(),
            subject_alt_names: vec![SubjectAltName::Dns(san.to_owned())],
            not_before: chrono::DateTime::UNIX_EPOCH,
            not_after: chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(365),
            extended_key_usage: Default::default(),
        };
        Authenticated {
            identity: ClientIdentity::new(details, PolicyKind::Chain),
            device_id: None,
            policies: vec![PolicyKind::Chain],
        }
    }

    fn name(text: &str) -> ObjectName {
        ObjectName::parse(text).expect("valid name")
    }

    #[test]
    fn the_first_grant_matching_caller_and_name_decides_the_backend() {
        let policy = AccessPolicy::parse(
            r#"{ "version": 1, "grants": [
                { "name": "kiosks", "identities": [ { "subject": "CN=kiosk-*" } ], "secrets": [ "wifi-*" ], "backend": "table" },
                { "identities": [ { "san": "*.devices.contoso.com" } ], "secrets": [ "wifi-guest", "db-password" ], "backend": "keyvault" }
            ] }"#,
        )
        .expect("valid policy");
        let kiosk = who("kiosk-1", "kiosk-1.devices.contoso.com");

        assert_eq!(
            policy.authorize(&kiosk, &name("WIFI-guest")),
            Decision::Granted {
                grant: 0,
                grant_name: Some("kiosks"),
                backend: "table"
            }
        );
        assert_eq!(
            policy.authorize(&kiosk, &name("db-password")),
            Decision::Granted {
                grant: 1,
                grant_name: None,
                backend: "keyvault"
            }
        );
        assert_eq!(
            policy.authorize(&kiosk, &name("payroll-key")),
            Decision::Denied
        );
        let laptop = who("laptop-1", "laptop-1.example.org");
        assert_eq!(
            policy.authorize(&laptop, &name("wifi-guest")),
            Decision::Denied
        );
    }

    #[test]
    fn thumbprint_and_device_selectors_match_exactly() {
        let caller = who("x", "x.example");
        let policy = AccessPolicy::parse(&format!(
            r#"{{ "version": 1, "grants": [
                {{ "identities": [ {{ "thumbprint": "{}" }} ], "secrets": [ "a" ], "backend": "local" }},
                {{ "identities": [ {{ "deviceId": "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab" }} ], "secrets": [ "b" ], "backend": "local" }}
            ] }}"#,
            caller.identity.thumbprint()
        ))
        .expect("valid policy");
        assert!(matches!(
            policy.authorize(&caller, &name("a")),
            Decision::Granted { grant: 0, .. }
        ));
        assert_eq!(policy.authorize(&caller, &name("b")), Decision::Denied);

        let mut device = caller.clone();
        device.device_id =
            Some(DeviceId::parse("6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab").expect("id"));
        assert!(matches!(
            policy.authorize(&device, &name("b")),
            Decision::Granted { grant: 1, .. }
        ));
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let policy = AccessPolicy::parse(r#"{ "version": 1, "grants": [] }"#).expect("valid");
        assert_eq!(
            policy.authorize(&who("a", "a.example"), &name("a")),
            Decision::Denied
        );
        assert_eq!(
            AccessPolicy::default().authorize(&who("a", "a.example"), &name("a")),
            Decision::Denied
        );
    }

    #[test]
    fn malformed_policies_are_refused_with_the_grant_that_is_wrong() {
        let cases = [
            (r#"{ "version": 2, "grants": [] }"#, "version"),
            (
                r#"{ "version": 1, "grants": [], "extra": 1 }"#,
                "unknown field",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [], "secrets": ["a"], "backend": "x" } ] }"#,
                "no identities",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "*" } ], "secrets": [], "backend": "x" } ] }"#,
                "no secrets",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "*" } ], "secrets": ["a_b"], "backend": "x" } ] }"#,
                "secret `a_b`",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [ { "thumbprint": "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3" } ], "secrets": ["a"], "backend": "x" } ] }"#,
                "SHA-1",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [ { "deviceId": "nope" } ], "secrets": ["a"], "backend": "x" } ] }"#,
                "deviceId",
            ),
            (
                r#"{ "version": 1, "grants": [ { "identities": [ { "email": "a" } ], "secrets": ["a"], "backend": "x" } ] }"#,
                "unknown variant",
            ),
            ("not json", "JSON"),
        ];
        for (text, expected) in cases {
            let error = AccessPolicy::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn grants_must_name_configured_backends() {
        let policy = AccessPolicy::parse(
            r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "*" } ], "secrets": ["a"], "backend": "vault" } ] }"#,
        )
        .expect("valid");
        assert_eq!(
            policy.check_backends(&["keyvault", "table"]),
            Err(AccessPolicyError::UnknownBackend {
                grant: 0,
                backend: "vault".into()
            })
        );
        assert!(policy.check_backends(&["vault"]).is_ok());
    }

    #[test]
    fn a_policy_loads_from_a_file_or_inline_text() {
        let text = r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "*" } ], "secrets": ["a"], "backend": "local" } ] }"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.json");
        std::fs::write(&path, text).expect("write");
        assert_eq!(
            AccessPolicy::load(path.to_str().expect("utf-8"))
                .expect("file")
                .grants()
                .len(),
            1
        );
        assert_eq!(AccessPolicy::load(text).expect("inline").grants().len(), 1);
        assert!(matches!(
            AccessPolicy::load("/nonexistent/policy.json"),
            Err(AccessPolicyError::Read { .. })
        ));
    }
}

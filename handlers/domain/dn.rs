//! Distinguished names as RFC 4514 strings, and patterns matched RDN by RDN.
//!
//! x509-parser's `Display` joins attribute values with ", " in DER order without escaping,
//! so a CN of `kiosk-9, O=Contoso` would print like a CN followed by an O. Here names are
//! rendered as RFC 4514 says (most specific RDN first, special characters escaped) and a
//! pattern is compared one RDN at a time, so a value can never pass for two RDNs.

use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The RFC 4514 string of `name` (section 2): RDNs in reverse of their DER order,
/// separated by ","; multi-valued RDNs joined with "+"; values escaped (section 2.4).
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(attr: &AttributeTypeAndValue<'_>) -> String {
    let kind = oid2abbrev(attr.attr_type(), oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| attr.attr_type().to_id_string());
    match attr.as_str() {
        Ok(value) => format!("{kind}={}", escape(value)),
        // A value that is not a string is written as '#' and the hex of its BER
        // encoding (section 2.4).
        Err(_) => format!("{kind}=#{}", hex::encode(attr.attr_value().data)),
    }
}

/// Escapes an attribute value (RFC 4514 section 2.4).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Splits an RFC 4514 string (or a pattern written like one) into its RDNs at the commas
/// that are not escaped, trimming the spaces people put after commas.
pub(crate) fn split_rdns(text: &str) -> Vec<String> {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' => rdns.push(std::mem::take(&mut current).trim().to_owned()),
            c => current.push(c),
        }
    }
    rdns.push(current.trim().to_owned());
    rdns
}

#[cfg(test)]
mod tests {
    use keyturn_testkit::pki::{self, rcgen};
    use x509_parser::prelude::FromDer;

    use super::*;

    fn name_of(parts: &[(rcgen::DnType, &str)]) -> String {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (kind, value) in parts {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        let der = pki::self_signed(&params).cert_der;
        let (_, parsed) =
            x509_parser::certificate::X509Certificate::from_der(&der).expect("parses");
        rfc4514(parsed.subject())
    }

    #[test]
    fn rdns_come_most_specific_first() {
        let dn = name_of(&[
            (rcgen::DnType::CountryName, "NL"),
            (rcgen::DnType::OrganizationName, "Contoso"),
            (rcgen::DnType::CommonName, "laptop-7"),
        ]);
        assert_eq!(dn, "CN=laptop-7,O=Contoso,C=NL");
    }

    #[test]
    fn a_value_with_a_comma_stays_one_rdn() {
        let dn = name_of(&[(rcgen::DnType::CommonName, "kiosk-9, O=Contoso")]);
        assert_eq!(dn, "CN=kiosk-9\\, O\\=Contoso");
        assert_eq!(split_rdns(&dn).len(), 1);
    }

    #[test]
    fn leading_hashes_and_edge_spaces_are_escaped() {
        assert_eq!(escape("#1"), "\\#1");
        assert_eq!(escape(" a b "), "\\ a b\\ ");
        assert_eq!(escape("a\"b;c<d>e\\f+g"), "a\\\"b\\;c\\<d\\>e\\\\f\\+g");
    }

    #[test]
    fn splitting_respects_escaped_commas_and_trims_spaces() {
        assert_eq!(
            split_rdns("CN=a\\,b, O=Contoso ,C=NL"),
            ["CN=a\\,b", "O=Contoso", "C=NL"]
        );
    }
}

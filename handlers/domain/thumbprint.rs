//! Certificate thumbprints: parsed from the forms operators paste, computed from DER,
//! compared in constant time.
//!
//! A thumbprint is a digest of a certificate's DER encoding. keyturn computes SHA-256
//! thumbprints; SHA-1 thumbprints (what Windows' certificate store and the Azure portal
//! still show by default) parse too, but are flagged as legacy so that a policy can
//! refuse them: SHA-1 is no longer collision resistant, so a SHA-1 pin identifies a
//! certificate much less firmly than a SHA-256 one.
//!
//! `Display` prints uppercase hex without separators, the form Windows, PowerShell's
//! `Cert:` drive and the Azure portal use, so a printed thumbprint can be searched for
//! in those tools as is.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes in a SHA-256 digest (FIPS 180-4).
const SHA256_LEN: usize = 32;
/// Bytes in a SHA-1 digest (FIPS 180-4).
const SHA1_LEN: usize = 20;
/// The longest input worth looking at: a SHA-256 thumbprint with a separator after
/// every byte (`AA:BB:...`) is 95 characters; anything much longer is not a thumbprint,
/// and refusing it early keeps error messages short.
const MAX_INPUT_LEN: usize = 128;

/// A certificate thumbprint: a SHA-256 digest, or a legacy SHA-1 one.
///
/// Equality runs in constant time over the digest bytes, so comparing a presented
/// certificate against a configured pin does not reveal how many leading bytes matched.
/// Thumbprints of different algorithms are never equal.
#[derive(Clone, Copy)]
pub struct Thumbprint(DigestValue);

#[derive(Clone, Copy)]
enum DigestValue {
    Sha256([u8; SHA256_LEN]),
    Sha1([u8; SHA1_LEN]),
}

/// Why a string is not a thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbprintError {
    #[error("thumbprint is empty")]
    Empty,
    #[error("thumbprint is {length} characters long; at most {MAX_INPUT_LEN} are accepted")]
    TooLong { length: usize },
    #[error(
        "thumbprint has {character:?} at position {position}; only hex digits, ':' and ' ' are allowed"
    )]
    InvalidCharacter { position: usize, character: char },
    #[error("thumbprint has an odd number of hex digits ({digits})")]
    OddLength { digits: usize },
    #[error("thumbprint has {bytes} bytes; expected {SHA256_LEN} (SHA-256) or {SHA1_LEN} (SHA-1)")]
    WrongLength { bytes: usize },
}

impl Thumbprint {
    /// Parses hex with or without `:` or ` ` separators, in either case:
    /// `"AB:CD:..."`, `"ab cd ..."` and `"ABCD..."` are the same thumbprint.
    pub(crate) fn parse(input: &str) -> Result<Self, ThumbprintError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ThumbprintError::Empty);
        }
        if trimmed.len() > MAX_INPUT_LEN {
            return Err(ThumbprintError::TooLong {
                length: trimmed.len(),
            });
        }
        let mut digits = String::with_capacity(trimmed.len());
        for (position, character) in trimmed.chars().enumerate() {
            match character {
                ':' | ' ' => {}
                c if c.is_ascii_hexdigit() => digits.push(c),
                character => {
                    return Err(ThumbprintError::InvalidCharacter {
                        position,
                        character,
                    });
                }
            }
        }
        if digits.is_empty() {
            return Err(ThumbprintError::Empty);
        }
        if !digits.len().is_multiple_of(2) {
            return Err(ThumbprintError::OddLength {
                digits: digits.len(),
            });
        }
        // Every character is an ASCII hex digit and the count is even, so decoding
        // cannot fail; the error arm is kept rather than an `expect` on outside input.
        let bytes = hex::decode(&digits).map_err(|_| ThumbprintError::OddLength {
            digits: digits.len(),
        })?;
        Self::from_digest_bytes(&bytes)
    }

    /// The SHA-256 thumbprint of a certificate's DER encoding.
    pub fn of_der(der: &[u8]) -> Self {
        Self(DigestValue::Sha256(Sha256::digest(der).into()))
    }

    /// A thumbprint from raw digest bytes: 32 bytes are SHA-256, 20 bytes SHA-1.
    pub(crate) fn from_digest_bytes(bytes: &[u8]) -> Result<Self, ThumbprintError> {
        if let Ok(sha256) = <[u8; SHA256_LEN]>::try_from(bytes) {
            Ok(Self(DigestValue::Sha256(sha256)))
        } else if let Ok(sha1) = <[u8; SHA1_LEN]>::try_from(bytes) {
            Ok(Self(DigestValue::Sha1(sha1)))
        } else {
            Err(ThumbprintError::WrongLength { bytes: bytes.len() })
        }
    }

    /// True for a SHA-1 thumbprint, which identifies a certificate less firmly.
    pub(crate) fn is_legacy_sha1(&self) -> bool {
        matches!(self.0, DigestValue::Sha1(_))
    }

    /// The digest bytes (32 for SHA-256, 20 for SHA-1).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            DigestValue::Sha256(bytes) => bytes,
            DigestValue::Sha1(bytes) => bytes,
        }
    }

    /// Lowercase hex without separators, for places that want it (JSON APIs that
    /// compare case-sensitively, file names).
    #[cfg(test)]
    pub fn to_lower_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl PartialEq for Thumbprint {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (DigestValue::Sha256(a), DigestValue::Sha256(b)) => a.ct_eq(b).into(),
            (DigestValue::Sha1(a), DigestValue::Sha1(b)) => a.ct_eq(b).into(),
            // The algorithm is public (it follows from the length); only the digest
            // bytes need constant-time treatment.
            _ => false,
        }
    }
}

impl Eq for Thumbprint {}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.as_bytes()))
    }
}

/// Serialized as its `Display` form (uppercase hex), the form audit entries carry.
impl serde::Serialize for Thumbprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = if self.is_legacy_sha1() {
            "sha1"
        } else {
            "sha256"
        };
        write!(f, "Thumbprint({algorithm}:{self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_UPPER: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn of_der_is_the_sha256_of_the_bytes() {
        // SHA-256("test"), a published test vector.
        let thumbprint = Thumbprint::of_der(b"test");
        assert_eq!(thumbprint.to_string(), SHA256_UPPER);
        assert!(!thumbprint.is_legacy_sha1());
        assert_eq!(thumbprint.as_bytes().len(), 32);
    }

    #[test]
    fn parse_accepts_colons_spaces_and_either_case() {
        let plain = Thumbprint::parse(SHA256_UPPER).unwrap();
        let lower = Thumbprint::parse(&SHA256_UPPER.to_lowercase()).unwrap();
        let pairs: Vec<&str> = (0..32).map(|i| &SHA256_UPPER[i * 2..i * 2 + 2]).collect();
        let colons = Thumbprint::parse(&pairs.join(":")).unwrap();
        let spaces = Thumbprint::parse(&format!("  {}\n", pairs.join(" ").to_lowercase())).unwrap();
        assert_eq!(plain, Thumbprint::of_der(b"test"));
        assert_eq!(lower, plain);
        assert_eq!(colons, plain);
        assert_eq!(spaces, plain);
    }

    #[test]
    fn display_round_trips_through_parse() {
        let thumbprint = Thumbprint::of_der(b"round trip");
        assert_eq!(
            Thumbprint::parse(&thumbprint.to_string()).unwrap(),
            thumbprint
        );
        assert_eq!(
            Thumbprint::parse(&thumbprint.to_lower_hex()).unwrap(),
            thumbprint
        );
    }

    #[test]
    fn sha1_thumbprints_parse_and_are_flagged_legacy() {
        let sha1 = Thumbprint::parse("A9:4A:8F:E5:CC:B1:9B:A6:1C:4C:08:73:D3:91:E9:87:98:2F:BB:D3")
            .unwrap();
        assert!(sha1.is_legacy_sha1());
        assert_eq!(sha1.to_string(), "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3");
    }

    #[test]
    fn thumbprints_of_different_algorithms_are_never_equal() {
        let sha1 = Thumbprint::from_digest_bytes(&[7; 20]).unwrap();
        let sha256 = Thumbprint::from_digest_bytes(&[7; 32]).unwrap();
        assert_ne!(sha1, sha256);
        assert_ne!(
            Thumbprint::of_der(b"a"),
            Thumbprint::of_der(b"b"),
            "different certificates must differ"
        );
    }

    #[test]
    fn empty_input_is_rejected() {
        assert_eq!(Thumbprint::parse(""), Err(ThumbprintError::Empty));
        assert_eq!(Thumbprint::parse("   "), Err(ThumbprintError::Empty));
    }

    #[test]
    fn separators_alone_are_rejected_as_empty() {
        assert_eq!(Thumbprint::parse(": : :"), Err(ThumbprintError::Empty));
    }

    #[test]
    fn non_hex_characters_are_rejected_with_their_position() {
        assert_eq!(
            Thumbprint::parse("AB:CG"),
            Err(ThumbprintError::InvalidCharacter {
                position: 4,
                character: 'G'
            })
        );
    }

    #[test]
    fn dashes_are_not_accepted_as_separators() {
        assert!(matches!(
            Thumbprint::parse("AB-CD"),
            Err(ThumbprintError::InvalidCharacter { character: '-', .. })
        ));
    }

    #[test]
    fn an_odd_number_of_digits_is_rejected() {
        assert_eq!(
            Thumbprint::parse(&SHA256_UPPER[1..]),
            Err(ThumbprintError::OddLength { digits: 63 })
        );
    }

    #[test]
    fn a_digest_of_the_wrong_size_is_rejected() {
        assert_eq!(
            Thumbprint::parse(&SHA256_UPPER[..62]),
            Err(ThumbprintError::WrongLength { bytes: 31 })
        );
        assert_eq!(
            Thumbprint::parse("ABCD"),
            Err(ThumbprintError::WrongLength { bytes: 2 })
        );
    }

    #[test]
    fn overlong_input_is_rejected_before_decoding() {
        let long = "A".repeat(MAX_INPUT_LEN + 2);
        assert_eq!(
            Thumbprint::parse(&long),
            Err(ThumbprintError::TooLong {
                length: MAX_INPUT_LEN + 2
            })
        );
    }

    #[test]
    fn debug_names_the_algorithm() {
        let thumbprint = Thumbprint::of_der(b"test");
        assert_eq!(
            format!("{thumbprint:?}"),
            format!("Thumbprint(sha256:{SHA256_UPPER})")
        );
    }
}

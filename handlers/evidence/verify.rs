//! `keyturn evidence verify`: checks a package with nothing but the zip and a public key,
//! and names whatever fails: the manifest's signature (a manifest edited, a wrong key),
//! each file's SHA-256 (a byte changed), a file listed but missing, a file present but not
//! listed, and the audit extract (its hashes, links and signed checkpoints).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use super::container::{MANIFEST, MANIFEST_SIGNATURE, Manifest, ManifestSignature, signed_bytes};
use super::extract::{self, ExtractReport};
use crate::ports::checkpoint::{PublicKey, parse_public_keys};

/// The manifest of a package with a million files is about 200 MB; a real one lists a
/// dozen. 16 MiB reads any honest manifest and refuses a zip bomb posing as one.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// A signature file holds a key id and 64 bytes in base64: 4 KiB is plenty.
const MAX_SIGNATURE_BYTES: u64 = 4096;
/// A JSON Web Key is a few hundred bytes.
const MAX_KEY_BYTES: u64 = 16 * 1024;

/// Why a package could not be checked at all (as opposed to checked and found wrong).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a readable zip: {source}")]
    NotAZip {
        path: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{path}: cannot read {file}: {problem}")]
    Read {
        path: String,
        file: String,
        problem: String,
    },
}

/// Which key checked the signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The key the auditor gave (`--public-key`).
    Given,
    /// The keys inside the package: proves the files belong together, not who signed
    /// them, until their fingerprint is compared with the organisation's key.
    Package,
}

/// One file's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub path: String,
    /// `ok`, `changed`, `missing` or `not_in_manifest`.
    pub status: &'static str,
}

/// What verifying a package found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageReport {
    pub intact: bool,
    pub key_source: KeySource,
    /// The fingerprints of the keys used.
    pub keys: Vec<String>,
    pub manifest_signature: &'static str,
    pub files: Vec<FileCheck>,
    pub audit_extract: Option<ExtractReport>,
    /// Every problem, each naming what failed.
    pub problems: Vec<String>,
}

/// Verifies the package at `path` with `keys` (or, with none, the keys inside it).
pub fn verify_package(path: &Path, keys: Vec<PublicKey>) -> Result<PackageReport, VerifyError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| VerifyError::Open {
        path: shown.clone(),
        source,
    })?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|source| VerifyError::NotAZip {
        path: shown.clone(),
        source,
    })?;
    let read_error = |file: &str| {
        let path = shown.clone();
        let file = file.to_owned();
        move |problem: String| VerifyError::Read {
            path: path.clone(),
            file: file.clone(),
            problem,
        }
    };
    let mut problems = Vec::new();

    let manifest_bytes =
        read_small(&mut zip, MANIFEST, MAX_MANIFEST_BYTES).map_err(read_error(MANIFEST))?;
    let signature_bytes = read_small(&mut zip, MANIFEST_SIGNATURE, MAX_SIGNATURE_BYTES)
        .map_err(read_error(MANIFEST_SIGNATURE))?;

    let (keys, key_source) = if keys.is_empty() {
        (package_keys(&mut zip, &mut problems), KeySource::Package)
    } else {
        (keys, KeySource::Given)
    };
    if keys.is_empty() {
        problems.push("no public key: the package holds none under keys/ and none was given (--public-key FILE)".to_owned());
    }

    // The signature first: a manifest that is not the signed one vouches for nothing.
    let manifest_signature = match (&manifest_bytes, &signature_bytes) {
        (None, _) => {
            problems.push(format!(
                "{MANIFEST} is missing: nothing vouches for the files"
            ));
            "missing"
        }
        (Some(_), None) => {
            problems.push(format!(
                "{MANIFEST_SIGNATURE} is missing: the manifest is not signed"
            ));
            "missing"
        }
        (Some(manifest), Some(signature)) => {
            check_signature(manifest, signature, &keys, &mut problems)
        }
    };

    let manifest: Option<Manifest> = manifest_bytes.as_deref().and_then(|bytes| {
        serde_json::from_slice(bytes)
            .map_err(|e| problems.push(format!("{MANIFEST} is not a keyturn manifest ({e})")))
            .ok()
    });

    let mut files = Vec::new();
    if let Some(manifest) = &manifest {
        let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let mut present = BTreeSet::new();
        for index in 0..zip.len() {
            let mut entry = zip.by_index(index).map_err(|e| VerifyError::Read {
                path: shown.clone(),
                file: format!("entry {index}"),
                problem: e.to_string(),
            })?;
            let name = entry.name().to_owned();
            if name == MANIFEST || name == MANIFEST_SIGNATURE {
                continue;
            }
            if !present.insert(name.clone()) {
                problems.push(format!("{name} appears twice in the zip"));
                continue;
            }
            let Some(expected) = manifest.files.iter().find(|f| f.path == name) else {
                problems.push(format!("{name} was added: it is not in the manifest"));
                files.push(FileCheck {
                    path: name,
                    status: "not_in_manifest",
                });
                continue;
            };
            let digest = sha256_of(&mut entry).map_err(|e| VerifyError::Read {
                path: shown.clone(),
                file: name.clone(),
                problem: e.to_string(),
            })?;
            let status = if digest == expected.sha256 {
                "ok"
            } else {
                problems.push(format!(
                    "{name} was changed: its SHA-256 is {digest}, the manifest says {}",
                    expected.sha256
                ));
                "changed"
            };
            files.push(FileCheck { path: name, status });
        }
        for path in listed.iter().filter(|path| !present.contains(**path)) {
            problems.push(format!("{path} is missing: the manifest lists it"));
            files.push(FileCheck {
                path: (*path).to_owned(),
                status: "missing",
            });
        }
    }

    let audit_extract = match verify_audit(&mut zip, &keys) {
        Ok(report) => report,
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    if let Some(report) = &audit_extract {
        problems.extend(report.problems.iter().cloned());
    }

    Ok(PackageReport {
        intact: problems.is_empty(),
        key_source,
        keys: keys.iter().map(PublicKey::fingerprint).collect(),
        manifest_signature,
        files,
        audit_extract,
        problems,
    })
}

fn check_signature(
    manifest: &[u8],
    signature: &[u8],
    keys: &[PublicKey],
    problems: &mut Vec<String>,
) -> &'static str {
    let stored: ManifestSignature = match serde_json::from_slice(signature) {
        Ok(stored) => stored,
        Err(e) => {
            problems.push(format!(
                "{MANIFEST_SIGNATURE} is not a keyturn signature ({e})"
            ));
            return "unreadable";
        }
    };
    let Ok(bytes) = BASE64URL.decode(stored.signature.as_bytes()) else {
        problems.push(format!(
            "{MANIFEST_SIGNATURE}: the signature is not unpadded base64url"
        ));
        return "unreadable";
    };
    let message = signed_bytes(manifest);
    if keys
        .iter()
        .any(|key| key.verifies(stored.algorithm, &message, &bytes))
    {
        return "valid";
    }
    let fingerprints: Vec<String> = keys.iter().map(PublicKey::fingerprint).collect();
    if !keys.is_empty() && !fingerprints.contains(&stored.public_key) {
        problems.push(format!(
            "{MANIFEST_SIGNATURE}: the manifest was signed by key {} ({}), not by the key given ({}): a wrong key, or a package signed by someone else",
            stored.public_key,
            stored.key_id,
            fingerprints.join(", ")
        ));
        return "wrong_key";
    }
    problems.push(format!(
        "{MANIFEST_SIGNATURE}: the signature does not verify with key {}: {MANIFEST} (or the signature) was changed after it was signed",
        stored.public_key
    ));
    "invalid"
}

/// The package's own keys: every key in `keys/` (JSON Web Keys or Key Sets).
fn package_keys<R: Read + io::Seek>(
    zip: &mut ZipArchive<R>,
    problems: &mut Vec<String>,
) -> Vec<PublicKey> {
    let names: Vec<String> = zip
        .file_names()
        .filter(|name| name.starts_with("keys/") && !name.ends_with('/'))
        .map(str::to_owned)
        .collect();
    let mut keys = Vec::new();
    for name in names {
        match read_small(zip, &name, MAX_KEY_BYTES) {
            Ok(Some(bytes)) => match parse_public_keys(&String::from_utf8_lossy(&bytes)) {
                Ok(named) => keys.extend(named.into_iter().map(|named| named.key)),
                Err(e) => problems.push(format!("{name}: {e}")),
            },
            Ok(None) => {}
            Err(problem) => problems.push(format!("{name}: {problem}")),
        }
    }
    keys
}

/// Verifies the audit extract, when the package holds one.
fn verify_audit<R: Read + io::Seek>(
    zip: &mut ZipArchive<R>,
    keys: &[PublicKey],
) -> Result<Option<ExtractReport>, String> {
    let has = |zip: &ZipArchive<R>, name: &str| zip.file_names().any(|n| n == name);
    if !has(zip, extract::ENTRIES) || !has(zip, extract::CHECKPOINTS) {
        return Ok(None);
    }
    // The checkpoints are few (one per stored batch in the range): read them first.
    let checkpoints = {
        let mut file = zip
            .by_name(extract::CHECKPOINTS)
            .map_err(|e| format!("{}: {e}", extract::CHECKPOINTS))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", extract::CHECKPOINTS))?;
        bytes
    };
    let entries = zip
        .by_name(extract::ENTRIES)
        .map_err(|e| format!("{}: {e}", extract::ENTRIES))?;
    let mut entries = BufReader::new(entries);
    extract::verify_extract(&mut entries, &mut checkpoints.as_slice(), keys)
        .map(Some)
        .map_err(|e| format!("{}: {e}", extract::ENTRIES))
}

/// A small file's bytes (`None` when the zip has no such file), refusing more than `cap`.
fn read_small<R: Read + io::Seek>(
    zip: &mut ZipArchive<R>,
    name: &str,
    cap: u64,
) -> Result<Option<Vec<u8>>, String> {
    let file = match zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than {cap} bytes"));
    }
    Ok(Some(bytes))
}

fn sha256_of(input: &mut dyn Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

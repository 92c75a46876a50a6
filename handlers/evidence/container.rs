//! The package's container: a zip written to a temporary file beside its destination
//! and renamed into place only once every file, the manifest and its signature are in
//! it, so an export that fails at any point leaves no zip behind (the temporary file
//! is removed when the package is dropped unfinished). Each file is hashed as it is
//! written: the manifest's SHA-256 never needs a second read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::ports::checkpoint::{CheckpointSigner, SignatureAlgorithm};

/// The manifest's name in the zip: every other file is listed in it.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's signature: the one file the manifest cannot list.
pub const MANIFEST_SIGNATURE: &str = "manifest.sig";
/// The package format's name and version, in the manifest and in what is signed.
pub const FORMAT: &str = "keyturn-evidence-v1";
/// What is signed: these bytes, a line feed, then the manifest's bytes exactly as
/// stored. The tag keeps a manifest signature from ever being taken for a checkpoint's
/// (whose signed bytes start `keyturn-checkpoint-v1`), and the other way round.
pub const SIGNED_TAG: &[u8] = b"keyturn-evidence-manifest-v1\n";

/// The bytes a manifest's signature covers.
pub fn signed_bytes(manifest: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SIGNED_TAG.len() + manifest.len());
    bytes.extend_from_slice(SIGNED_TAG);
    bytes.extend_from_slice(manifest);
    bytes
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the zip {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{path} already holds a file of the package named {name}")]
    Duplicate { path: PathBuf, name: String },
    #[error("cannot sign the manifest: {0}")]
    Sign(String),
}

/// One file of the package as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    /// Data rows, for CSV populations and line-per-record files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// The manifest: what the package is, the period it covers and every file's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    pub period: ManifestPeriod,
    /// Where the evidence was read (a data directory, or tables in Azure).
    pub source: String,
    pub keyturn_version: String,
    pub files: Vec<ManifestFile>,
    /// What a reader must know about the package's content (limits of what it shows).
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPeriod {
    /// The period's first instant (RFC 3339, UTC), included.
    pub from: String,
    /// The period's end (RFC 3339, UTC), excluded.
    pub to: String,
    /// The last day included (YYYY-MM-DD, UTC) when the period is made of whole days:
    /// the day before `to`, as the reports name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_day: Option<String>,
}

/// The manifest's signature, as stored in [`MANIFEST_SIGNATURE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    pub algorithm: SignatureAlgorithm,
    /// The key's name where it lives (a Key Vault key URL with its version, or the local
    /// key's fingerprint).
    pub key_id: String,
    /// The fingerprint of the public key that checks it (`sha256:` and 16 hex digits).
    pub public_key: String,
    /// Unpadded base64url.
    pub signature: String,
}

/// A package being written. Files are written one after the other: [`Package::begin`],
/// then `write` (the package is an [`io::Write`]), then [`Package::end`].
pub struct Package {
    out: PathBuf,
    partial: PathBuf,
    zip: Option<ZipWriter<BufWriter<File>>>,
    current: Option<Current>,
    files: Vec<ManifestFile>,
}

struct Current {
    path: String,
    hasher: Sha256,
    bytes: u64,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("out", &self.out)
            .field("files", &self.files.len())
            .finish()
    }
}

impl Package {
    /// Starts a package that will be `out` once finished, written meanwhile to a hidden
    /// file beside it (same directory, so the final rename is atomic). An existing
    /// partial file of an export that crashed is replaced.
    pub fn create(out: &Path) -> Result<Self, ContainerError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "evidence.zip".to_owned());
        let partial = out.with_file_name(format!(".{name}.partial"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|source| ContainerError::Io {
                path: partial.clone(),
                source,
            })?;
        Ok(Self {
            out: out.to_path_buf(),
            partial,
            zip: Some(ZipWriter::new(BufWriter::new(file))),
            current: None,
            files: Vec::new(),
        })
    }

    /// Starts the next file; the one before must have ended.
    pub fn begin(&mut self, path: &str) -> Result<(), ContainerError> {
        if self.files.iter().any(|f| f.path == path)
            || [MANIFEST, MANIFEST_SIGNATURE].contains(&path)
        {
            return Err(ContainerError::Duplicate {
                path: self.out.clone(),
                name: path.to_owned(),
            });
        }
        // Large files need ZIP64 fields; a whole period's audit extract may pass 4 GiB.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(true);
        let partial = self.partial.clone();
        self.zip_mut()?
            .start_file(path, options)
            .map_err(|source| ContainerError::Zip {
                path: partial,
                source,
            })?;
        self.current = Some(Current {
            path: path.to_owned(),
            hasher: Sha256::new(),
            bytes: 0,
        });
        Ok(())
    }

    /// Ends the current file, listing it in the manifest with `rows` if it has rows.
    pub fn end(&mut self, rows: Option<u64>) -> Result<(), ContainerError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        self.files.push(ManifestFile {
            path: current.path,
            sha256: hex::encode(current.hasher.finalize()),
            bytes: current.bytes,
            rows,
        });
        Ok(())
    }

    /// Writes a whole small file.
    pub fn add(&mut self, path: &str, contents: &[u8]) -> Result<(), ContainerError> {
        self.begin(path)?;
        self.write_all(contents)
            .map_err(|source| ContainerError::Io {
                path: self.partial.clone(),
                source,
            })?;
        self.end(None)
    }

    /// The files written so far, as the manifest will list them.
    pub fn files(&self) -> &[ManifestFile] {
        &self.files
    }

    /// Writes the manifest (with every file written so far) and its signature by
    /// `signer`, closes the zip and renames it into place. Returns the manifest.
    pub async fn finish(
        mut self,
        mut manifest: Manifest,
        signer: &dyn CheckpointSigner,
    ) -> Result<Manifest, ContainerError> {
        self.end(None)?;
        manifest.files = self.files.clone();
        let bytes = serde_json::to_vec_pretty(&manifest)
            .expect("invariant: a manifest of strings and numbers always encodes");
        let signature = signer
            .sign(&signed_bytes(&bytes))
            .await
            .map_err(|e| ContainerError::Sign(e.to_string()))?;
        let public = signer
            .public_key()
            .await
            .map_err(|e| ContainerError::Sign(e.to_string()))?;
        let stored = ManifestSignature {
            algorithm: signature.algorithm,
            key_id: signature.key_id,
            public_key: public.fingerprint(),
            signature: BASE64URL.encode(&signature.bytes),
        };
        let stored = serde_json::to_vec_pretty(&stored)
            .expect("invariant: a signature of strings always encodes");
        for (path, contents) in [(MANIFEST, &bytes), (MANIFEST_SIGNATURE, &stored)] {
            self.raw_add(path, contents)?;
        }
        let zip = self
            .zip
            .take()
            .expect("invariant: the zip is open until finished");
        // From here on Drop no longer sees the zip: remove the partial file on any error.
        let closed = close(zip, &self.partial, &self.out);
        if closed.is_err() {
            let _ = fs::remove_file(&self.partial);
        }
        closed?;
        Ok(manifest)
    }

    fn raw_add(&mut self, path: &str, contents: &[u8]) -> Result<(), ContainerError> {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let partial = self.partial.clone();
        let zip = self.zip_mut()?;
        zip.start_file(path, options)
            .map_err(|source| ContainerError::Zip {
                path: partial.clone(),
                source,
            })?;
        zip.write_all(contents)
            .map_err(|source| ContainerError::Io {
                path: partial,
                source,
            })
    }

    fn zip_mut(&mut self) -> Result<&mut ZipWriter<BufWriter<File>>, ContainerError> {
        let partial = self.partial.clone();
        self.zip.as_mut().ok_or_else(|| ContainerError::Io {
            path: partial,
            source: io::Error::other("the package is already finished"),
        })
    }
}

/// Closes the zip, flushes it to disk and renames it from `partial` to `out`.
fn close(
    zip: ZipWriter<BufWriter<File>>,
    partial: &Path,
    out: &Path,
) -> Result<(), ContainerError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    let mut file = zip.finish().map_err(|source| ContainerError::Zip {
        path: partial.to_path_buf(),
        source,
    })?;
    file.flush().map_err(io_error(partial))?;
    let file = file.into_inner().map_err(|e| ContainerError::Io {
        path: partial.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_error(partial))?;
    fs::rename(partial, out).map_err(io_error(out))
}

impl Write for Package {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let zip = self
            .zip
            .as_mut()
            .ok_or_else(|| io::Error::other("the package is already finished"))?;
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no file of the package is open"));
        };
        let written = zip.write(buf)?;
        current.hasher.update(&buf[..written]);
        current.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.zip.as_mut() {
            Some(zip) => zip.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Package {
    /// A package dropped before [`Package::finish`] renamed it (an error, a panic) takes
    /// its partial file with it: no half-written zip is ever left under any name.
    fn drop(&mut self) {
        if let Some(zip) = self.zip.take() {
            drop(zip);
            let _ = fs::remove_file(&self.partial);
        }
    }
}

//! The deployable zip: `host.json`, one folder per function with its `function.json`, and
//! the handler binary where `host.json`'s `defaultExecutablePath` expects it.
//!
//! The zip's layout is the Functions app root: the host reads `host.json` and every
//! `<Function>/function.json` beside it (the repository keeps them under
//! `function-definitions/` so the source tree stays tidy).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Function definitions larger than this are not function definitions.
const MAX_DEFINITION_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// What went into a package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageManifest {
    pub out: PathBuf,
    pub executable: String,
    pub functions: Vec<String>,
}

/// Reads `host.json` and returns `customHandler.description.defaultExecutablePath`.
pub(crate) fn executable_path(host_json: &Path) -> Result<String, PackageError> {
    let text = read_small(host_json)?;
    let invalid = |problem: &str| PackageError::Invalid {
        path: host_json.to_path_buf(),
        problem: problem.to_string(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(&format!("not JSON ({e})")))?;
    let path = value
        .pointer("/customHandler/description/defaultExecutablePath")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid("customHandler.description.defaultExecutablePath is missing"))?;
    let safe = !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "..");
    if !safe {
        return Err(invalid(
            "defaultExecutablePath must be a relative path inside the app",
        ));
    }
    Ok(path.to_string())
}

/// The function folders under `definitions`, sorted, each holding a `function.json`
/// that is a JSON object with a `bindings` array.
pub(crate) fn function_definitions(
    definitions: &Path,
) -> Result<Vec<(String, PathBuf)>, PackageError> {
    let entries = fs::read_dir(definitions).map_err(|source| PackageError::Read {
        path: definitions.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PackageError::Read {
            path: definitions.to_path_buf(),
            source,
        })?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = entry.path().join("function.json");
        let text = read_small(&file)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PackageError::Invalid {
                path: file.clone(),
                problem: format!("not JSON ({e})"),
            })?;
        if !value.get("bindings").is_some_and(|b| b.is_array()) {
            return Err(PackageError::Invalid {
                path: file,
                problem: "has no bindings array".into(),
            });
        }
        found.push((name, file));
    }
    found.sort();
    if found.is_empty() {
        return Err(PackageError::Invalid {
            path: definitions.to_path_buf(),
            problem: "holds no function definitions".into(),
        });
    }
    Ok(found)
}

/// Builds the zip at `out` from the project root `root` and the handler `binary`.
pub fn build(root: &Path, binary: &Path, out: &Path) -> Result<PackageManifest, PackageError> {
    let host_json = root.join("host.json");
    let executable = executable_path(&host_json)?;
    let functions = function_definitions(&root.join("function-definitions"))?;

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| PackageError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let file = fs::File::create(out).map_err(|source| PackageError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut zip = ZipWriter::new(file);
    let text = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let exe = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o755);

    zip.start_file("host.json", text)?;
    zip.write_all(read_small(&host_json)?.as_bytes())
        .map_err(|source| write_err(out, source))?;
    for (name, path) in &functions {
        zip.start_file(format!("{name}/function.json"), text)?;
        zip.write_all(read_small(path)?.as_bytes())
            .map_err(|source| write_err(out, source))?;
    }
    zip.start_file(executable.as_str(), exe)?;
    let mut input = fs::File::open(binary).map_err(|source| PackageError::Read {
        path: binary.to_path_buf(),
        source,
    })?;
    io::copy(&mut input, &mut zip).map_err(|source| write_err(out, source))?;
    zip.finish()?;

    Ok(PackageManifest {
        out: out.to_path_buf(),
        executable,
        functions: functions.into_iter().map(|(name, _)| name).collect(),
    })
}

fn write_err(out: &Path, source: io::Error) -> PackageError {
    PackageError::Write {
        path: out.to_path_buf(),
        source,
    }
}

fn read_small(path: &Path) -> Result<String, PackageError> {
    let file = fs::File::open(path).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_DEFINITION_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| PackageError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_DEFINITION_BYTES {
        return Err(PackageError::Invalid {
            path: path.to_path_buf(),
            problem: format!("larger than {MAX_DEFINITION_BYTES} bytes"),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_path_must_stay_inside_the_app() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, ok) in [
            ("keyturn", true),
            ("bin/keyturn", true),
            ("/usr/bin/keyturn", false),
            ("../keyturn", false),
            ("", false),
        ] {
            let host = dir.path().join("host.json");
            let json = serde_json::json!({"customHandler": {"description": {"defaultExecutablePath": path}}});
            fs::write(&host, json.to_string()).expect("write");
            assert_eq!(executable_path(&host).is_ok(), ok, "{path}");
        }
    }

    #[test]
    fn a_definition_without_bindings_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("Broken")).expect("mkdir");
        fs::write(dir.path().join("Broken/function.json"), "{}").expect("write");
        let err = function_definitions(dir.path()).expect_err("no bindings");
        assert!(err.to_string().contains("no bindings array"), "{err}");
    }
}

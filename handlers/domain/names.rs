//! Key Vault identifiers that parse.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VaultUrl(String);

impl VaultUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| e.to_string())?;
        if u.scheme() != "https" {
            return Err("must be https".into());
        }
        Ok(Self(u.to_string()))
    }
}

impl fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

//! `keyturn directory policy`: the local directory's app management policies, so local
//! mode can show what a tenant's `passwordLifetime` restriction does: `keyturn plan` shows
//! the capped expiry and a rotation asks for no more than the policy allows (and the local
//! directory, like Graph, refuses a longer-lived password).

use std::path::Path;

use chrono::TimeDelta;
use serde::Serialize;

use crate::adapters::local::directory::LocalPolicy;
use crate::domain::ids::AppId;
use crate::domain::secret::SecretValue;
use crate::ports::directory::CredentialIssuer;
use crate::rotation::tags::MAX_POLICY_DAYS;

use super::vault_cli::VaultCliError;

/// The display name a policy gets when none is given.
const DEFAULT_POLICY_NAME: &str = "local password lifetime policy";

/// What to change: nothing (the policies are listed), a limit, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChange {
    Show,
    Limit { days: u32, name: Option<String> },
    Clear,
}

/// Every policy of the local directory after the change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    pub policies: Vec<LocalPolicy>,
}

/// Applies `change` to the policy of the application `app` (by appId), or to the tenant's
/// default when `app` is `None`, and lists the policies.
pub async fn policy(
    data_dir: &Path,
    key_setting: Option<&SecretValue>,
    app: Option<&str>,
    change: PolicyChange,
) -> Result<Policies, VaultCliError> {
    let local = super::vault_cli::open(data_dir, key_setting).await?;
    let directory = &local.directory;
    let failed = |e: crate::ports::PortError| VaultCliError::Vault(e.to_string());
    let application = match app {
        None => None,
        Some(text) => {
            let app_id = AppId::parse(text).map_err(|_| {
                VaultCliError::Usage(format!("--app `{text}` is not an appId (a GUID)"))
            })?;
            Some(
                directory
                    .application(&app_id)
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| {
                        VaultCliError::Usage(format!(
                            "no application has appId {app_id} in the local directory"
                        ))
                    })?,
            )
        }
    };
    match change {
        PolicyChange::Show => {}
        PolicyChange::Limit { days, name } => {
            if days == 0 || days > MAX_POLICY_DAYS {
                return Err(VaultCliError::Usage(format!(
                    "--max-password-days must be between 1 and {MAX_POLICY_DAYS}"
                )));
            }
            let name = name.unwrap_or_else(|| DEFAULT_POLICY_NAME.to_owned());
            directory
                .set_policy(
                    application.as_ref(),
                    Some((name, TimeDelta::days(i64::from(days)))),
                )
                .await
                .map_err(failed)?;
        }
        PolicyChange::Clear => directory
            .set_policy(application.as_ref(), None)
            .await
            .map_err(failed)?,
    }
    Ok(Policies {
        policies: directory.policies().await.map_err(failed)?,
    })
}

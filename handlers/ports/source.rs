//! Where the secret endpoint reads a secret from (Key Vault, app settings, Table storage,
//! the embedded local vault).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::ports::PortError;
use crate::ports::vault::Secret;

/// A secret as the endpoint serves it.
#[derive(Debug, Clone)]
pub struct SourcedSecret {
    pub value: SecretValue,
    pub version: Option<String>,
    pub content_type: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

impl SourcedSecret {
    /// A vault's secret as the endpoint serves it: `None` when it may not be served at
    /// `now` (see [`servable`]).
    pub(crate) fn from_vault(secret: Secret, now: DateTime<Utc>) -> Option<Self> {
        let properties = &secret.properties;
        if !servable(
            properties.enabled,
            properties.not_before,
            properties.expires,
            now,
        ) {
            return None;
        }
        Some(Self {
            version: properties.id.version().map(|v| v.as_str().to_owned()),
            content_type: properties.content_type.clone(),
            expires: properties.expires,
            value: secret.value,
        })
    }
}

/// Whether a stored secret may be served at `now`: it is enabled, has started (no
/// notBefore, or one at or before `now`) and has not expired (no expiry, or one after
/// `now`). Key Vault's own rule for a usable secret (its `nbf` and `exp` attributes),
/// applied by every source, so a device never receives a dead secret.
pub(crate) fn servable(
    enabled: bool,
    not_before: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    enabled && not_before.is_none_or(|at| at <= now) && expires.is_none_or(|at| now < at)
}

#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The current value of `name`; `None` when this source has no such secret (or it is
    /// disabled, not yet valid or expired: a device must not receive a dead secret).
    async fn fetch(
        &self,
        name: &ObjectName,
        now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError>;
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn a_secret_is_servable_from_its_not_before_until_just_before_it_expires() {
        let now = DateTime::UNIX_EPOCH + TimeDelta::days(20_000);
        let second = TimeDelta::seconds(1);
        let cases = [
            (true, None, None, true),
            (false, None, None, false),
            (true, Some(now), None, true),
            (true, Some(now + second), None, false),
            (true, None, Some(now + second), true),
            (true, None, Some(now), false),
            (true, None, Some(now - second), false),
            (true, Some(now - second), Some(now + second), true),
            (false, Some(now - second), Some(now + second), false),
        ];
        for (enabled, not_before, expires, expected) in cases {
            assert_eq!(
                servable(enabled, not_before, expires, now),
                expected,
                "enabled={enabled} not_before={not_before:?} expires={expires:?}"
            );
        }
    }
}

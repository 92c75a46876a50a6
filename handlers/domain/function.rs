//! The functions keyturn serves: a closed set, named as in `function-definitions/`.

use std::fmt;

use serde::{Serialize, Serializer};

/// One of the eight functions, by its folder in `function-definitions/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    KeyVaultEvents,
    ExpirySweep,
    RotationWorker,
    SecretEndpoint,
    DiscoverySweep,
    DiscoveryWorker,
    AlertSweep,
    EvidenceExport,
}

impl Function {
    /// Every function, in the order the host lists them.
    pub(crate) const ALL: [Function; 8] = [
        Self::KeyVaultEvents,
        Self::ExpirySweep,
        Self::RotationWorker,
        Self::SecretEndpoint,
        Self::DiscoverySweep,
        Self::DiscoveryWorker,
        Self::AlertSweep,
        Self::EvidenceExport,
    ];

    /// The functions whose presence makes rotation settings required. Discovery, alerts
    /// and the scheduled evidence export run beside rotation (the rotator app), which
    /// keeps the inventory.
    pub(crate) const ROTATION: [Function; 7] = [
        Self::KeyVaultEvents,
        Self::ExpirySweep,
        Self::RotationWorker,
        Self::DiscoverySweep,
        Self::DiscoveryWorker,
        Self::AlertSweep,
        Self::EvidenceExport,
    ];

    /// The name the host knows it by (its folder, its route, `AzureWebJobs.<name>.Disabled`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::KeyVaultEvents => "KeyVaultEvents",
            Self::ExpirySweep => "ExpirySweep",
            Self::RotationWorker => "RotationWorker",
            Self::SecretEndpoint => "SecretEndpoint",
            Self::DiscoverySweep => "DiscoverySweep",
            Self::DiscoveryWorker => "DiscoveryWorker",
            Self::AlertSweep => "AlertSweep",
            Self::EvidenceExport => "EvidenceExport",
        }
    }

    /// The function named `name`, if keyturn serves one by that name.
    #[cfg(test)]
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether this function plans or runs rotations.
    pub(crate) fn rotates(self) -> bool {
        Self::ROTATION.contains(&self)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Function {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_parses_from_its_own_name_and_nothing_else() {
        for function in Function::ALL {
            assert_eq!(Function::parse(function.name()), Some(function));
            assert_eq!(function.to_string(), function.name());
        }
        assert_eq!(Function::parse("keyvaultevents"), None);
        assert_eq!(Function::parse("Timer"), None);
        assert!(!Function::SecretEndpoint.rotates());
        assert!(Function::ROTATION.iter().all(|f| f.rotates()));
    }
}

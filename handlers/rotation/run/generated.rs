//! `generated`: a random value keyturn draws itself from the operating system's CSPRNG,
//! written as a new version. Nothing outside the vault changes, so there is nothing to
//! prove or retire: the one write is the whole rotation.

use chrono::SubsecRound;
use rand::rngs::OsRng;
use rand::seq::SliceRandom;

use crate::audit::Action as AuditAction;
use crate::domain::names::ObjectId;
use crate::domain::secret::SecretValue;
use crate::ports::PortError;
use crate::ports::audit::Outcome;
use crate::ports::vault::{NewSecretVersion, SecretProperties};
use crate::rotation::RotationError;
use crate::rotation::plan::audit_object;
use crate::rotation::run::{RunOutcome, Step};
use crate::rotation::tags::{self, Alphabet, ManagedObject, NewBookkeeping};

/// A value of `length` characters drawn uniformly from `alphabet` with the OS CSPRNG
/// (`OsRng`: getrandom(2) on Linux). `choose` draws without modulo bias. The tags refuse a
/// length under [`Alphabet::min_length`]; should one get here all the same, the value is
/// drawn at that minimum, never with fewer than 128 bits.
pub(super) fn generate(length: usize, alphabet: Alphabet) -> SecretValue {
    let length = length.max(alphabet.min_length());
    let characters = alphabet.characters();
    let mut rng = OsRng;
    let value: String = (0..length)
        .filter_map(|_| characters.choose(&mut rng).map(|&b| char::from(b)))
        .collect();
    SecretValue::new(value)
}

pub(super) async fn rotate(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    managed: &ManagedObject,
    length: usize,
    alphabet: Alphabet,
) -> Result<RunOutcome, RotationError> {
    let previous_version = current.id.version().cloned().ok_or_else(|| {
        RotationError::port(
            "reading the secret",
            PortError::invalid("current version without a version id"),
        )
    })?;
    let now = step.engine.clock().now();
    let value = generate(length, alphabet);
    let version = NewSecretVersion {
        content_type: current.content_type.clone(),
        not_before: None,
        expires: Some((now + managed.policy.validity.span()).trunc_subsecs(0)),
        tags: tags::new_version_tags(
            &current.tags,
            &NewBookkeeping {
                key_id: None,
                previous_key_id: None,
                previous_version: &previous_version,
                job_id: step.job.job_id.as_str(),
                rotated_at: now,
            },
        ),
    };
    let stored = step
        .store_secret(
            object,
            object.name(),
            &value,
            version,
            "storing a new version",
        )
        .await?;
    step.record(
        AuditAction::SecretRotated,
        audit_object(&stored.id, None),
        Outcome::Succeeded,
        &format!(
            "{length} {} characters; replaces version {previous_version}",
            alphabet.name()
        ),
    )
    .await?;
    Ok(RunOutcome::Rotated {
        version: stored
            .id
            .version()
            .map(ToString::to_string)
            .unwrap_or_default(),
        key_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_value_has_the_length_and_alphabet_asked_for() {
        for alphabet in [
            Alphabet::Alphanumeric,
            Alphabet::Hex,
            Alphabet::Base64Url,
            Alphabet::AsciiPrintable,
        ] {
            let allowed = alphabet.characters();
            let value = generate(64, alphabet);
            assert_eq!(value.len(), 64);
            assert!(
                value.expose().bytes().all(|b| allowed.contains(&b)),
                "{}",
                alphabet.name()
            );
        }
    }

    #[test]
    fn a_generated_value_never_has_fewer_than_128_bits() {
        for alphabet in [
            Alphabet::Alphanumeric,
            Alphabet::Hex,
            Alphabet::Base64Url,
            Alphabet::AsciiPrintable,
        ] {
            let value = generate(16, alphabet);
            let bits = value.len() as f64 * (alphabet.characters().len() as f64).log2();
            assert!(bits >= 128.0, "{}: {bits} bits", alphabet.name());
        }
    }

    #[test]
    fn two_generated_values_differ() {
        let a = generate(32, Alphabet::Alphanumeric);
        let b = generate(32, Alphabet::Alphanumeric);
        assert_ne!(a.expose(), b.expose());
    }
}

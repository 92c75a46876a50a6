//! Verdicts of the local certificate checks (parsing the presented certificate, the
//! pins, the chain, the device certificate's chain), kept per presented certificate so
//! that a device calling in a loop costs one signature verification per period instead
//! of one per request.
//!
//! A verdict is reused only while it is certain the checks would decide the same way:
//! from the instant it was reached (a clock that moves backwards misses) until the
//! earliest instant anything it depended on changes. That is the earliest notAfter of
//! the presented certificates and of the policies' trust material, the earliest
//! nextUpdate of the CRLs in force, and at most [`MAX_VERDICT_AGE`] later. A CRL refresh
//! makes every verdict reached under the previous CRLs miss. Only acceptances are kept:
//! a refusal is checked again on every request, so nothing a client sends can fill the
//! cache with refusals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::identity::{ClientIdentity, PolicyKind};
use crate::mtls::certificate::ClientCertificate;
use crate::mtls::entra_device::DeviceCertificate;
use crate::mtls::trust::CrlSet;

/// How long a verdict is reused at most, whatever the certificates' validity. It bounds
/// how long a change that keyturn cannot foresee (a trust file replaced on disk) takes
/// to be seen by a caller already accepted, and matches the CRL refresh interval's order
/// of magnitude so that the cache never outlives what a refresh would change.
pub(crate) const MAX_VERDICT_AGE: Duration = Duration::from_secs(5 * 60);

/// How many presented certificates are remembered. An entry is the certificate (about
/// 1-2 KiB) and its parsed fields; 20 000 entries is a few tens of MiB at most and holds
/// a large fleet's devices. Only certificates every local policy accepted get an entry,
/// so the bound is reached by real devices, not by garbage.
pub(crate) const MAX_CACHED_VERDICTS: usize = 20_000;

/// What the local checks decided about one presented certificate.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub leaf: ClientCertificate,
    /// The identity the first accepting policy vouched for.
    pub identity: ClientIdentity,
    /// The local policies that accepted, in evaluation order.
    pub policies: Vec<PolicyKind>,
    /// The entra-device policy's certificate checks, when that policy is configured.
    pub device: Option<DeviceCertificate>,
}

/// The cache key of a presented certificate: a SHA-256 over exactly the bytes the
/// checks read, with the source in front so a header and a TLS chain never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PresentedKey([u8; 32]);

impl PresentedKey {
    /// The key of an `X-ARR-ClientCert` header value.
    pub(crate) fn header(value: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"x-arr-clientcert\0");
        hash.update(value.as_bytes());
        Self(hash.finalize().into())
    }

    /// The key of a TLS peer chain, leaf first; each certificate is length-prefixed.
    pub(crate) fn peer_chain<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"tls-peer-chain\0");
        for der in chain {
            hash.update((der.len() as u64).to_be_bytes());
            hash.update(der);
        }
        Self(hash.finalize().into())
    }
}

struct Entry {
    verdict: Arc<Verdict>,
    reached: DateTime<Utc>,
    until: DateTime<Utc>,
    /// The chain policy's CRLs the verdict was reached under. Held, not compared by
    /// address alone, so a freed set's address cannot be reused by a new one.
    crls: Option<Arc<CrlSet>>,
}

impl Entry {
    fn holds(&self, now: DateTime<Utc>, crls: Option<&Arc<CrlSet>>) -> bool {
        let same_crls = match (&self.crls, crls) {
            (None, None) => true,
            (Some(kept), Some(current)) => Arc::ptr_eq(kept, current),
            _ => false,
        };
        same_crls && self.reached <= now && now < self.until
    }
}

/// Accepted verdicts by presented certificate.
#[derive(Default)]
pub(crate) struct VerdictCache {
    entries: Mutex<HashMap<PresentedKey, Entry>>,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl VerdictCache {
    /// The verdict for `key` if it still holds at `now` under `crls`, the chain
    /// policy's CRLs in force (`None` when no chain policy checks revocation).
    pub(crate) fn get(
        &self,
        key: &PresentedKey,
        now: DateTime<Utc>,
        crls: Option<&Arc<CrlSet>>,
    ) -> Option<Arc<Verdict>> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        entry.holds(now, crls).then(|| entry.verdict.clone())
    }

    /// Keeps `verdict`, reached at `now` under `crls`, until `until` (clamped to
    /// [`MAX_VERDICT_AGE`] from now). A verdict that would expire at once is not kept.
    pub(crate) fn insert(
        &self,
        key: PresentedKey,
        verdict: Arc<Verdict>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        crls: Option<Arc<CrlSet>>,
    ) {
        let longest = chrono::Duration::from_std(MAX_VERDICT_AGE)
            .ok()
            .and_then(|age| now.checked_add_signed(age))
            .unwrap_or(now);
        let until = until.min(longest);
        if until <= now {
            return;
        }
        let entry = Entry {
            verdict,
            reached: now,
            until,
            crls,
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED_VERDICTS && !entries.contains_key(&key) {
            entries.retain(|_, kept| kept.reached <= now && now < kept.until);
            if entries.len() >= MAX_CACHED_VERDICTS {
                entries.clear();
            }
        }
        entries.insert(key, entry);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PresentedKey, Entry>> {
        // Entries are inserted whole: a panic elsewhere cannot leave one half-written,
        // so a poisoned lock is used as is.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use keyturn_testkit::pki;
    use rcgen::CertificateParams;

    fn verdict() -> Arc<Verdict> {
        let params =
            CertificateParams::new(vec!["device.example".to_owned()]).expect("valid params");
        let cert = pki::self_signed(&params);
        let leaf = ClientCertificate::from_der(cert.cert_der).expect("rcgen's DER parses");
        Arc::new(Verdict {
            identity: leaf.clone().into_identity(PolicyKind::TrustedThumbprints),
            leaf,
            policies: vec![PolicyKind::TrustedThumbprints],
            device: None,
        })
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("in range")
    }

    #[test]
    fn a_verdict_holds_from_when_it_was_reached_until_its_bound() {
        let cache = VerdictCache::default();
        let key = PresentedKey::header("abc");
        cache.insert(key, verdict(), at(0), at(60), None);
        assert!(cache.get(&key, at(0), None).is_some());
        assert!(cache.get(&key, at(59), None).is_some());
        assert!(
            cache.get(&key, at(60), None).is_none(),
            "the bound is exclusive"
        );
        assert!(
            cache.get(&key, at(-1), None).is_none(),
            "a clock that went back misses"
        );
    }

    #[test]
    fn a_verdict_never_outlives_the_maximum_age() {
        let cache = VerdictCache::default();
        let key = PresentedKey::header("abc");
        cache.insert(key, verdict(), at(0), at(86_400 * 365), None);
        let age = MAX_VERDICT_AGE.as_secs() as i64;
        assert!(cache.get(&key, at(age - 1), None).is_some());
        assert!(cache.get(&key, at(age), None).is_none());
    }

    #[test]
    fn a_verdict_already_expired_is_not_kept() {
        let cache = VerdictCache::default();
        let key = PresentedKey::header("abc");
        cache.insert(key, verdict(), at(10), at(10), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn new_crls_make_earlier_verdicts_miss() {
        let cache = VerdictCache::default();
        let key = PresentedKey::header("abc");
        let before = Arc::new(CrlSet::empty());
        cache.insert(key, verdict(), at(0), at(60), Some(before.clone()));
        assert!(cache.get(&key, at(1), Some(&before)).is_some());
        let after = Arc::new(CrlSet::empty());
        assert!(cache.get(&key, at(1), Some(&after)).is_none());
        assert!(cache.get(&key, at(1), None).is_none());
    }

    #[test]
    fn a_header_and_a_peer_chain_of_the_same_bytes_have_different_keys() {
        assert_ne!(
            PresentedKey::header("abc"),
            PresentedKey::peer_chain([&b"abc"[..]])
        );
        assert_ne!(
            PresentedKey::peer_chain([&b"ab"[..], &b"c"[..]]),
            PresentedKey::peer_chain([&b"a"[..], &b"bc"[..]]),
            "length prefixes keep certificate boundaries apart"
        );
        assert_eq!(PresentedKey::header("abc"), PresentedKey::header("abc"));
    }

    #[test]
    fn a_full_cache_drops_expired_verdicts_first_and_stays_bounded() {
        let cache = VerdictCache::default();
        let v = verdict();
        for i in 0..MAX_CACHED_VERDICTS {
            let until = if i % 2 == 0 { at(5) } else { at(600) };
            cache.insert(
                PresentedKey::header(&i.to_string()),
                v.clone(),
                at(0),
                until,
                None,
            );
        }
        assert_eq!(cache.len(), MAX_CACHED_VERDICTS);
        let fresh = PresentedKey::header("fresh");
        cache.insert(fresh, v.clone(), at(10), at(60), None);
        assert_eq!(cache.len(), MAX_CACHED_VERDICTS / 2 + 1);
        assert!(cache.get(&fresh, at(11), None).is_some());
        assert!(
            cache
                .get(&PresentedKey::header("1"), at(11), None)
                .is_some()
        );
    }
}

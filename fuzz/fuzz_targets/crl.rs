//! CRLs (PEM or DER) as the chain policy loads them, then used to judge the test CA's
//! leaf and its revoked sibling at a fixed instant.
#![no_main]

use keyturn::mtls::certificate::ClientCertificate;
use keyturn::mtls::trust::CrlSet;
use keyturn_fuzz::{chain_policy, leaf, now, revoked};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(crls) = CrlSet::from_bytes(data, "fuzz") else {
        return;
    };
    let _ = (crls.len(), crls.next_update());
    let policy = chain_policy(crls);
    for der in [leaf(), revoked()] {
        let certificate = ClientCertificate::from_der(der.to_vec()).expect("test PKI parses");
        let _ = policy.validate(&certificate, &[], now());
    }
});

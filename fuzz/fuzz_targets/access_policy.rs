//! The access policy file (`KEYTURN_ACCESS_POLICY`), then a decision for the test leaf.
#![no_main]

use keyturn::access::AccessPolicy;
use keyturn::domain::identity::Authenticated;
use keyturn::domain::identity::PolicyKind;
use keyturn::domain::names::ObjectName;
use keyturn::mtls::certificate::ClientCertificate;
use keyturn_fuzz::leaf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = AccessPolicy::parse(text) else {
        return;
    };
    let _ = policy.check_backends(&["keyvault", "local"]);
    let certificate = ClientCertificate::from_der(leaf().to_vec()).expect("test PKI parses");
    let who = Authenticated {
        identity: certificate.into_identity(PolicyKind::Chain),
        device_id: None,
        policies: vec![PolicyKind::Chain],
    };
    for name in ["db-password", "kiosk-01-token", "a"] {
        let name = ObjectName::parse(name).expect("valid name");
        let _ = policy.authorize(&who, &name);
    }
});

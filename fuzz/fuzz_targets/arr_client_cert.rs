//! The `X-ARR-ClientCert` header and a TLS peer chain, decoded and judged by every local
//! certificate policy (pin, chain to the test CA with its CRL) at a fixed instant.
#![no_main]

use keyturn::mtls::certificate::ClientCertificate;
use keyturn::mtls::header::parse_arr_client_cert;
use keyturn::mtls::policies::Presented;
use keyturn_fuzz::{block_on, now, policies};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // The header as the router hands it over: visible ASCII, else a stand-in that
        // cannot be base64.
        let value = std::str::from_utf8(rest).unwrap_or("\u{FFFD}");
        if let Ok(certificate) = parse_arr_client_cert(value) {
            let _ = certificate.thumbprint();
        }
        let first = block_on(policies().authenticate(Presented::ArrHeader(value), now()));
        // A second look answers from the verdict cache; it must agree.
        let second = block_on(policies().authenticate(Presented::ArrHeader(value), now()));
        assert_eq!(first.is_ok(), second.is_ok());
    } else {
        // A peer chain: DER certificates, each after its length (two bytes, big-endian).
        let mut chain = Vec::new();
        let mut rest = rest;
        while let [high, low, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
            chain.push(CertificateDer::from(tail[..len].to_vec()));
            rest = &tail[len..];
        }
        if let Some(first) = chain.first() {
            let _ = ClientCertificate::from_der(first.to_vec());
        }
        let _ = block_on(policies().authenticate(Presented::PeerChain(&chain), now()));
    }
});

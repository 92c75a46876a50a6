//! What `keyturn audit verify` and `keyturn evidence verify` read from outside: stored
//! checkpoint lines, a public key file (a JSON Web Key, a key set or PEM), and an
//! evidence package's audit extract (its entries, a NUL, its checkpoints, a NUL, the
//! public key), checked with that key when it reads.
#![no_main]

use keyturn::evidence::extract::verify_extract;
use keyturn::ports::checkpoint::{PublicKey, SignedCheckpoint, parse_public_keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |byte| *byte == 0);
    let entries = parts.next().unwrap_or_default();
    let checkpoints = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();

    // Every line read as a checkpoint: one that reads writes back to a line that reads
    // the same, and holds a head for each link.
    for line in String::from_utf8_lossy(data).lines() {
        if let Ok(signed) = SignedCheckpoint::from_line(line) {
            let again = SignedCheckpoint::from_line(&signed.to_line())
                .expect("a written checkpoint line reads back");
            assert_eq!(again, signed);
            assert_eq!(
                signed.checkpoint.links().count(),
                signed.checkpoint.heads.len()
            );
            let _ = signed.checkpoint.signed_bytes();
        }
    }

    let keys: Vec<PublicKey> = match parse_public_keys(&String::from_utf8_lossy(key)) {
        Ok(keys) => keys.into_iter().map(|named| named.key).collect(),
        Err(error) => {
            let _ = error.to_string();
            vec![PublicKey::Ed25519([0; 32])]
        }
    };
    if let Ok(report) = verify_extract(&mut &entries[..], &mut &checkpoints[..], &keys) {
        let lines = checkpoints.split(|byte| *byte == b'\n').count() as u64;
        assert!(report.checkpoints_checked <= lines);
        assert_eq!(report.is_intact(), report.problems.is_empty());
    }
});

//! Key Vault events as Event Grid delivers them (Event Grid and CloudEvents schemas), in
//! the host envelope or bare, and the subscription validation handshake.
#![no_main]

use keyturn::events::keyvault::KeyVaultEvent;
use keyturn::events::validation::SubscriptionValidation;
use keyturn::functions::key_vault_events::{BINDING, expiry_notice};
use keyturn::host::envelope::InvocationRequest;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn exercise(value: &Value) {
    let _ =
        SubscriptionValidation::from_delivery(value).map(|v| v.map(|v| v.validation_response()));
    let Ok(events) = KeyVaultEvent::parse_all(value) else {
        return;
    };
    for event in &events {
        let _ = (
            event.kind(),
            event.vault(),
            event.object_id(),
            event.version(),
        );
        let _ = (
            event.expires(),
            event.rotation_trigger(),
            event.triggers_rotation(),
        );
        let _ = expiry_notice(event);
    }
}

fuzz_target!(|data: &[u8]| {
    // The body as the Functions host wraps it, or bare as Event Grid posts it.
    if let Ok(request) = InvocationRequest::parse(data) {
        if let Ok(value) = request.binding_value(BINDING) {
            exercise(&value);
        }
    } else if let Ok(value) = serde_json::from_slice::<Value>(data) {
        exercise(&value);
    }
});

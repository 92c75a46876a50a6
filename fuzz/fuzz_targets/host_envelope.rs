//! The custom-handler invocation envelope the Functions host posts, decoded the way the
//! router decodes it: each function's binding, the timer payload and the Service Bus
//! message metadata.
#![no_main]

use keyturn::events::servicebus::ServiceBusMessage;
use keyturn::events::timer::TimerInfo;
use keyturn::functions::{expiry_sweep, key_vault_events, rotation_worker};
use keyturn::host::envelope::InvocationRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = InvocationRequest::parse(data) else {
        return;
    };
    let _ = request.binding_value(key_vault_events::BINDING);
    let _ = request.binding_value(rotation_worker::BINDING);
    if let Ok(value) = request.binding_value(expiry_sweep::BINDING) {
        let _ = TimerInfo::from_value(&value);
    }
    let _ = ServiceBusMessage::from_metadata(request.metadata());
    // Round trip: what was read, written out and read again, is what was read.
    let written = serde_json::to_vec(&request).expect("a request serialises");
    let again = InvocationRequest::parse(&written).expect("a written request parses");
    assert_eq!(again, request);
});

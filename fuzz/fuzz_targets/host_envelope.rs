//! The custom-handler invocation envelope the Functions host posts, and the decoding of
//! its bindings and metadata (timer payloads included).
#![no_main]

use keyturn::events::timer::TimerInfo;
use keyturn::host::envelope::InvocationRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = InvocationRequest::parse(data) else {
        return;
    };
    let _ = request.sys();
    let _ = request.first_binding_value();
    for key in request.metadata().keys() {
        let _ = request.metadata_str(key);
        let _ = request.metadata_u64(key);
        let _ = request.metadata_time(key);
    }
    for name in request.data().keys() {
        if let Ok(value) = request.binding_value(name) {
            let _ = TimerInfo::from_value(&value);
        }
        let _ = request.binding::<serde_json::Value>(name);
    }
    // Round trip: what was read, written out and read again, is what was read.
    let written = serde_json::to_vec(&request).expect("a request serialises");
    let again = InvocationRequest::parse(&written).expect("a written request parses");
    assert_eq!(again, request);
});

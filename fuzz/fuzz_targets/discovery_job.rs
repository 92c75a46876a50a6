//! A discovery job as the DiscoveryWorker receives it: the Service Bus trigger's
//! envelope, the job binding and the job message itself.
#![no_main]

use keyturn::discovery::job::DiscoveryJob;
use keyturn::functions::discovery_worker::BINDING;
use keyturn::host::envelope::InvocationRequest;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Reads a job as the worker does, and checks that a job read is queued and read back
/// unchanged, under the same message id.
fn job(body: &[u8]) {
    let Ok(job) = DiscoveryJob::decode(body) else {
        return;
    };
    let message = job.to_message(None);
    assert_eq!(DiscoveryJob::decode(&message.body).as_ref(), Ok(&job));
    assert_eq!(message.message_id.len(), 32);
    assert!(message.message_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(message.message_id, job.message_id());
    assert_eq!(
        DiscoveryJob::decode(&message.body).map(|j| j.message_id()),
        Ok(message.message_id.clone())
    );
}

fuzz_target!(|data: &[u8]| {
    job(data);
    let Ok(request) = InvocationRequest::parse(data) else {
        return;
    };
    if let Ok(value) = request.binding_value(BINDING) {
        // The trigger binds the body as JSON or as its text.
        match value {
            Value::String(text) => job(text.as_bytes()),
            other => job(other.to_string().as_bytes()),
        }
    }
});

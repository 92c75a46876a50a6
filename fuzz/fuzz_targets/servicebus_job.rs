//! A rotation job as the Service Bus trigger delivers it: the envelope, the job binding,
//! the message metadata and the job itself.
#![no_main]

use keyturn::events::servicebus::ServiceBusMessage;
use keyturn::functions::rotation_worker::BINDING;
use keyturn::host::envelope::InvocationRequest;
use keyturn::rotation::job::{Delivery, Job};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Reads a job as the worker does, and checks that a job read is written and read back
/// unchanged.
fn job(value: &Value) {
    let delivery = Delivery::decode(value);
    if let Ok(job) = Job::from_json(value) {
        // The receipt is recorded under the id the delivery names: the job's own.
        let delivery = delivery.expect("a job that reads is a delivery");
        assert_eq!(delivery.job_id, job.job_id.as_str());
        let written = serde_json::to_value(&job).expect("a job serialises");
        assert_eq!(Job::from_json(&written).as_ref(), Ok(&job));
        let message = job.message(None);
        let body: Value = serde_json::from_slice(&message.body).expect("the body is JSON");
        assert_eq!(Job::from_json(&body).as_ref(), Ok(&job));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        job(&value);
    }
    let Ok(request) = InvocationRequest::parse(data) else {
        return;
    };
    // The message metadata as the router reads it.
    let _ = ServiceBusMessage::from_metadata(request.metadata()).is_ok();
    if let Ok(value) = request.binding_value(BINDING) {
        job(&value);
    }
});

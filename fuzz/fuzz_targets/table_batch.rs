//! The answer to a Table entity group transaction (a `multipart/mixed` body).
#![no_main]

use azure_core::http::headers::{CONTENT_TYPE, Headers};
use keyturn::adapters::azure::client::table::batch_outcome;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = Headers::new();
    headers.insert(CONTENT_TYPE, "multipart/mixed; boundary=batchresponse_fuzz");
    for operations in [1, 2, 100] {
        let _ = batch_outcome(&headers, data, operations);
    }
});

//! Microsoft Graph answers, decoded by the Graph client: application lookup, password
//! credentials, addPassword and device lookup.
#![no_main]

use azure_core::http::StatusCode;
use chrono::{TimeZone, Utc};
use keyturn::adapters::azure::graph::{DEFAULT_GRAPH_ENDPOINT, GraphClient};
use keyturn::domain::ids::{AppId, DeviceId, DirectoryObjectId};
use keyturn::ports::directory::{CredentialIssuer, DeviceDirectory};
use keyturn_fuzz::{FuzzedAnswer, block_on};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;
use url::Url;

const GUID: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";

fn client(data: &[u8]) -> GraphClient {
    let answer = FuzzedAnswer::new(data, (StatusCode::NotFound, "{}"));
    let endpoint = Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("valid");
    GraphClient::new(&endpoint, FixedToken::new(), Some(answer.options())).expect("valid client")
}

fuzz_target!(|data: &[u8]| {
    let object = DirectoryObjectId::parse(GUID).expect("valid");
    block_on(async {
        let _ = client(data)
            .application(&AppId::parse(GUID).expect("valid"))
            .await;
        let _ = client(data).password_credentials(&object).await;
        let end = Utc.with_ymd_and_hms(2027, 6, 1, 0, 0, 0).unwrap();
        let _ = client(data).add_password(&object, "keyturn", end).await;
        let _ = client(data)
            .device(&DeviceId::parse(GUID).expect("valid"))
            .await;
    });
});

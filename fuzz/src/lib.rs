//! What the fuzz targets share: the fixed test PKI (`pki/`, see `pki/README.md`), the
//! fixed clock the certificate policies are judged at, a runtime for the async clients and
//! a transport that answers a client's first request with the fuzzer's bytes.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use azure_core::http::headers::Headers;
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport,
};
use chrono::{DateTime, TimeZone, Utc};
use keyturn::mtls::certificate::ClientCertificate;
use keyturn::mtls::chain::{ChainOptions, ChainPolicy};
use keyturn::mtls::policies::CertificatePolicies;
use keyturn::mtls::thumbprints::TrustedThumbprints;
use keyturn::mtls::trust::{CrlSet, certificates_from_bytes};
use rustls_pki_types::CertificateDer;

/// The test CA (ECDSA P-256, valid 2026-12-06 to 2036-12-03).
pub const CA_PEM: &[u8] = include_bytes!("../pki/ca.pem");
/// A client certificate the CA issued (`CN=kiosk-01, O=Contoso`, clientAuth).
pub const LEAF_PEM: &[u8] = include_bytes!("../pki/leaf.pem");
/// A client certificate the CA issued and revoked (`CN=kiosk-02, O=Contoso`).
pub const REVOKED_PEM: &[u8] = include_bytes!("../pki/revoked.pem");
/// The CA's CRL, revoking `REVOKED_PEM` (next update 2036).
pub const CRL_PEM: &[u8] = include_bytes!("../pki/crl.pem");

/// The instant every certificate decision is made at: inside every validity period of
/// the test PKI, so a decision does not change with the day the fuzzer runs.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap()
}

fn one_certificate(pem: &[u8]) -> CertificateDer<'static> {
    certificates_from_bytes(pem, "fuzz pki")
        .expect("the test PKI parses")
        .remove(0)
}

pub fn ca() -> CertificateDer<'static> {
    one_certificate(CA_PEM)
}

pub fn leaf() -> CertificateDer<'static> {
    one_certificate(LEAF_PEM)
}

pub fn revoked() -> CertificateDer<'static> {
    one_certificate(REVOKED_PEM)
}

/// The chain policy of the test CA with `crls` (default options: revocation checked).
pub fn chain_policy(crls: CrlSet) -> ChainPolicy {
    ChainPolicy::new(&[ca()], Vec::new(), crls, ChainOptions::default())
        .expect("the test CA is a root")
}

/// Every local policy the endpoint runs: the `X-ARR-ClientCert` header trusted, a pin on
/// the leaf's SHA-256 thumbprint, and the chain to the test CA with its CRL. Built once: the
/// verdict cache it carries is part of what is exercised.
pub fn policies() -> &'static CertificatePolicies {
    static POLICIES: OnceLock<CertificatePolicies> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let pin = ClientCertificate::from_der(leaf().to_vec())
            .expect("the test leaf parses")
            .thumbprint()
            .to_string();
        let crls = CrlSet::from_bytes(CRL_PEM, "fuzz pki").expect("the test CRL parses");
        CertificatePolicies::none()
            .trust_arr_header(true)
            .with_thumbprints(TrustedThumbprints::parse([pin.as_str()]).expect("a valid pin"))
            .with_chain(Arc::new(chain_policy(crls)))
    })
}

/// Runs a future to completion on one current-thread runtime shared by every run.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
        })
        .block_on(future)
}

/// A transport whose first answer is `200 OK` with the fuzzer's body (JSON content type);
/// later requests (a next page, a second step) get `later`, so no call can loop.
#[derive(Debug)]
pub struct FuzzedAnswer {
    first: Mutex<Option<Vec<u8>>>,
    later: (StatusCode, &'static str),
}

impl FuzzedAnswer {
    pub fn new(body: &[u8], later: (StatusCode, &'static str)) -> Arc<Self> {
        Arc::new(Self {
            first: Mutex::new(Some(body.to_vec())),
            later,
        })
    }

    /// Client options sending through this transport, retries off.
    pub fn options(self: &Arc<Self>) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(self.clone())),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        }
    }
}

#[async_trait]
impl HttpClient for FuzzedAnswer {
    async fn execute_request(&self, _request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let first = self.first.lock().expect("fuzz lock").take();
        let (status, body) = match first {
            Some(body) => (StatusCode::Ok, body),
            None => (self.later.0, self.later.1.as_bytes().to_vec()),
        };
        let mut headers = Headers::new();
        headers.insert("content-type", "application/json; charset=utf-8");
        Ok(AsyncRawResponse::from_bytes(status, headers, body))
    }
}

/// A transport answering each request with the next answer of a script (status and
/// body, JSON content type), then `later` for every request past it, and keeping every
/// request's method, URL and body: a written entity can then be answered back.
#[derive(Debug)]
pub struct Scripted {
    answers: Mutex<std::collections::VecDeque<(StatusCode, Vec<u8>)>>,
    later: (StatusCode, &'static str),
    seen: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl Scripted {
    pub fn new(
        answers: impl IntoIterator<Item = (StatusCode, Vec<u8>)>,
        later: (StatusCode, &'static str),
    ) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into_iter().collect()),
            later,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Client options sending through this transport, retries off.
    pub fn options(self: &Arc<Self>) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(self.clone())),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        }
    }

    /// Every request sent so far as (method, URL, body), oldest first.
    pub fn seen(&self) -> Vec<(String, String, Vec<u8>)> {
        self.seen.lock().expect("fuzz lock").clone()
    }
}

#[async_trait]
impl HttpClient for Scripted {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            azure_core::http::Body::Bytes(bytes) => bytes.to_vec(),
            #[allow(unreachable_patterns)]
            _ => Vec::new(),
        };
        self.seen.lock().expect("fuzz lock").push((
            request.method().to_string(),
            request.url().to_string(),
            body,
        ));
        let (status, body) = self
            .answers
            .lock()
            .expect("fuzz lock")
            .pop_front()
            .unwrap_or_else(|| (self.later.0, self.later.1.as_bytes().to_vec()));
        let mut headers = Headers::new();
        headers.insert("content-type", "application/json; charset=utf-8");
        Ok(AsyncRawResponse::from_bytes(status, headers, body))
    }
}

/// The fuzzer's bytes cut at each NUL into at most `n` parts (JSON holds no raw NUL, so
/// a seed joins several answers with one).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0).collect()
}

/// The stamp every discovery target reads pages at.
pub fn stamp() -> keyturn::ports::catalog::Stamp {
    keyturn::ports::catalog::Stamp {
        sweep: keyturn::domain::inventory::SweepId::parse("20270601T120000Z").expect("valid"),
        at: now(),
    }
}

/// A value serialised and read back as the inventory stores records (JSON): it must come
/// back equal.
pub fn assert_json_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).expect("a record serialises");
    let back: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a record read back does not parse ({e}): {text}"));
    assert_eq!(&back, value, "a record read back differs");
}

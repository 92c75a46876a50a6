//! A small typed client for Azure Blob storage (and Azurite) on azure_core's pipeline:
//! create a container, create an append blob without ever replacing one, append a block
//! at a known position, upload a file as a new block blob without ever replacing one,
//! read a blob, list a container. Authenticated by an Entra token or a Shared Key
//! signature.
//!
//! Speaks the Blob service REST API as Microsoft documents it (`x-ms-version`
//! [`API_VERSION`]): Put Blob with `x-ms-blob-type: AppendBlob` and `If-None-Match: *`,
//! Append Block (`comp=appendblock`) with `x-ms-blob-condition-appendpos`, so a retried
//! append whose first try was stored is refused instead of stored twice; Put Blob
//! (`BlockBlob`) for a small file, Put Block (`comp=block`) and Put Block List
//! (`comp=blocklist`) for a larger one, each with `If-None-Match: *`; Get Blob, and List
//! Blobs (`restype=container&comp=list`, XML, `NextMarker`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{AUTHORIZATION, CONTENT_TYPE, HeaderName, MS_DATE};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Method, Pipeline, RawResponse, Request, Url};
use azure_core::time::OffsetDateTime;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::adapters::azure::client::http;
use crate::adapters::azure::client::http::{
    FailureContext, PipelineAuth, ServiceErrorCode, failure_from_status, pipeline,
};
use crate::domain::secret::SecretValue;
use crate::ports::{FailureKind, PortError};

/// The Entra scope of Azure Storage data-plane tokens.
pub(crate) const BLOB_SCOPE: &str = "https://storage.azure.com/.default";

/// The Blob service REST version spoken: one Azurite 3.35 accepts that has append
/// blobs, the append-position condition and Entra tokens.
pub(crate) const API_VERSION: &str = "2021-08-06";

/// An append blob holds at most 50,000 blocks ("Append Block", remarks); a writer
/// starts its next blob before that.
pub const MAX_BLOCKS_PER_BLOB: u32 = 50_000;

/// One appended block is at most 4 MiB at this API version ("Append Block").
pub(crate) const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// Longest blob read whole: a checkpoint blob of [`MAX_BLOCKS_PER_BLOB`] lines of at
/// most 4 KiB stays below it.
pub(crate) const MAX_READ_BYTES: usize = 256 * 1024 * 1024;

/// A file of at most this many bytes is uploaded in one Put Blob; a larger one in blocks
/// of this size (Put Block takes up to 4000 MiB at this API version), read from the file
/// one block at a time, so memory holds one block whatever the file's size.
pub const UPLOAD_BLOCK_BYTES: usize = 8 * 1024 * 1024;

/// A block blob holds at most 50,000 committed blocks ("Put Block List").
const MAX_BLOCKS_PER_BLOCK_BLOB: u64 = 50_000;

const VERSION: HeaderName = HeaderName::from_static("x-ms-version");
const BLOB_TYPE: HeaderName = HeaderName::from_static("x-ms-blob-type");
const APPEND_POSITION: HeaderName = HeaderName::from_static("x-ms-blob-condition-appendpos");
const IF_NONE_MATCH: HeaderName = HeaderName::from_static("if-none-match");
const CONTENT_LENGTH: HeaderName = HeaderName::from_static("content-length");
const BLOB_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-ms-blob-content-type");
const RANGE: HeaderName = HeaderName::from_static("x-ms-range");

/// How the client authenticates.
pub enum BlobAuth {
    /// An Entra token for [`BLOB_SCOPE`]; the identity needs a Storage Blob Data role.
    Token(Arc<dyn TokenCredential>),
    /// The account name and key; requests are signed (Shared Key), the key never sent.
    SharedKey { account: String, key: SecretValue },
}

impl fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("BlobAuth::Token"),
            Self::SharedKey { account, .. } => write!(f, "BlobAuth::SharedKey({account})"),
        }
    }
}

/// A container name: 3-63 lowercase letters, digits and single hyphens, starting and
/// ending with a letter or digit ("Naming and referencing containers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(name: &str) -> Result<Self, PortError> {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(PortError::invalid(
                "a container name is 3-63 lowercase letters, digits and single hyphens",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Blob client. Cheap to clone.
#[derive(Clone)]
pub struct BlobClient {
    endpoint: Url,
    pipeline: Pipeline,
    missing: Arc<str>,
}

impl fmt::Debug for BlobClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobClient")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// A failed request: the port error and the service's error code, when it sent one.
struct Failure {
    error: PortError,
    code: Option<ServiceErrorCode>,
}

impl BlobClient {
    /// A client for `endpoint` (`https://<account>.blob.core.windows.net` or a
    /// path-style endpoint such as Azurite's `http://127.0.0.1:10000/devstoreaccount1`).
    pub fn new(
        endpoint: Url,
        auth: BlobAuth,
        options: Option<ClientOptions>,
    ) -> Result<Self, PortError> {
        if !matches!(endpoint.scheme(), "http" | "https")
            || endpoint.query().is_some()
            || endpoint.fragment().is_some()
        {
            return Err(PortError::invalid(
                "a blob endpoint is an http(s) URL without query or fragment",
            ));
        }
        let host = endpoint
            .host_str()
            .unwrap_or("the storage account")
            .to_owned();
        let auth = match auth {
            BlobAuth::Token(credential) => PipelineAuth::Bearer {
                credential,
                scope: BLOB_SCOPE.to_owned(),
            },
            BlobAuth::SharedKey { account, key } => {
                let key = BASE64
                    .decode(key.expose().trim())
                    .map(Zeroizing::new)
                    .map_err(|_| PortError::invalid("the storage account key is not base64"))?;
                PipelineAuth::Policy(Arc::new(SharedKeyPolicy { account, key }))
            }
        };
        Ok(Self {
            endpoint,
            pipeline: pipeline(options, auth),
            missing: format!("Storage Blob Data Contributor (or a role with the append-blob data actions) on {host}").into(),
        })
    }

    /// Creates `container`; succeeds when it exists.
    pub async fn create_container_if_not_exists(
        &self,
        container: &ContainerName,
    ) -> Result<(), PortError> {
        let operation = format!("creating container {container}");
        let url = self.url(container.as_str(), &[("restype", "container")]);
        let request = self.request(url, Method::Put, Some(Vec::new()));
        match self.send(request, &operation).await {
            Ok(_) => Ok(()),
            Err(Failure {
                code: Some(code), ..
            }) if code.as_str() == "ContainerAlreadyExists" => Ok(()),
            Err(failure) => Err(failure.error),
        }
    }

    /// Creates an empty append blob; never replaces one (`If-None-Match: *`). Answers
    /// `false` when the blob already exists.
    pub async fn create_append_blob(
        &self,
        container: &ContainerName,
        blob: &str,
    ) -> Result<bool, PortError> {
        let operation = format!("creating append blob {container}/{blob}");
        let url = self.url(&format!("{container}/{}", encode_path(blob)), &[]);
        let mut request = self.request(url, Method::Put, Some(Vec::new()));
        request.insert_header(BLOB_TYPE, "AppendBlob");
        request.insert_header(IF_NONE_MATCH, "*");
        match self.send(request, &operation).await {
            Ok(_) => Ok(true),
            Err(Failure { error, .. }) if error.kind == FailureKind::Conflict => Ok(false),
            Err(failure) => Err(failure.error),
        }
    }

    /// Appends `bytes` as one block at offset `position` (the blob's length as the
    /// caller knows it). A blob of another length refuses with
    /// [`FailureKind::Conflict`] and is left unchanged; a missing blob is
    /// [`FailureKind::NotFound`]. Returns the blob's new length.
    pub async fn append_block(
        &self,
        container: &ContainerName,
        blob: &str,
        position: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, PortError> {
        let operation = format!("appending a block to {container}/{blob} at offset {position}");
        if bytes.is_empty() || bytes.len() > MAX_BLOCK_BYTES {
            return Err(PortError::invalid(format!(
                "{operation}: a block is 1 to {MAX_BLOCK_BYTES} bytes"
            )));
        }
        let len = bytes.len() as u64;
        let url = self.url(
            &format!("{container}/{}", encode_path(blob)),
            &[("comp", "appendblock")],
        );
        let mut request = self.request(url, Method::Put, Some(bytes));
        request.insert_header(APPEND_POSITION, position.to_string());
        self.send(request, &operation).await.map_err(|f| f.error)?;
        Ok(position + len)
    }

    /// Uploads the file at `path` as the new block blob `blob`, never replacing one
    /// (`If-None-Match: *` on the request that creates it: Put Blob for a file of at most
    /// [`UPLOAD_BLOCK_BYTES`], else Put Block List after each block is staged). The file
    /// is read one block at a time. Answers `false`, writing nothing, when `blob`
    /// already exists (another run created it first).
    ///
    /// Staged blocks are named by a random id of this upload and the block's index, so
    /// two uploads racing to the same name never commit each other's blocks: the first
    /// Put Block List wins, the other is refused whole; blocks never committed are
    /// discarded by the service after a week.
    pub async fn upload_block_blob(
        &self,
        container: &ContainerName,
        blob: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<bool, PortError> {
        use tokio::io::AsyncReadExt;

        let operation = format!("uploading {} to {container}/{blob}", path.display());
        let read_error = |e: std::io::Error| {
            PortError::invalid(format!("{operation}: cannot read the file: {e}"))
        };
        let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let length = file.metadata().await.map_err(read_error)?.len();
        let blocks = length.div_ceil(UPLOAD_BLOCK_BYTES as u64);
        if blocks > MAX_BLOCKS_PER_BLOCK_BLOB {
            return Err(PortError::invalid(format!(
                "{operation}: {length} bytes need more than {MAX_BLOCKS_PER_BLOCK_BLOB} blocks"
            )));
        }
        let url = self.url(&format!("{container}/{}", encode_path(blob)), &[]);
        let created = |result: Result<RawResponse, Failure>| match result {
            Ok(_) => Ok(true),
            Err(Failure { error, .. }) if error.kind == FailureKind::Conflict => Ok(false),
            Err(Failure {
                code: Some(code), ..
            }) if code.as_str() == "ConditionNotMet" => Ok(false),
            Err(failure) => Err(failure.error),
        };
        if blocks <= 1 {
            let mut bytes = Vec::with_capacity(length as usize);
            file.read_to_end(&mut bytes).await.map_err(read_error)?;
            let mut request = self.request(url, Method::Put, Some(bytes));
            request.insert_header(BLOB_TYPE, "BlockBlob");
            request.insert_header(BLOB_CONTENT_TYPE, content_type.to_owned());
            request.insert_header(IF_NONE_MATCH, "*");
            return created(self.send(request, &operation).await);
        }
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let mut ids = Vec::with_capacity(blocks as usize);
        let mut buffer = vec![0u8; UPLOAD_BLOCK_BYTES];
        for index in 0..blocks {
            let mut filled = 0;
            while filled < buffer.len() {
                let read = file.read(&mut buffer[filled..]).await.map_err(read_error)?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            let expected = (length - index * UPLOAD_BLOCK_BYTES as u64)
                .min(UPLOAD_BLOCK_BYTES as u64) as usize;
            if filled != expected {
                return Err(PortError::invalid(format!(
                    "{operation}: the file changed while it was read"
                )));
            }
            let id = BASE64.encode(format!("{upload}{index:08}"));
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("comp", "block")
                .append_pair("blockid", &id);
            let request = self.request(url, Method::Put, Some(buffer[..filled].to_vec()));
            match self
                .send(request, &format!("{operation} (block {index} of {blocks})"))
                .await
            {
                Ok(_) => {}
                // A retention policy may refuse blocks staged for a blob that exists.
                Err(Failure { error, .. })
                    if error.kind == FailureKind::Conflict
                        && self.blob_exists(container, blob).await? =>
                {
                    return Ok(false);
                }
                Err(failure) => return Err(failure.error),
            }
            ids.push(id);
        }
        let mut list = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &ids {
            list.push_str("<Latest>");
            list.push_str(id);
            list.push_str("</Latest>");
        }
        list.push_str("</BlockList>");
        let mut url = url;
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let mut request = self.request(url, Method::Put, Some(list.into_bytes()));
        request.insert_header(BLOB_CONTENT_TYPE, content_type.to_owned());
        request.insert_header(IF_NONE_MATCH, "*");
        created(self.send(request, &operation).await)
    }

    /// Whether `blob` exists (Get Blob Properties).
    pub async fn blob_exists(
        &self,
        container: &ContainerName,
        blob: &str,
    ) -> Result<bool, PortError> {
        let operation = format!("reading the properties of {container}/{blob}");
        let url = self.url(&format!("{container}/{}", encode_path(blob)), &[]);
        let request = self.request(url, Method::Head, None);
        match self.send(request, &operation).await {
            Ok(_) => Ok(true),
            Err(Failure { error, .. }) if error.kind == FailureKind::NotFound => Ok(false),
            Err(failure) => Err(failure.error),
        }
    }

    /// The whole blob; [`FailureKind::NotFound`] when absent.
    pub async fn get_blob(
        &self,
        container: &ContainerName,
        blob: &str,
    ) -> Result<Vec<u8>, PortError> {
        let operation = format!("reading blob {container}/{blob}");
        let url = self.url(&format!("{container}/{}", encode_path(blob)), &[]);
        let request = self.request(url, Method::Get, None);
        let response = self.send(request, &operation).await.map_err(|f| f.error)?;
        let body = response.body().as_ref();
        if body.len() > MAX_READ_BYTES {
            return Err(PortError::invalid(format!(
                "{operation}: larger than {MAX_READ_BYTES} bytes"
            )));
        }
        Ok(body.to_vec())
    }

    /// At most `length` bytes of `blob` from `offset` (Get Blob with `x-ms-range`);
    /// fewer when the blob ends first, `None` when it ends at or before `offset`.
    pub async fn get_blob_range(
        &self,
        container: &ContainerName,
        blob: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>, PortError> {
        let operation = format!("reading blob {container}/{blob} from byte {offset}");
        let url = self.url(&format!("{container}/{}", encode_path(blob)), &[]);
        let mut request = self.request(url, Method::Get, None);
        let last = offset.saturating_add(length.max(1) - 1);
        request.insert_header(RANGE, format!("bytes={offset}-{last}"));
        match self.send(request, &operation).await {
            Ok(response) => {
                let body = response.body().as_ref();
                if u64::try_from(body.len()).unwrap_or(u64::MAX) > length {
                    return Err(PortError::invalid(format!(
                        "{operation}: the answer is longer than the {length} bytes asked for"
                    )));
                }
                Ok(Some(body.to_vec()))
            }
            Err(Failure {
                code: Some(code), ..
            }) if code.as_str() == "InvalidRange" => Ok(None),
            Err(failure) => Err(failure.error),
        }
    }

    /// The names of the blobs in `container` starting with `prefix`, in name order.
    pub async fn list_blobs(
        &self,
        container: &ContainerName,
        prefix: &str,
    ) -> Result<Vec<String>, PortError> {
        let operation = format!("listing container {container}");
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = vec![
                ("restype", "container".to_owned()),
                ("comp", "list".to_owned()),
            ];
            if !prefix.is_empty() {
                query.push(("prefix", prefix.to_owned()));
            }
            if let Some(marker) = &marker {
                query.push(("marker", marker.clone()));
            }
            let borrowed: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let url = self.url(container.as_str(), &borrowed);
            let request = self.request(url, Method::Get, None);
            let response = self.send(request, &operation).await.map_err(|f| f.error)?;
            let xml = std::str::from_utf8(response.body().as_ref()).map_err(|_| {
                PortError::invalid(format!("{operation}: the answer is not UTF-8 XML"))
            })?;
            names.extend(elements(xml, "Name").into_iter().map(unescape_xml));
            marker = elements(xml, "NextMarker")
                .into_iter()
                .next()
                .filter(|m| !m.is_empty())
                .map(unescape_xml);
            if marker.is_none() {
                return Ok(names);
            }
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    fn request(&self, url: Url, method: Method, body: Option<Vec<u8>>) -> Request {
        let mut request = Request::new(url, method);
        request.insert_header(VERSION, API_VERSION);
        if let Some(body) = body {
            request.insert_header(CONTENT_LENGTH, body.len().to_string());
            if !body.is_empty() {
                request.insert_header(CONTENT_TYPE, "application/octet-stream");
            }
            request.set_body(body);
        }
        request
    }

    async fn send(&self, mut request: Request, operation: &str) -> Result<RawResponse, Failure> {
        let context = FailureContext {
            operation,
            missing_permission: &self.missing,
            policy_codes: &[],
        };
        let response = http::send(&self.pipeline, &mut request, &context)
            .await
            .map_err(|error| Failure { error, code: None })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = ServiceErrorCode::from_response(response.headers(), response.body().as_ref());
        let error = failure_from_status(
            response.status(),
            response.headers(),
            code.as_ref(),
            OffsetDateTime::now_utc(),
            &context,
        );
        Err(Failure { error, code })
    }
}

/// Blob names keep their `/`; every other character outside the unreserved set is
/// percent-encoded.
fn encode_path(name: &str) -> String {
    name.split('/')
        .map(|segment| {
            url::form_urlencoded::byte_serialize(segment.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The text of every `<tag>...</tag>` in `xml`, in order (List Blobs answers hold no
/// nested elements of the names read here).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Signs each try with Shared Key for the Blob service ("Authorize with Shared Key",
/// Blob service section): the verb, the standard headers in their fixed order, the
/// `x-ms-` headers sorted, and the canonicalized resource (`/account/path`, then each
/// query parameter as `\nname:value`, names lowercase and sorted). The date is taken
/// per try because the service refuses signatures more than 15 minutes old.
struct SharedKeyPolicy {
    account: String,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedKeyPolicy {{ account: {:?}, key: [redacted] }}",
            self.account
        )
    }
}

impl SharedKeyPolicy {
    fn string_to_sign(&self, request: &Request) -> String {
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let length = header("content-length");
        let length = if length == "0" { String::new() } else { length };
        let mut ms: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str().to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    v.as_str().trim().to_owned(),
                )
            })
            .collect();
        ms.sort();
        let canonical_headers: String = ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let url = request.url();
        let mut resource = format!("/{}{}", self.account, url.path());
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        for (name, value) in params {
            resource.push_str(&format!("\n{name}:{value}"));
        }
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}{}",
            request.method().as_ref().to_ascii_uppercase(),
            header("content-encoding"),
            header("content-language"),
            length,
            header("content-md5"),
            header("content-type"),
            "",
            header("if-modified-since"),
            header("if-match"),
            header("if-none-match"),
            header("if-unmodified-since"),
            header("range"),
            canonical_headers,
            resource
        )
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = azure_core::time::to_rfc7231(&OffsetDateTime::now_utc());
        request.insert_header(MS_DATE, date);
        let string_to_sign = self.string_to_sign(request);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .expect("invariant: HMAC accepts keys of any length");
        mac.update(string_to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        request.insert_header(
            AUTHORIZATION,
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_service_rules() {
        for good in ["abc", "keyturn-audit-checkpoints", "a1-b2"] {
            assert!(ContainerName::parse(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Upper", "-lead", "trail-", "dou--ble", "under_score"] {
            assert!(ContainerName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_answers_are_read_without_an_xml_crate() {
        let xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs><Blob><Name>w-a/000000.log</Name></Blob><Blob><Name>w-b/a&amp;b</Name></Blob></Blobs><NextMarker>m1</NextMarker></EnumerationResults>";
        assert_eq!(elements(xml, "Name"), ["w-a/000000.log", "w-b/a&amp;b"]);
        assert_eq!(unescape_xml("w-b/a&amp;b"), "w-b/a&b");
        assert_eq!(elements(xml, "NextMarker"), ["m1"]);
    }
}

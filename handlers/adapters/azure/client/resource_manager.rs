//! A small typed Azure Resource Manager client on azure_core's pipeline: `GET` of one
//! resource by its id and API version, with a bearer token for Resource Manager's audience
//! from keyturn's own credential. Resource Manager's error bodies
//! (`{"error":{"code","message"}}`) are read for the code only.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, Method, Pipeline, Request, Url};
use azure_core::time::OffsetDateTime;

use crate::adapters::azure::client::http::{
    self, FailureContext, PipelineAuth, ServiceErrorCode, failure_from_status, pipeline,
};
use crate::ports::PortError;

const ACCEPT: HeaderName = HeaderName::from_static("accept");

/// Why a Resource Manager client cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceManagerError {
    #[error("invalid Resource Manager endpoint: {problem}")]
    InvalidEndpoint { problem: &'static str },
}

/// Azure Resource Manager at one endpoint (`https://management.azure.com` in the public
/// cloud).
#[derive(Clone)]
pub struct ResourceManagerClient {
    endpoint: Url,
    pipeline: Pipeline,
}

impl fmt::Debug for ResourceManagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManagerClient")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl ResourceManagerClient {
    /// A client whose tokens are for `{endpoint}/.default`: every cloud's Resource
    /// Manager accepts its own endpoint as a token audience.
    pub fn new(
        endpoint: &Url,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, ResourceManagerError> {
        let scope = format!("{}/.default", endpoint.as_str().trim_end_matches('/'));
        Self::with_scope(endpoint, scope, credential, options)
    }

    /// A client asking for tokens for `scope` (a stand-in that listens elsewhere than the
    /// audience it checks).
    pub fn with_scope(
        endpoint: &Url,
        scope: String,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, ResourceManagerError> {
        if endpoint.scheme() != "https" {
            return Err(ResourceManagerError::InvalidEndpoint {
                problem: "must be https (bearer tokens are never sent over http)",
            });
        }
        if endpoint.path() != "/" || endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(ResourceManagerError::InvalidEndpoint {
                problem: "must be the host only, without a path, query or fragment",
            });
        }
        Ok(Self {
            endpoint: endpoint.clone(),
            pipeline: pipeline(options, PipelineAuth::Bearer { credential, scope }),
        })
    }

    /// The resource `resource_id` (`/subscriptions/...`) at `api_version`, as Resource
    /// Manager returns it: the JSON body. `context` names the operation and the role a
    /// 401/403 means is missing.
    pub(crate) async fn get_resource(
        &self,
        resource_id: &str,
        api_version: &str,
        context: &FailureContext<'_>,
    ) -> Result<Vec<u8>, PortError> {
        let url = self.url(resource_id, api_version).ok_or_else(|| {
            PortError::invalid(format!("{}: not a resource id", context.operation))
        })?;
        self.get_url(url, context).await
    }

    /// A list's first page (`resource_id` is the collection, `/subscriptions/...` or
    /// `/subscriptions`) or, with `next`, the page a `nextLink` names. A `nextLink` must
    /// stay on the endpoint's origin: a link elsewhere would carry the token away.
    pub(crate) async fn list_page(
        &self,
        collection: &str,
        api_version: &str,
        next: Option<&str>,
        context: &FailureContext<'_>,
    ) -> Result<Vec<u8>, PortError> {
        let url = match next {
            Some(link) => {
                let url = Url::parse(link).map_err(|_| {
                    PortError::invalid(format!("{}: the nextLink is not a URL", context.operation))
                })?;
                if url.origin() != self.endpoint.origin() {
                    return Err(PortError::invalid(format!(
                        "{}: the nextLink leaves Resource Manager's origin",
                        context.operation
                    )));
                }
                url
            }
            None => {
                let plain =
                    collection == "/subscriptions" || self.url(collection, api_version).is_some();
                if !plain {
                    return Err(PortError::invalid(format!(
                        "{}: not a collection id",
                        context.operation
                    )));
                }
                let mut url = self.endpoint.clone();
                url.set_path(collection);
                url.set_query(Some(&format!("api-version={api_version}")));
                url
            }
        };
        self.get_url(url, context).await
    }

    async fn get_url(&self, url: Url, context: &FailureContext<'_>) -> Result<Vec<u8>, PortError> {
        let mut request = Request::new(url, Method::Get);
        request.insert_header(ACCEPT, "application/json");
        let response = http::send(&self.pipeline, &mut request, context).await?;
        if response.status().is_success() {
            return Ok(response.body().as_ref().to_vec());
        }
        let code = ServiceErrorCode::from_response(response.headers(), response.body().as_ref());
        Err(failure_from_status(
            response.status(),
            response.headers(),
            code.as_ref(),
            OffsetDateTime::now_utc(),
            context,
        ))
    }

    /// `{endpoint}{resource_id}?api-version=...`, or `None` when `resource_id` is not a
    /// plain `/subscriptions/...` path (a query, fragment, dot segment or percent sign
    /// would change what is read).
    fn url(&self, resource_id: &str, api_version: &str) -> Option<Url> {
        let plain = resource_id.starts_with("/subscriptions/")
            && resource_id
                .split('/')
                .skip(1)
                .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
            && !resource_id.contains(['?', '#', '%', '\\', ' '])
            && !api_version.is_empty()
            && api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !plain {
            return None;
        }
        let mut url = self.endpoint.clone();
        url.set_path(resource_id);
        url.set_query(Some(&format!("api-version={api_version}")));
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ResourceManagerClient {
        #[derive(Debug)]
        struct NoToken;
        #[async_trait::async_trait]
        impl TokenCredential for NoToken {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "no token in unit tests",
                ))
            }
        }
        let endpoint = Url::parse("https://management.azure.com").expect("valid");
        ResourceManagerClient::new(&endpoint, Arc::new(NoToken), None).expect("https endpoint")
    }

    #[test]
    fn a_resource_id_becomes_its_url_with_the_api_version() {
        let url = client()
            .url(
                "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg/providers/Microsoft.Web/sites/kt",
                "2024-04-01",
            )
            .expect("a plain resource id");
        assert_eq!(
            url.as_str(),
            "https://management.azure.com/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg/providers/Microsoft.Web/sites/kt?api-version=2024-04-01"
        );
    }

    #[test]
    fn anything_but_a_plain_resource_id_is_refused() {
        let client = client();
        for id in [
            "subscriptions/x",
            "/tenants/x",
            "/subscriptions/x/../y",
            "/subscriptions/x//y",
            "/subscriptions/x?api-version=1",
            "/subscriptions/x#frag",
            "/subscriptions/x%2F..",
        ] {
            assert!(client.url(id, "2024-04-01").is_none(), "{id}");
        }
        assert!(client.url("/subscriptions/x", "2024-04-01&x=1").is_none());
    }

    #[test]
    fn only_https_hosts_are_endpoints() {
        #[derive(Debug)]
        struct NoToken;
        #[async_trait::async_trait]
        impl TokenCredential for NoToken {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                unreachable!("no request is sent")
            }
        }
        for text in [
            "http://management.azure.com",
            "https://management.azure.com/x",
        ] {
            let endpoint = Url::parse(text).expect("a URL");
            assert!(
                ResourceManagerClient::new(&endpoint, Arc::new(NoToken), None).is_err(),
                "{text}"
            );
        }
    }
}

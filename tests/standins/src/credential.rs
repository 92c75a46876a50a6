//! A `TokenCredential` that gets tokens from the token stand-in with the client-credentials
//! grant, so the official Azure crates and keyturn's own clients authenticate as they
//! would against Entra.

use std::fmt;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error, ErrorKind};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

/// Client-credentials access for one seeded application.
#[derive(Clone)]
pub struct StandinCredential {
    client: reqwest::Client,
    token_url: Url,
    client_id: Uuid,
    client_secret: String,
}

impl fmt::Debug for StandinCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandinCredential")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: i64,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: String,
}

impl StandinCredential {
    pub fn new(
        client: reqwest::Client,
        token_url: Url,
        client_id: Uuid,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            client,
            token_url,
            client_id,
            client_secret: client_secret.into(),
        }
    }
}

#[async_trait]
impl TokenCredential for StandinCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let [scope] = scopes else {
            return Err(Error::with_message(
                ErrorKind::Credential,
                format!("exactly one scope is needed, {} given", scopes.len()),
            ));
        };
        let client_id = self.client_id.to_string();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", scope),
        ];
        let response = self
            .client
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::with_error(ErrorKind::Credential, e, "token request failed"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::with_error(ErrorKind::Credential, e, "token answer unreadable"))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|e| format!("{}: {}", e.error, e.error_description))
                .unwrap_or_else(|_| "no error body".to_owned());
            return Err(Error::with_message(
                ErrorKind::Credential,
                format!("token endpoint answered {status}: {detail}"),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            Error::with_error(ErrorKind::Credential, e, "token answer is not a token")
        })?;
        let expires_on =
            time::OffsetDateTime::now_utc() + time::Duration::seconds(answer.expires_in);
        Ok(AccessToken::new(answer.access_token, expires_on))
    }
}

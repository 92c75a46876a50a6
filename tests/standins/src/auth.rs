//! Tokens the token stand-in issues and the other stand-ins check: opaque random strings
//! recorded with their audience, the application they were issued to and its permissions.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use http::HeaderMap;
use rand::Rng;
use rand::distributions::Alphanumeric;
use uuid::Uuid;

/// Entra answers client-credentials requests with `expires_in: 3599`.
pub const TOKEN_LIFETIME_SECONDS: i64 = 3599;

/// Opaque tokens are long enough that guessing one is not a thing a test can do by
/// accident.
const TOKEN_LENGTH: usize = 48;

/// The resources the stand-ins serve, named by their application ID URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Audience {
    KeyVault,
    Graph,
    ServiceBus,
    ResourceManager,
}

impl Audience {
    pub const ALL: [Audience; 4] = [
        Audience::KeyVault,
        Audience::Graph,
        Audience::ServiceBus,
        Audience::ResourceManager,
    ];

    pub fn uri(self) -> &'static str {
        match self {
            Audience::KeyVault => "https://vault.azure.net",
            Audience::Graph => "https://graph.microsoft.com",
            Audience::ServiceBus => "https://servicebus.azure.net",
            Audience::ResourceManager => "https://management.azure.com",
        }
    }

    pub(crate) fn from_resource(resource: &str) -> Option<Self> {
        let resource = resource.trim_end_matches('/');
        // Resource Manager's application also answers to its older identifier URI.
        if resource == "https://management.core.windows.net" {
            return Some(Audience::ResourceManager);
        }
        Self::ALL.into_iter().find(|a| a.uri() == resource)
    }
}

/// What an application may do. Names are the stand-ins' own: Key Vault data actions as
/// `secrets/get`, Graph application permissions as `Application.ReadWrite.OwnedBy`,
/// Service Bus `Send`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions(Option<BTreeSet<String>>);

impl Permissions {
    /// Every permission on every stand-in.
    pub fn all() -> Self {
        Self(None)
    }

    pub fn only<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(Some(names.into_iter().map(Into::into).collect()))
    }

    pub fn allows(&self, permission: &str) -> bool {
        match &self.0 {
            None => true,
            Some(set) => set.contains(permission),
        }
    }

    pub fn allows_any(&self, permissions: &[&str]) -> bool {
        permissions.iter().any(|p| self.allows(p))
    }
}

/// What a token stands for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub audience: Audience,
    pub app_id: Uuid,
    pub permissions: Permissions,
    pub expires_at: DateTime<Utc>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BearerRefusal {
    Missing,
    NotBearer,
    Unknown,
    Expired,
    WrongAudience { found: &'static str },
}

#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: Mutex<HashMap<String, Grant>>,
}

impl TokenStore {
    /// Records a grant and returns the token that stands for it.
    pub fn issue(&self, grant: Grant) -> String {
        let token: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(TOKEN_LENGTH)
            .map(char::from)
            .collect();
        self.lock().insert(token.clone(), grant);
        token
    }

    /// A token for `audience` issued directly, without a client-credentials exchange:
    /// for tests that probe another stand-in's checks.
    pub fn issue_for(
        &self,
        audience: Audience,
        app_id: Uuid,
        permissions: Permissions,
        now: DateTime<Utc>,
    ) -> String {
        self.issue(Grant {
            audience,
            app_id,
            permissions,
            expires_at: now + Duration::seconds(TOKEN_LIFETIME_SECONDS),
        })
    }

    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        audience: Audience,
        now: DateTime<Utc>,
    ) -> Result<Grant, BearerRefusal> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(BearerRefusal::Missing)?
            .to_str()
            .map_err(|_| BearerRefusal::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(BearerRefusal::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(BearerRefusal::NotBearer);
        }
        let grant = self
            .lock()
            .get(token.trim())
            .cloned()
            .ok_or(BearerRefusal::Unknown)?;
        if grant.expires_at <= now {
            return Err(BearerRefusal::Expired);
        }
        if grant.audience != audience {
            return Err(BearerRefusal::WrongAudience {
                found: grant.audience.uri(),
            });
        }
        Ok(grant)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.tokens
            .lock()
            .expect("the token lock is never held across a panic")
    }
}

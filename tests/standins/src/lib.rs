//! Strict HTTPS stand-ins for the Azure services keyturn uses that have no official
//! emulator: Key Vault, Microsoft Graph, the Entra token endpoint, Service Bus and Azure
//! Resource Manager. Each speaks the real REST protocol on loopback and refuses what Azure
//! would refuse.
//!
//! Each service gets its own listener (its own port) because each is a separate host in
//! Azure: Key Vault ids embed the vault's host, the token endpoint's tenant path and
//! Service Bus's `/{queue}/messages` would collide in one router, and clients configure
//! one base URL per service exactly as in production. The five share one state, so the
//! token endpoint checks the Graph stand-in's credentials and every stand-in checks the
//! token endpoint's tokens. The managed identity endpoint ([`managed_identity`]) stands apart: it
//! is plain HTTP on loopback, as App Service gives it to the app.

pub mod auth;
mod clock;
pub mod credential;
mod entra;
pub mod faults;
pub mod graph;
pub mod keyvault;
pub mod log;
pub mod mail;
pub mod managed_identity;
mod pki;
pub mod receivers;
pub mod resourcemanager;
mod server;
pub mod servicebus;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use azure_core::http::{ClientOptions, Transport};
use chrono::{DateTime, Utc};
use url::Url;
use uuid::Uuid;

use crate::auth::TokenStore;
use crate::clock::Clock;
use crate::faults::FaultBook;
use crate::log::RequestLog;
use crate::server::Listener;

pub use crate::auth::{Audience, Permissions};
pub use crate::credential::StandinCredential;
pub use crate::faults::{Fault, Route};
pub use crate::graph::{
    Device, GraphStandin, KeyCredentialSeed, NewPassword, OwnerUser, PasswordRestriction,
    SeededApplication, SeededServicePrincipal,
};
pub use crate::keyvault::{
    CertificateSeed, KeySeed, KeyVaultStandin, NetworkRefusal, SecretSeed, StoredSecret,
};
pub use crate::log::LoggedRequest;
pub use crate::mail::SentMail;
pub use crate::managed_identity::{IdentityFault, ManagedIdentityStandin};
pub use crate::receivers::{Received, Receiver, Receivers};
pub use crate::resourcemanager::{ClientCerts, ResourceManagerStandin, SiteId, VaultProperties};
pub use crate::servicebus::{QueueOptions, ReceivedMessage, ServiceBusStandin};
pub use keyturn_testkit::pki::TestCa;

/// Seeded identities' credentials last a year: no test outlives them.
const SEEDED_CREDENTIAL_DAYS: i64 = 365;

/// One of the stand-in services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    KeyVault,
    Graph,
    Entra,
    ServiceBus,
    ResourceManager,
}

/// Why the stand-ins could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("listener: {0}")]
    Server(#[from] server::ServerError),
    #[error("could not build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// State the five stand-ins share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) tokens: TokenStore,
    pub(crate) log: RequestLog,
    pub(crate) faults: FaultBook,
    pub(crate) tenant_id: Uuid,
    vault: Arc<Mutex<keyvault::Vault>>,
    directory: Mutex<graph::Directory>,
    namespace: Mutex<servicebus::Namespace>,
    sites: Mutex<resourcemanager::Sites>,
    post_office: Mutex<mail::PostOffice>,
    /// The Resource Manager stand-in's origin (`https://127.0.0.1:{port}`): Resource
    /// Manager accepts tokens for its own endpoint, so the token endpoint issues Resource
    /// Manager tokens for this resource too, as a client configured with the stand-in's
    /// endpoint asks for them.
    resource_manager_origin: std::sync::OnceLock<String>,
}

impl Shared {
    pub(crate) fn directory(&self) -> MutexGuard<'_, graph::Directory> {
        self.directory
            .lock()
            .expect("the directory lock is never held across a panic")
    }

    pub(crate) fn namespace(&self) -> MutexGuard<'_, servicebus::Namespace> {
        self.namespace
            .lock()
            .expect("the namespace lock is never held across a panic")
    }

    /// The audience a token requested for `resource` carries.
    pub(crate) fn audience_of(&self, resource: &str) -> Option<Audience> {
        Audience::from_resource(resource).or_else(|| {
            let origin = self.resource_manager_origin.get()?;
            (resource.trim_end_matches('/') == origin).then_some(Audience::ResourceManager)
        })
    }

    pub(crate) fn post_office(&self) -> MutexGuard<'_, mail::PostOffice> {
        self.post_office
            .lock()
            .expect("the post office lock is never held across a panic")
    }

    pub(crate) fn sites(&self) -> MutexGuard<'_, resourcemanager::Sites> {
        self.sites
            .lock()
            .expect("the sites lock is never held across a panic")
    }
}

/// A seeded application with a usable client secret.
#[derive(Clone)]
pub struct Identity {
    pub app_id: Uuid,
    pub object_id: Uuid,
    client_secret: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("app_id", &self.app_id)
            .field("object_id", &self.object_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

impl Identity {
    /// The client secret, for tests that drive the token endpoint themselves.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }
}

/// A vault started after the others: its URL, state and listener (`None` once stopped).
type AddedVault = (Url, Arc<Mutex<keyvault::Vault>>, Option<Listener>);

/// The five stand-ins, running. Dropping this stops them.
pub struct Standins {
    shared: Arc<Shared>,
    ca: TestCa,
    client: reqwest::Client,
    keyvault_url: Url,
    graph_url: Url,
    login_url: Url,
    servicebus_url: Url,
    resource_manager_url: Url,
    identity: Identity,
    tls: Arc<rustls::ServerConfig>,
    _listeners: Vec<Listener>,
    /// Vaults added after start, each on its own listener, by URL.
    vaults: Mutex<Vec<AddedVault>>,
}

impl std::fmt::Debug for Standins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standins")
            .field("keyvault", &self.keyvault_url.as_str())
            .field("graph", &self.graph_url.as_str())
            .field("login", &self.login_url.as_str())
            .field("servicebus", &self.servicebus_url.as_str())
            .field("resource_manager", &self.resource_manager_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Standins {
    /// Starts all five on 127.0.0.1, each on its own ephemeral port, with a fresh CA and
    /// tenant, and seeds one identity with every permission.
    pub async fn start() -> Result<Self, StartError> {
        let ca = pki::ca("keyturn stand-in test CA");
        let tls = server::tls_config(&pki::server_cert(&ca))?;
        let shared = Arc::new(Shared {
            tenant_id: Uuid::new_v4(),
            ..Shared::default()
        });
        let mut listeners = Vec::new();
        let mut urls = Vec::new();
        for (service, router) in [
            (
                Service::KeyVault,
                keyvault::router(shared.clone(), shared.vault.clone()),
            ),
            (Service::Graph, graph::router(shared.clone())),
            (Service::Entra, entra::router(shared.clone())),
            (Service::ServiceBus, servicebus::router(shared.clone())),
            (
                Service::ResourceManager,
                resourcemanager::router(shared.clone()),
            ),
        ] {
            let router = router.layer(axum::middleware::from_fn_with_state(
                faults::LayerState {
                    service,
                    shared: shared.clone(),
                },
                faults::layer,
            ));
            let listener = server::start(tls.clone(), router).await?;
            let url = Url::parse(&format!("https://{}/", listener.addr))
                .expect("a socket address makes a valid https URL");
            urls.push(url);
            listeners.push(listener);
        }
        let [
            keyvault_url,
            graph_url,
            login_url,
            servicebus_url,
            resource_manager_url,
        ]: [Url; 5] = urls.try_into().expect("five services were started");
        let _ = shared.resource_manager_origin.set(
            resource_manager_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        );
        let client = http_client_for(&ca).map_err(StartError::Client)?;
        let mut standins = Self {
            shared,
            ca,
            client,
            keyvault_url,
            graph_url,
            login_url,
            servicebus_url,
            resource_manager_url,
            identity: Identity {
                app_id: Uuid::nil(),
                object_id: Uuid::nil(),
                client_secret: String::new(),
            },
            tls,
            _listeners: listeners,
            vaults: Mutex::new(Vec::new()),
        };
        standins.identity = standins.seed_identity("keyturn", Permissions::all());
        Ok(standins)
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn tenant_id(&self) -> Uuid {
        self.shared.tenant_id
    }

    pub fn keyvault(&self) -> KeyVaultStandin<'_> {
        KeyVaultStandin {
            shared: &self.shared,
            url: self.keyvault_url.clone(),
            vault: self.shared.vault.clone(),
        }
    }

    /// Starts another vault on its own listener, as each Azure vault is its own host,
    /// with the same rules as the first.
    pub async fn add_vault(&self) -> Result<KeyVaultStandin<'_>, StartError> {
        let vault = Arc::new(Mutex::new(keyvault::Vault::default()));
        let router = keyvault::router(self.shared.clone(), vault.clone()).layer(
            axum::middleware::from_fn_with_state(
                faults::LayerState {
                    service: Service::KeyVault,
                    shared: self.shared.clone(),
                },
                faults::layer,
            ),
        );
        let listener = server::start(self.tls.clone(), router).await?;
        let url = Url::parse(&format!("https://{}/", listener.addr))
            .expect("a socket address makes a valid https URL");
        self.lock_vaults()
            .push((url.clone(), vault.clone(), Some(listener)));
        Ok(KeyVaultStandin {
            shared: &self.shared,
            url,
            vault,
        })
    }

    /// The vault at `url` (the first vault or one [`Standins::add_vault`] started).
    pub fn vault_at(&self, url: &Url) -> Option<KeyVaultStandin<'_>> {
        if url == &self.keyvault_url {
            return Some(self.keyvault());
        }
        let vaults = self.lock_vaults();
        let (url, vault, _) = vaults.iter().find(|(u, _, _)| u == url)?;
        Some(KeyVaultStandin {
            shared: &self.shared,
            url: url.clone(),
            vault: vault.clone(),
        })
    }

    /// Stops answering for the added vault at `url`, as a deleted vault's host stops
    /// resolving: connections are refused from now on.
    pub fn stop_vault(&self, url: &Url) {
        let mut vaults = self.lock_vaults();
        if let Some(entry) = vaults.iter_mut().find(|(u, _, _)| u == url) {
            keyvault::lock_vault(&entry.1).gone = true;
            entry.2 = None;
        }
    }

    fn lock_vaults(&self) -> MutexGuard<'_, Vec<AddedVault>> {
        self.vaults
            .lock()
            .expect("the vault list lock is never held across a panic")
    }

    pub fn graph(&self) -> GraphStandin<'_> {
        GraphStandin {
            shared: &self.shared,
            url: &self.graph_url,
        }
    }

    pub fn servicebus(&self) -> ServiceBusStandin<'_> {
        ServiceBusStandin {
            shared: &self.shared,
            url: &self.servicebus_url,
        }
    }

    /// Azure Resource Manager, standing for `https://management.azure.com/`.
    pub fn resource_manager(&self) -> ResourceManagerStandin<'_> {
        ResourceManagerStandin {
            shared: &self.shared,
            url: &self.resource_manager_url,
        }
    }

    /// The authority host, standing for `https://login.microsoftonline.com/`.
    pub fn login_url(&self) -> &Url {
        &self.login_url
    }

    /// `{login}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> Url {
        self.login_url
            .join(&format!("{}/oauth2/v2.0/token", self.shared.tenant_id))
            .expect("a tenant GUID makes a valid path")
    }

    /// An HTTP client that trusts the test CA and nothing else.
    pub fn http_client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// `ClientOptions` whose transport is [`Standins::http_client`], for the official
    /// Azure crates and keyturn's clients on azure_core's pipeline. The Key Vault crates
    /// also need `verify_challenge_resource: Some(false)`: the stand-in's host is
    /// 127.0.0.1, not a subdomain of the challenge's `vault.azure.net`.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.client.clone()))),
            ..ClientOptions::default()
        }
    }

    /// The identity seeded at start, with every permission.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A credential for the identity seeded at start.
    pub fn credential(&self) -> Arc<StandinCredential> {
        self.credential_for(&self.identity)
    }

    /// [`Standins::client_options`] and [`Standins::credential_for`] on an HTTP client
    /// of their own, whose connections no other client is handed: for a client used
    /// from threads with runtimes of their own (the audit log's writers), which end
    /// before the test does. A connection is driven by the runtime that opened it, so
    /// one left in a shared pool by a runtime that ended can fail the next request that
    /// takes it.
    pub fn own_client(&self, identity: &Identity) -> (ClientOptions, Arc<StandinCredential>) {
        let client = http_client_for(&self.ca).expect("the test CA builds a client");
        let credential = Arc::new(StandinCredential::new(
            client.clone(),
            self.token_url(),
            identity.app_id,
            identity.client_secret.clone(),
        ));
        let options = ClientOptions {
            transport: Some(Transport::new(Arc::new(client))),
            ..ClientOptions::default()
        };
        (options, credential)
    }

    pub fn credential_for(&self, identity: &Identity) -> Arc<StandinCredential> {
        Arc::new(StandinCredential::new(
            self.client.clone(),
            self.token_url(),
            identity.app_id,
            identity.client_secret.clone(),
        ))
    }

    /// Seeds an application with `permissions` and a client secret that is usable now.
    pub fn seed_identity(&self, display_name: &str, permissions: Permissions) -> Identity {
        let graph = self.graph();
        let app = graph.seed_application(display_name, permissions);
        let end = self.now() + chrono::Duration::days(SEEDED_CREDENTIAL_DAYS);
        let password = graph
            .add_password(app.object_id, end, true)
            .expect("the application was seeded just above");
        Identity {
            app_id: app.app_id,
            object_id: app.object_id,
            client_secret: password.secret_text,
        }
    }

    /// A token for `audience` without a token request, for probing the other stand-ins.
    pub fn issue_token(&self, audience: Audience, permissions: Permissions) -> String {
        self.shared
            .tokens
            .issue_for(audience, self.identity.app_id, permissions, self.now())
    }

    /// Queues `fault` for the next request to `service` that matches `route`.
    pub fn inject(&self, service: Service, route: Route, fault: Fault) {
        self.shared.faults.push(service, route, fault);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Latency added to every call on every stand-in.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.set_latency(latency);
    }

    /// Latency added to every call on `service`, on top of [`Standins::set_latency`].
    pub fn set_service_latency(&self, service: Service, latency: Duration) {
        self.shared.faults.set_service_latency(service, latency);
    }

    /// Keeps only per-service request counts from now on (benchmarks).
    pub fn count_requests_only(&self, counts_only: bool) {
        self.shared.log.set_counts_only(counts_only);
    }

    /// Requests `service` answered since the log was last cleared.
    pub fn request_count(&self, service: Service) -> u64 {
        self.shared.log.count(service)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.entries()
    }

    pub fn requests_to(&self, service: Service) -> Vec<LoggedRequest> {
        self.shared.log.for_service(service)
    }

    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// The stand-ins' clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Moves the stand-ins' clock forward: credentials propagate and expire, tokens
    /// expire, duplicate-detection windows close.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }
}

fn http_client_for(ca: &TestCa) -> Result<reqwest::Client, reqwest::Error> {
    let root = reqwest::Certificate::from_der(ca.cert_der())?;
    reqwest::Client::builder()
        .tls_certs_only([root])
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// A serde error as safe text: structural messages (unknown, missing, duplicate field)
/// name only fields; any other is reduced to its position, since it could quote a value.
pub(crate) fn json_error_detail(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("unknown field")
        || text.starts_with("missing field")
        || text.starts_with("duplicate field")
    {
        let text = text.split(" at line").next().unwrap_or(&text);
        format!("The request body is invalid: {text}.")
    } else {
        format!(
            "The request body is invalid JSON or has a property of the wrong type (line {}, column {}).",
            error.line(),
            error.column()
        )
    }
}

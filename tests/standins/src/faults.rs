//! Fault injection: a queue of one-shot faults per route on each stand-in, a global
//! per-call latency, and the layer that applies both and writes the request log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};

use crate::log::{LoggedRequest, recorded_headers};
use crate::{Service, Shared, entra, graph, keyvault, resourcemanager, servicebus};

/// Which requests a fault applies to: a method (or any) and a path prefix.
#[derive(Debug, Clone)]
pub struct Route {
    method: Option<Method>,
    path_prefix: String,
}

impl Route {
    pub fn new(method: Method, path_prefix: impl Into<String>) -> Self {
        Self {
            method: Some(method),
            path_prefix: path_prefix.into(),
        }
    }

    /// Any method on paths starting with `path_prefix` (`"/"` for every request).
    pub fn any(path_prefix: impl Into<String>) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.into(),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path.starts_with(&self.path_prefix)
    }
}

/// What happens to the one request a fault catches.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with `status` and the service's own error body, with `Retry-After:
    /// {seconds}` when given.
    Status {
        status: u16,
        retry_after_seconds: Option<u64>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    DropConnection,
}

impl Fault {
    /// 429, as every Azure service throttles, with or without `Retry-After` (some identity
    /// endpoints omit it).
    pub fn throttled(retry_after_seconds: Option<u64>) -> Self {
        Self::Status {
            status: 429,
            retry_after_seconds,
        }
    }

    pub fn unavailable(retry_after_seconds: Option<u64>) -> Self {
        Self::Status {
            status: 503,
            retry_after_seconds,
        }
    }

    pub fn internal_error() -> Self {
        Self::Status {
            status: 500,
            retry_after_seconds: None,
        }
    }

    fn label(&self) -> String {
        match self {
            Fault::Status { status, .. } => format!("status {status}"),
            Fault::Delay(d) => format!("delay {} ms", d.as_millis()),
            Fault::DropConnection => "drop connection".to_owned(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    planned: Mutex<Vec<(Service, Route, Fault)>>,
    latency: Mutex<Duration>,
    /// Per-service latency, added to [`FaultBook::latency`]: benchmarks give each
    /// service its own round trip.
    service_latency: Mutex<std::collections::HashMap<Service, Duration>>,
}

impl FaultBook {
    pub(crate) fn push(&self, service: Service, route: Route, fault: Fault) {
        self.lock_planned().push((service, route, fault));
    }

    pub(crate) fn clear(&self) {
        self.lock_planned().clear();
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        *self
            .latency
            .lock()
            .expect("the latency lock is never held across a panic") = latency;
    }

    pub(crate) fn set_service_latency(&self, service: Service, latency: Duration) {
        self.service_latency
            .lock()
            .expect("the latency lock is never held across a panic")
            .insert(service, latency);
    }

    fn latency(&self, service: Service) -> Duration {
        let own = self
            .service_latency
            .lock()
            .expect("the latency lock is never held across a panic")
            .get(&service)
            .copied()
            .unwrap_or_default();
        own + *self
            .latency
            .lock()
            .expect("the latency lock is never held across a panic")
    }

    fn take(&self, service: Service, method: &Method, path: &str) -> Option<Fault> {
        let mut planned = self.lock_planned();
        let index = planned
            .iter()
            .position(|(s, route, _)| *s == service && route.matches(method, path))?;
        Some(planned.remove(index).2)
    }

    fn lock_planned(&self) -> std::sync::MutexGuard<'_, Vec<(Service, Route, Fault)>> {
        self.planned
            .lock()
            .expect("the fault lock is never held across a panic")
    }
}

/// Marks a response whose connection the server closes instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

#[derive(Clone)]
pub(crate) struct LayerState {
    pub service: Service,
    pub shared: Arc<Shared>,
}

pub(crate) async fn layer(State(ctx): State<LayerState>, request: Request, next: Next) -> Response {
    let received = Instant::now();
    let at = ctx.shared.clock.now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let headers = recorded_headers(request.headers());

    let latency = ctx.shared.faults.latency(ctx.service);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = ctx.shared.faults.take(ctx.service, &method, &path);
    let label = fault.as_ref().map(Fault::label);
    let response = match fault {
        None => next.run(request).await,
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::DropConnection) => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        Some(Fault::Status {
            status,
            retry_after_seconds,
        }) => fault_response(ctx.service, status, retry_after_seconds),
    };
    let dropped = response.extensions().get::<DropConnection>().is_some();
    ctx.shared.log.push(LoggedRequest {
        service: ctx.service,
        method: method.to_string(),
        path,
        query,
        headers,
        received,
        at,
        status: if dropped {
            0
        } else {
            response.status().as_u16()
        },
        fault: label,
    });
    response
}

fn fault_response(service: Service, status: u16, retry_after_seconds: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match service {
        Service::KeyVault => keyvault::fault_response(status),
        Service::Graph => graph::fault_response(status),
        Service::Entra => entra::fault_response(status),
        Service::ServiceBus => servicebus::fault_response(status),
        Service::ResourceManager => resourcemanager::fault_response(status),
    };
    if let Some(seconds) = retry_after_seconds {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

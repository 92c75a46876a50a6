//! Request budgets: how fast discovery may call each service, so a sweep never uses more
//! than its share of a published limit and leaves the rest to the applications that
//! share the vault or the tenant.
//!
//! A [`Pacer`] spaces requests evenly: at most `requests` per `window`, each waiting its
//! turn. Even spacing keeps within a sliding window as well as a fixed one, which is what
//! Key Vault's "per 10 seconds" and Graph's per-window limits count.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::ports::catalog::RequestBudget;

/// Key Vault's service limit for secrets, managed storage keys and vault transactions:
/// 4,000 per vault per region per 10 seconds ("Azure Key Vault service limits").
pub const KEY_VAULT_LIMIT_PER_10S: u32 = 4_000;

/// Discovery's default share of it: half, leaving the other half to the applications
/// that read the vault.
pub const DEFAULT_KEY_VAULT_BUDGET_PER_10S: u32 = KEY_VAULT_LIMIT_PER_10S / 2;

/// Graph's identity-and-access throttling for large tenants allows 8,000 resource units
/// per 10 seconds per application per tenant, a list request costing 2 units, an
/// `$expand` 1 more ("Microsoft Graph service-specific throttling limits"). Discovery
/// takes a quarter by default: 500 requests per 10 seconds.
pub const DEFAULT_GRAPH_BUDGET_PER_10S: u32 = 500;

/// Resource Manager allows 250 reads per subscription per principal in a burst,
/// refilled at 25 per second ("Understand how Azure Resource Manager throttles
/// requests"); discovery takes 10 per second.
pub const DEFAULT_RESOURCE_MANAGER_BUDGET_PER_10S: u32 = 100;

/// The window the budgets are counted in.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How many requests discovery may send to each service per [`WINDOW`]: the Key Vault
/// budget applies to each vault, the others to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub key_vault_per_vault: u32,
    pub graph: u32,
    pub resource_manager: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            key_vault_per_vault: DEFAULT_KEY_VAULT_BUDGET_PER_10S,
            graph: DEFAULT_GRAPH_BUDGET_PER_10S,
            resource_manager: DEFAULT_RESOURCE_MANAGER_BUDGET_PER_10S,
        }
    }
}

/// Spaces requests at least `window / requests` apart.
#[derive(Debug)]
pub struct Pacer {
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `requests` per `window`; zero is read as one.
    pub fn new(requests: u32, window: Duration) -> Self {
        Self {
            spacing: window / requests.max(1),
            next: Mutex::new(None),
        }
    }

    /// Waits until the next request may be sent.
    pub async fn wait(&self) {
        self.wait_for(1).await;
    }

    /// Waits until `requests` sent one after another may start, and charges them all:
    /// the caller after them waits `requests` spacings, as if each had waited its turn.
    pub async fn wait_for(&self, requests: u32) {
        if requests == 0 {
            return;
        }
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.spacing * requests);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// A catalog call's further requests (an object's `/owners` pages) wait their turns on the
/// same pacer as the pages.
#[async_trait]
impl RequestBudget for Pacer {
    async fn wait(&self) {
        self.wait_for(1).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pacer_never_lets_more_than_its_budget_through_a_window() {
        let pacer = Pacer::new(4, Duration::from_millis(200));
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait().await;
        }
        // Nine requests at 50 ms spacing: the ninth leaves at 400 ms, never sooner.
        assert!(start.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn requests_charged_together_hold_back_the_next_caller_as_long_as_each_would() {
        let pacer = Pacer::new(4, Duration::from_millis(200));
        let start = Instant::now();
        pacer.wait_for(3).await;
        // Nothing before them: the three start at once...
        assert!(start.elapsed() < Duration::from_millis(50));
        pacer.wait_for(0).await;
        assert!(start.elapsed() < Duration::from_millis(50));
        // ...and the next request waits the three spacings they took.
        pacer.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(150));
    }
}

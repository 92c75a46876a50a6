//! One contract suite per port, each written once as scenarios generic over a fixture
//! (a factory for the adapter and the few things a test needs beside the port, such as
//! seeding what only an operator or another service would create), and run against every
//! adapter of that port: the Azure adapter against the HTTPS stand-ins, the local adapter
//! over its SQLite file and the in-memory double. What an adapter cannot do by its
//! nature is a capability its fixture declares, which the scenario checks, never a
//! silent skip.

use std::collections::BTreeMap;

use keyturn::domain::names::ObjectName;

mod alert_ledger;
mod audit;
mod directory;
mod inventory;
mod lease;
mod queue;
mod source;
mod vault;

/// Runs each scenario against one adapter: a module named after the adapter with one
/// test per scenario, each building a fresh fixture from `$fixture` (an expression
/// evaluated inside that module, so it names its fixture through `super::`).
macro_rules! contract {
    ($adapter:ident: $fixture:expr => $($scenario:ident),+ $(,)?) => {
        mod $adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($fixture.await).await;
                }
            )+
        }
    };
}
pub(crate) use contract;

pub(crate) fn name(text: &str) -> ObjectName {
    ObjectName::parse(text).expect("valid name")
}

pub(crate) fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

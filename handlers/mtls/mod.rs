//! mtls: client-certificate extraction (the `X-ARR-ClientCert` header, or the peer
//! chain when keyturn terminates TLS itself) and the policies that turn a presented
//! certificate into a validated
//! [`ClientIdentity`](crate::domain::identity::ClientIdentity); and the secret endpoint's
//! policies as settings describe them, built and kept fresh (`endpoint`); whether the
//! front end's configuration lets the header be believed, checked at start-up and on a
//! schedule (`front_end`).

pub mod certificate;
pub mod chain;
pub mod endpoint;
pub mod entra_device;
pub(crate) mod front_end;
pub mod header;
pub mod policies;
pub(crate) mod profile;
pub mod thumbprints;
pub mod trust;
pub(crate) mod verdicts;
pub mod verify_cli;

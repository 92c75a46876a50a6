//! Key Vault's service limits on what an object may carry, each defined once with its
//! source, for every module that must stay inside them (the rotation engine writing
//! tags, the local vault refusing what Key Vault would refuse, the command line reading
//! a value). Name lengths are with the names they bound, in [`crate::domain::names`].

/// Tags per secret, key or certificate ("Azure Key Vault service limits").
pub const MAX_TAGS: usize = 15;

/// A tag name's length in characters (the REST API's `tags` description).
pub const MAX_TAG_NAME_LEN: usize = 512;

/// A tag value's length in characters (the REST API's `tags` description).
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// The largest secret value, in bytes: Key Vault refuses values over 25 KB ("Azure Key
/// Vault service limits").
pub const MAX_SECRET_VALUE_BYTES: usize = 25 * 1024;

/// A secret's content type, in characters (the REST API's Set Secret `contentType`).
pub(crate) const MAX_CONTENT_TYPE_LEN: usize = 255;

//! Integration tests, grouped by function and concern, sharing one helpers module.

mod audit;
mod cert_verify;
mod helpers;
mod infra;

//! Integration tests, grouped by function and concern, sharing one helpers module.

mod helpers;

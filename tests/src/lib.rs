//! Helpers for cross-crate integration tests.

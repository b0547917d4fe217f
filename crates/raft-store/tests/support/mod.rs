//! Shared helpers for the store's integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod member_process;
pub mod pki;

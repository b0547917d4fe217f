//! shoal's end-to-end tests across test hosts (the multi-host harness arrives with issue 5). For
//! now this crate holds the repository-wide tidy checks in `tests/tidy.rs`.

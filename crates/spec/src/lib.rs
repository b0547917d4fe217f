//! The Docker vocabulary and the rules of every spec the cluster stores, written once: units
//! (durations and sizes), the text form of every enum, Swarm's defaults, the Go-template
//! placeholders Swarm expands, validation of service, network, secret, config and cluster specs,
//! Docker's Linux vocabulary (capabilities, ulimits, sysctls), name resolution settings
//! (nameservers, search domains, extra hosts), published ports (the `--publish` value, short and
//! long, and a service's port rules), the CSV of long-form flags, the "time ago" text of
//! every list, RFC 3339 times as Docker writes them, how protobuf durations and timestamps read,
//! and how far a root CA rotation has come. Pure: no IO, no clock, no async.
//!
//! The manager calls `validate` on every write path, so no client can bypass a rule; the CLI,
//! compose and the worker call the same functions, so they fail early with the same message.

pub mod csv;
pub mod defaults;
pub mod dns;
pub mod enums;
mod error;
pub mod human;
pub mod linux;
pub mod network;
pub mod ports;
pub mod root_rotation;
pub mod template;
#[cfg(test)]
mod test_ca;
pub mod time;
pub mod tls_info;
pub mod units;
pub mod validate;

pub use error::SpecError;

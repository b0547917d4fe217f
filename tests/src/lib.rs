//! shoal's multi-host end-to-end harness: N test hosts on one machine, each a network namespace
//! on a private underlay bridge, each running `shoal daemon` with its own hostname, data root and
//! socket, with helpers to kill, restart, partition and heal a host. Also the repository-wide
//! tidy check (`tests/tidy.rs`), the pure half of the fault campaign ([`campaign`]), and Docker
//! Swarm test hosts on the same underlay for the benchmarks' side-by-side figures ([`docker`]),
//! with what the benchmarks print them with ([`figures`]).
//!
//! Everything a cluster makes stays inside namespaces it creates: the underlay bridge lives in its
//! own namespace (`<prefix>-ul`), never in the machine's, and each host reaches it through a veth
//! pair. Dropping a [`TestCluster`] removes services, containers, shims, daemons, mounts, data
//! roots and namespaces, also when the test panicked. Starting a cluster needs root, `ip`,
//! `nft`, `nsenter`, `unshare` and `/bin/busybox`; [`skip_reason`] says when one is missing.
//!
//! ```no_run
//! use shoal_tests::{ClusterOptions, TestCluster};
//!
//! let Some(cluster) = TestCluster::start_or_skip("three_hosts", ClusterOptions::new(3)) else {
//!     return;
//! };
//! let manager = cluster.host(1);
//! manager.swarm_init();
//! cluster.host(2).partition();
//! ```

mod busybox;
pub mod campaign;
mod cleanup;
mod cluster;
pub mod docker;
mod error;
pub mod figures;
mod host;
pub mod http;
mod netns;
mod process;
mod skip;
mod wait;

pub use busybox::build_busybox_tarball;
pub use cleanup::{inside, processes_mentioning};
pub use cluster::{ClusterOptions, Footprint, TestCluster, default_shoal_binary};
pub use error::HarnessError;
pub use host::{DOCKER_CLI, TestHost};
pub use netns::DaemonNamespace;
pub use process::{output_text, pause_process, run as run_with_timeout, run_with_input};
pub use skip::{REQUIRE_ALL_TESTS, root_skip_reason, skip, skip_notice, skip_reason};
pub use wait::{poll_until, wait_until};

//! Embedded DNS: the resolver every task sees at 127.0.0.11, as Docker's.
//!
//! - `records` is the pure core: the names of the networks a node knows (services, aliases,
//!   VIPs, tasks and whether each serves) and the answer to one question asked by one task.
//! - `upstream` reads the host's resolvers from `/etc/resolv.conf`; `resolv_conf` writes the
//!   resolv.conf a task gets.
//! - `netns` opens the listening sockets inside a task's network namespace.
//! - `server` serves those sockets with hickory-server on the caller's tokio runtime (no thread
//!   or process per task) and forwards the names that are not ours to the upstream resolvers.

mod error;
pub mod netns;
pub mod records;
pub mod resolv_conf;
pub mod server;
pub mod upstream;

pub use error::DnsError;
pub use netns::{EMBEDDED_DNS_ADDRESS, TaskSockets, open_task_sockets};
pub use records::{
    Answer, AnswerRecord, AskingTask, DnsTable, NetworkRecords, QueryType, RECORD_TTL,
    ServiceEndpoint, ServiceRecords, TaskHealth, TaskRecord,
};
pub use resolv_conf::{TaskResolvConf, task_resolv_conf};
pub use server::{DnsServer, ForwardingConfig, TaskDns, TaskUpstreams};
pub use upstream::{task_upstreams, upstreams_from_resolv_conf};

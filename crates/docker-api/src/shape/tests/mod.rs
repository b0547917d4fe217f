//! The shapes against Docker's JSON: the documents shoal shows, the specs Docker's clients send,
//! round trips through both, and the errors a wrong document gets.

mod common;
mod network;
mod node;
mod payload;
mod service;
mod swarm;
mod task;

use shoal_proto::api;

fn ts(seconds: i64) -> api::Timestamp {
    api::Timestamp { seconds, nanos: 0 }
}

fn seconds(seconds: i64) -> Option<api::Duration> {
    Some(api::Duration { seconds, nanos: 0 })
}

/// The message of a document that should have been refused.
fn refusal<T: std::fmt::Debug>(result: Result<T, super::ShapeError>) -> String {
    match result {
        Ok(read) => panic!("expected an error, read {read:?}"),
        Err(error) => error.to_string(),
    }
}

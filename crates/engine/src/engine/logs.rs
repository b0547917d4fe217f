//! `logs`: the entries already written (the last `tail` of them), then, when following, new ones
//! as the shim writes them until the container has exited and nothing more comes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Entry, blocking};
use crate::container::RunStatus;
use crate::error::Result;
use crate::logs::{self, LogEntry};

/// Streams `entry`'s log into the returned channel from a task of its own.
pub(super) fn stream(
    entry: Arc<Entry>,
    follow: bool,
    tail: Option<usize>,
) -> mpsc::Receiver<Result<LogEntry>> {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        let dir = entry.dir.root.clone();
        let first = blocking(move || logs::read_entries(&dir, tail)).await;
        let mut cursor = match first {
            Ok((entries, cursor)) => {
                for item in entries {
                    if sender.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                cursor
            }
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        if !follow {
            return;
        }
        loop {
            let running = entry.dir.read_state().status == RunStatus::Running;
            let new = match logs::read_new_entries(&entry.dir.root, &mut cursor) {
                Ok(new) => new,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let idle = new.is_empty();
            for item in new {
                if sender.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if idle && !running {
                return;
            }
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = sender.closed() => return,
                }
            }
        }
    });
    receiver
}

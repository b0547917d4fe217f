//! The ordered stream of committed changes. A ring of recent entries, bounded both by count and
//! by the bytes of the records they carry, lets a watcher resume from any index it still covers;
//! one that fell further behind gets a clear error and re-lists, so a change is never silently
//! skipped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::StoreError;
use crate::types::CommittedChanges;

struct Ring {
    /// Each entry with its size as counted against `byte_budget`.
    entries: VecDeque<(Arc<CommittedChanges>, usize)>,
    /// The lowest log index from which this ring holds every change.
    covered_from: u64,
    capacity: usize,
    /// The most bytes the entries may hold together; the newest entry is kept whatever its size.
    byte_budget: usize,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, changes: CommittedChanges) {
        let size = changes.approximate_bytes();
        self.entries.push_back((Arc::new(changes), size));
        self.bytes += size;
        while self.entries.len() > self.capacity
            || (self.bytes > self.byte_budget && self.entries.len() > 1)
        {
            let Some((evicted, evicted_size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= evicted_size;
            self.covered_from = evicted.index + 1;
        }
    }
}

pub(crate) struct WatchHub {
    ring: Mutex<Ring>,
    applied: watch::Sender<u64>,
}

impl WatchHub {
    /// A hub at `applied_index` that keeps at most `capacity` entries holding at most
    /// `byte_budget` bytes of records.
    pub(crate) fn new(applied_index: u64, capacity: usize, byte_budget: usize) -> Self {
        WatchHub {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                covered_from: applied_index + 1,
                capacity: capacity.max(1),
                byte_budget,
                bytes: 0,
            }),
            applied: watch::Sender::new(applied_index),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the changes of newly applied entries and wakes watchers.
    pub(crate) fn publish(&self, batch: Vec<CommittedChanges>, applied_index: u64) {
        if !batch.is_empty() {
            let mut ring = self.ring();
            for changes in batch {
                ring.push(changes);
            }
        }
        self.applied.send_replace(applied_index);
    }

    /// Forgets all history: the state was replaced by a snapshot at `snapshot_index`.
    pub(crate) fn reset(&self, snapshot_index: u64) {
        {
            let mut ring = self.ring();
            ring.entries.clear();
            ring.bytes = 0;
            ring.covered_from = snapshot_index + 1;
        }
        self.applied.send_replace(snapshot_index);
    }

    /// Waits until the local state has applied `index`.
    pub(crate) async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        let mut receiver = self.applied.subscribe();
        receiver
            .wait_for(|applied| *applied >= index)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::ShuttingDown)
    }

    /// A watch from the first change not yet published.
    pub(crate) fn subscribe_after_published(self: &Arc<Self>) -> Watch {
        let published = *self.applied.borrow();
        self.subscribe(published + 1)
    }

    pub(crate) fn subscribe(self: &Arc<Self>, from_index: u64) -> Watch {
        Watch {
            hub: Arc::clone(self),
            next_index: from_index,
            applied: self.applied.subscribe(),
        }
    }

    fn next_after(&self, next_index: u64) -> Result<Option<Arc<CommittedChanges>>, StoreError> {
        let ring = self.ring();
        if next_index < ring.covered_from {
            return Err(StoreError::WatchCompacted {
                requested: next_index,
                oldest_retained: ring.covered_from,
            });
        }
        let position = ring
            .entries
            .partition_point(|(changes, _)| changes.index < next_index);
        Ok(ring
            .entries
            .get(position)
            .map(|(changes, _)| Arc::clone(changes)))
    }
}

/// A watcher's position in the stream of committed changes.
pub struct Watch {
    hub: Arc<WatchHub>,
    next_index: u64,
    applied: watch::Receiver<u64>,
}

impl Watch {
    /// The next committed entry that changed objects, at or after the watcher's position. Entries
    /// that changed nothing (refused transactions, membership changes) are skipped.
    pub async fn next(&mut self) -> Result<Arc<CommittedChanges>, StoreError> {
        loop {
            if let Some(changes) = self.hub.next_after(self.next_index)? {
                self.next_index = changes.index + 1;
                return Ok(changes);
            }
            self.applied
                .changed()
                .await
                .map_err(|_| StoreError::ShuttingDown)?;
        }
    }

    /// The index the watcher will resume from.
    pub fn position(&self) -> u64 {
        self.next_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChangeEvent, ObjectRecord};

    fn changes(index: u64) -> CommittedChanges {
        CommittedChanges {
            index,
            changes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn resumes_from_any_covered_index_and_refuses_older_ones() {
        let hub = Arc::new(WatchHub::new(0, 3, usize::MAX));
        hub.publish(vec![changes(1), changes(3), changes(4)], 4);
        let mut watch = hub.subscribe(2);
        assert_eq!(watch.next().await.unwrap().index, 3);
        assert_eq!(watch.next().await.unwrap().index, 4);
        // Index 1 falls out of the ring of three.
        hub.publish(vec![changes(6)], 6);
        assert_eq!(watch.next().await.unwrap().index, 6);
        let mut stale = hub.subscribe(1);
        assert!(matches!(
            stale.next().await,
            Err(StoreError::WatchCompacted {
                requested: 1,
                oldest_retained: 2
            })
        ));
    }

    /// Entries are applied before their changes are published: a watch from "now" starts at
    /// the first change not yet published, so the next one published reaches it.
    #[tokio::test]
    async fn a_watch_after_the_published_changes_gets_the_next_one() {
        let hub = Arc::new(WatchHub::new(0, 10, usize::MAX));
        hub.publish(vec![changes(1), changes(2)], 2);
        let mut watch = hub.subscribe_after_published();
        assert_eq!(watch.position(), 3);
        hub.publish(vec![changes(3)], 3);
        assert_eq!(watch.next().await.unwrap().index, 3);
    }

    fn changes_with_data(index: u64, bytes: usize) -> CommittedChanges {
        let record = ObjectRecord {
            kind: "task".to_owned(),
            id: format!("t{index}"),
            name: String::new(),
            version: index,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            updated_at: std::time::SystemTime::UNIX_EPOCH,
            data: vec![0; bytes].into(),
        };
        CommittedChanges {
            index,
            changes: vec![ChangeEvent::Updated {
                old: record.clone(),
                new: record,
            }],
        }
    }

    #[tokio::test]
    async fn evicts_the_oldest_entries_once_their_bytes_pass_the_budget() {
        // Room for 10,000 entries by count, but only about three of these by bytes: each holds
        // an old and a new record of 1,000 bytes.
        let hub = Arc::new(WatchHub::new(0, 10_000, 7_000));
        hub.publish(
            (1..=5)
                .map(|index| changes_with_data(index, 1_000))
                .collect(),
            5,
        );
        let mut stale = hub.subscribe(2);
        assert!(matches!(
            stale.next().await,
            Err(StoreError::WatchCompacted {
                requested: 2,
                oldest_retained: 3
            })
        ));
        let mut recent = hub.subscribe(3);
        assert_eq!(recent.next().await.unwrap().index, 3);
        assert_eq!(recent.next().await.unwrap().index, 4);
        assert_eq!(recent.next().await.unwrap().index, 5);
    }

    #[tokio::test]
    async fn keeps_the_newest_entry_even_when_it_alone_passes_the_budget() {
        let hub = Arc::new(WatchHub::new(0, 10_000, 1_000));
        hub.publish(
            vec![changes_with_data(1, 10), changes_with_data(2, 5_000)],
            2,
        );
        let mut watch = hub.subscribe(2);
        assert_eq!(watch.next().await.unwrap().index, 2);
        assert!(matches!(
            hub.subscribe(1).next().await,
            Err(StoreError::WatchCompacted { .. })
        ));
    }

    #[tokio::test]
    async fn waits_for_changes_not_yet_applied() {
        let hub = Arc::new(WatchHub::new(5, 10, usize::MAX));
        let mut watch = hub.subscribe(6);
        let publisher = Arc::clone(&hub);
        tokio::spawn(async move { publisher.publish(vec![changes(7)], 7) });
        assert_eq!(watch.next().await.unwrap().index, 7);
        hub.reset(20);
        assert!(matches!(
            watch.next().await,
            Err(StoreError::WatchCompacted { .. })
        ));
    }
}

//! The ordered stream of committed changes. A bounded ring of recent entries lets a watcher resume
//! from any index it still covers; one that fell further behind gets a clear error and re-lists,
//! so a change is never silently skipped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::StoreError;
use crate::types::CommittedChanges;

struct Ring {
    entries: VecDeque<Arc<CommittedChanges>>,
    /// The lowest log index from which this ring holds every change.
    covered_from: u64,
    capacity: usize,
}

pub(crate) struct WatchHub {
    ring: Mutex<Ring>,
    applied: watch::Sender<u64>,
}

impl WatchHub {
    pub(crate) fn new(applied_index: u64, capacity: usize) -> Self {
        WatchHub {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                covered_from: applied_index + 1,
                capacity: capacity.max(1),
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
                if ring.entries.len() == ring.capacity
                    && let Some(evicted) = ring.entries.pop_front()
                {
                    ring.covered_from = evicted.index + 1;
                }
                ring.entries.push_back(Arc::new(changes));
            }
        }
        self.applied.send_replace(applied_index);
    }

    /// Forgets all history: the state was replaced by a snapshot at `snapshot_index`.
    pub(crate) fn reset(&self, snapshot_index: u64) {
        {
            let mut ring = self.ring();
            ring.entries.clear();
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
            .partition_point(|changes| changes.index < next_index);
        Ok(ring.entries.get(position).cloned())
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

    fn changes(index: u64) -> CommittedChanges {
        CommittedChanges {
            index,
            changes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn resumes_from_any_covered_index_and_refuses_older_ones() {
        let hub = Arc::new(WatchHub::new(0, 3));
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

    #[tokio::test]
    async fn waits_for_changes_not_yet_applied() {
        let hub = Arc::new(WatchHub::new(5, 10));
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

//! The shell around [`ClusterView`]: one view per manager, advanced from the store's watch,
//! telling the follower of each node what each advance touched of it: changes to its object or
//! its tasks reach only that node's follower, and only the changes that can concern every node
//! are broadcast to all (a thousand sessions are not all woken for one node's write). A
//! subscriber subscribes before it reads the view, so a change is either in what it read or
//! told to it afterwards. A reader that must see
//! every acknowledged write (the control API) passes the store's read barrier first and then
//! brings the view up to what the store has applied, so it never reads behind the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;
use raft_store::{Store, StoreError, Watch};
use tokio::sync::{broadcast, watch};

use super::{ClusterView, Touched};
use crate::error::ManagerError;

/// Notices a subscriber may fall behind by before it is told it lagged (and then treats the
/// lag as everything having changed).
const NOTICE_CAPACITY: usize = 1024;
/// The pause before the follower tries again after the view could not be brought up to date.
const REBUILD_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct SharedView {
    store: Arc<Store>,
    following: Mutex<Following>,
    /// The notices that can concern every node ([`Touched::is_wide`]).
    wide_notices: broadcast::Sender<Arc<Touched>>,
    /// Per node with a follower, the signals of a change to its object and to its tasks.
    node_signals: Mutex<HashMap<String, NodeSignals>>,
}

struct NodeSignals {
    object: watch::Sender<()>,
    tasks: watch::Sender<()>,
}

/// What the follower of one node is told: a change to the node's own object, a change to its
/// tasks (or which tasks it has), and every change that can concern all nodes.
pub(crate) struct NodeNotices {
    pub(crate) object: watch::Receiver<()>,
    pub(crate) tasks: watch::Receiver<()>,
    pub(crate) wide: broadcast::Receiver<Arc<Touched>>,
}

/// The view and the watch it advances from, changed together under one lock.
struct Following {
    view: ClusterView,
    changes: Watch,
    /// A change could not be applied: the view must be rebuilt before it is read again.
    broken: bool,
}

impl SharedView {
    /// Builds the view from the store as it is and keeps it following the store's changes
    /// until `stop` changes.
    pub(crate) fn start(
        store: Arc<Store>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<SharedView>, ManagerError> {
        let shared = SharedView::unfollowed(store)?;
        tokio::spawn(follow(Arc::clone(&shared), stop));
        Ok(shared)
    }

    /// Builds the view from the store as it is, advanced only when read through
    /// [`SharedView::read_current`]: for a reader of its own that needs no notices (an
    /// orchestration loop outside a manager role). No task holds it, so it and its store are
    /// let go with its last reader.
    pub(crate) fn unfollowed(store: Arc<Store>) -> Result<Arc<SharedView>, ManagerError> {
        let (view, changes) = read_whole(&store)?;
        Ok(Arc::new(SharedView {
            store,
            following: Mutex::new(Following {
                view,
                changes,
                broken: false,
            }),
            wide_notices: broadcast::channel(NOTICE_CAPACITY).0,
            node_signals: Mutex::new(HashMap::new()),
        }))
    }

    /// Notices of what later changes touch of node `node_id`, and of those that concern every
    /// node; subscribe before reading, so nothing falls between.
    pub(crate) fn subscribe_node(&self, node_id: &str) -> NodeNotices {
        let wide = self.wide_notices.subscribe();
        let mut signals = self
            .node_signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let signals = signals
            .entry(node_id.to_owned())
            .or_insert_with(|| NodeSignals {
                object: watch::channel(()).0,
                tasks: watch::channel(()).0,
            });
        NodeNotices {
            object: signals.object.subscribe(),
            tasks: signals.tasks.subscribe(),
            wide,
        }
    }

    /// Tells each subscriber what concerns it of `touched`.
    fn tell(&self, touched: Touched) {
        let signals = self
            .node_signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for node_id in &touched.nodes {
            if let Some(signals) = signals.get(node_id) {
                signals.object.send_replace(());
            }
        }
        for node_id in &touched.task_nodes {
            if let Some(signals) = signals.get(node_id) {
                signals.tasks.send_replace(());
            }
        }
        if touched.is_wide() {
            let _ = self.wide_notices.send(Arc::new(touched));
        }
    }

    /// Runs `read` over the view as the follower last left it.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&ClusterView) -> R) -> R {
        read(&self.lock().view)
    }

    /// Runs `read` over the view once it holds everything the store has applied: after a read
    /// barrier, a linearizable read.
    pub(crate) fn read_current<R>(
        &self,
        read: impl FnOnce(&ClusterView) -> R,
    ) -> Result<R, ManagerError> {
        let mut following = self.lock();
        self.catch_up(&mut following)?;
        Ok(read(&following.view))
    }

    fn lock(&self) -> MutexGuard<'_, Following> {
        self.following
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies every change the store has published and not yet in the view, in one go, and
    /// tells subscribers what that touched. Returns the watch position the view has reached.
    fn catch_up(&self, following: &mut Following) -> Result<u64, ManagerError> {
        if following.broken {
            self.rebuild(following)?;
        }
        let mut touched = Touched::default();
        let mut applied_any = false;
        // Everything the store has applied is already published, so what is not ready now is
        // newer than any barrier the caller passed.
        while let Some(next) = following.changes.next().now_or_never() {
            match next {
                Ok(changes) => match following.view.apply(&changes) {
                    Ok(more) => {
                        touched.extend(more);
                        applied_any = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a change could not be applied to the cluster view: rebuilding it");
                        following.broken = true;
                        self.rebuild(following)?;
                        return Ok(following.changes.position());
                    }
                },
                Err(StoreError::WatchCompacted { .. }) => {
                    tracing::info!("the store's watch moved past the cluster view: rebuilding it");
                    self.rebuild(following)?;
                    return Ok(following.changes.position());
                }
                Err(error) => return Err(error.into()),
            }
        }
        if applied_any {
            self.tell(touched);
        }
        Ok(following.changes.position())
    }

    /// Replaces the view with the whole store and tells subscribers everything changed.
    fn rebuild(&self, following: &mut Following) -> Result<(), ManagerError> {
        let (view, changes) = read_whole(&self.store)?;
        *following = Following {
            view,
            changes,
            broken: false,
        };
        self.tell(Touched::everything());
        Ok(())
    }
}

/// The whole store decoded, and a watch from the first change after it.
fn read_whole(store: &Store) -> Result<(ClusterView, Watch), ManagerError> {
    let (view, applied) = store.local_view(|view| {
        ClusterView::from_store(view).map(|cluster| (cluster, view.applied_index()))
    })?;
    Ok((view, store.watch(applied + 1)))
}

/// Brings the view up to date whenever the store publishes a change, so the dispatcher's
/// subscribers hear of it without anyone reading.
async fn follow(shared: Arc<SharedView>, mut stop: watch::Receiver<bool>) {
    loop {
        let caught_up = {
            let mut following = shared.lock();
            shared.catch_up(&mut following)
        };
        let position = match caught_up {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(%error, "the cluster view could not follow the store: trying again");
                tokio::select! {
                    _ = tokio::time::sleep(REBUILD_RETRY) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // A watch of its own, only to wait on: the view's is advanced under the lock.
        let mut wake = shared.store.watch(position);
        tokio::select! {
            woken = wake.next() => match woken {
                Ok(_) | Err(StoreError::WatchCompacted { .. }) => {}
                Err(error) => {
                    tracing::info!(%error, "the cluster view stops following the store");
                    return;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use raft_store::Transaction;
    use shoal_proto::api::Task;

    use super::*;
    use crate::objects;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_follower_of_a_node_is_told_of_its_change_after_the_view_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::view::tests::leading_store(dir.path()).await);
        let first = Task {
            id: "t1".into(),
            node_id: "n1".into(),
            ..Default::default()
        };
        store
            .write(Transaction::new(vec![objects::create(&first)]))
            .await
            .unwrap();
        let (_stop, stop) = watch::channel(false);
        let shared = SharedView::start(Arc::clone(&store), stop).unwrap();
        let mut n1 = shared.subscribe_node("n1");
        let mut n2 = shared.subscribe_node("n2");
        // What was stored before the start is in the view from the first read.
        assert!(shared.read(|view| view.task("t1").is_some()));
        let second = Task {
            id: "t2".into(),
            node_id: "n2".into(),
            ..Default::default()
        };
        store
            .write(Transaction::new(vec![objects::create(&second)]))
            .await
            .unwrap();
        // A read past the barrier sees the write at once, whether or not the follower has.
        store.read_barrier().await.unwrap();
        assert!(
            shared
                .read_current(|view| view.task("t2").is_some())
                .unwrap()
        );
        tokio::time::timeout(Duration::from_secs(10), n2.tasks.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(shared.read(|view| view.tasks_on_node("n2").count() == 1));
        // Only n2's follower is told: n1's tasks, n1's and n2's objects did not change, and
        // nothing concerned every node.
        assert!(!n1.tasks.has_changed().unwrap());
        assert!(!n1.object.has_changed().unwrap());
        assert!(!n2.object.has_changed().unwrap());
        assert!(n1.wide.try_recv().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unappliable_change_rebuilds_the_view_once_the_store_decodes_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::view::tests::leading_store(dir.path()).await);
        let (_stop, stop) = watch::channel(false);
        let shared = SharedView::start(Arc::clone(&store), stop).unwrap();
        let mut notices = shared.subscribe_node("n1");
        // The store keeps opaque bytes, so it takes a task no one can decode.
        let broken = store
            .write(Transaction::create("task", "broken", "", vec![0xff; 3]))
            .await
            .unwrap();
        let fine = Task {
            id: "fine".into(),
            node_id: "n1".into(),
            ..Default::default()
        };
        store
            .write(Transaction::new(vec![
                objects::create(&fine),
                raft_store::Change::Delete {
                    kind: "task".into(),
                    id: "broken".into(),
                    expected_version: broken,
                },
            ]))
            .await
            .unwrap();
        let touched = tokio::time::timeout(Duration::from_secs(10), notices.wide.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(touched.everything, "{touched:?}");
        let decoded = store.local_view(|view| ClusterView::from_store(view).unwrap());
        assert!(shared.read(|view| *view == decoded));
        assert!(shared.read(|view| view.task("fine").is_some()));
    }
}

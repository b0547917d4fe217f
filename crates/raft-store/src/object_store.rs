//! The replicated state itself: every object by kind and id, with a name index. Applying a
//! transaction is pure and deterministic, so every member that applies the same log reaches the
//! same state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use crate::types::{Change, ChangeEvent, Kind, ObjectRecord, Transaction, TxnRejection};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectStore {
    objects: BTreeMap<(Kind, String), ObjectRecord>,
    names: HashMap<(Kind, String), String>,
}

impl ObjectStore {
    pub(crate) fn from_records(records: Vec<ObjectRecord>) -> Self {
        let mut store = ObjectStore::default();
        for record in records {
            if !record.name.is_empty() {
                store.names.insert(
                    (record.kind.clone(), record.name.clone()),
                    record.id.clone(),
                );
            }
            store
                .objects
                .insert((record.kind.clone(), record.id.clone()), record);
        }
        store
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = &ObjectRecord> {
        self.objects.values()
    }

    pub(crate) fn get(&self, kind: &str, id: &str) -> Option<&ObjectRecord> {
        self.objects.get(&(kind.to_owned(), id.to_owned()))
    }

    pub(crate) fn get_by_name(&self, kind: &str, name: &str) -> Option<&ObjectRecord> {
        let id = self.names.get(&(kind.to_owned(), name.to_owned()))?;
        self.get(kind, id)
    }

    pub(crate) fn list(&self, kind: &str) -> impl Iterator<Item = &ObjectRecord> {
        let start = (kind.to_owned(), String::new());
        self.objects
            .range(start..)
            .take_while(move |((object_kind, _), _)| object_kind == kind)
            .map(|(_, record)| record)
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// Applies `txn` as the entry at `index`: all of it, or, when any change is refused, none.
    pub(crate) fn apply(
        &mut self,
        txn: &Transaction,
        index: u64,
    ) -> Result<Vec<ChangeEvent>, TxnRejection> {
        self.check(txn)?;
        let now = txn.proposed_at.unwrap_or(SystemTime::UNIX_EPOCH);
        let mut events = Vec::with_capacity(txn.changes.len());
        for change in &txn.changes {
            events.push(self.apply_checked(change, index, now));
        }
        Ok(events)
    }

    /// Checks every change against the current state before anything is touched.
    fn check(&self, txn: &Transaction) -> Result<(), TxnRejection> {
        if txn.changes.is_empty() {
            return Err(TxnRejection::Empty);
        }
        let mut touched = HashSet::new();
        // Names that this transaction frees (deleted or renamed objects), and names it claims.
        let mut freed: HashSet<(&str, &str)> = HashSet::new();
        let mut claimed: Vec<(&str, &str, &str)> = Vec::new();
        for change in &txn.changes {
            let (kind, id) = (change.kind(), change.id());
            if !touched.insert((kind, id)) {
                return Err(TxnRejection::DuplicateChange {
                    kind: kind.to_owned(),
                    id: id.to_owned(),
                });
            }
            let existing = self.get(kind, id);
            match change {
                Change::Create { name, .. } => {
                    if existing.is_some() {
                        return Err(TxnRejection::AlreadyExists {
                            kind: kind.to_owned(),
                            id: id.to_owned(),
                        });
                    }
                    if !name.is_empty() {
                        claimed.push((kind, name, id));
                    }
                }
                Change::Update {
                    name,
                    expected_version,
                    ..
                } => {
                    let current = Self::expect_version(kind, id, existing, *expected_version)?;
                    if current.name != *name {
                        if !current.name.is_empty() {
                            freed.insert((kind, current.name.as_str()));
                        }
                        if !name.is_empty() {
                            claimed.push((kind, name, id));
                        }
                    }
                }
                Change::Delete {
                    expected_version, ..
                } => {
                    let current = Self::expect_version(kind, id, existing, *expected_version)?;
                    if !current.name.is_empty() {
                        freed.insert((kind, current.name.as_str()));
                    }
                }
            }
        }
        let mut claimed_now = HashSet::new();
        for (kind, name, id) in claimed {
            let holder = self.names.get(&(kind.to_owned(), name.to_owned()));
            let taken_by_other =
                holder.is_some_and(|holder| !freed.contains(&(kind, name)) && holder != id);
            if taken_by_other || !claimed_now.insert((kind, name)) {
                return Err(TxnRejection::NameInUse {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    existing_id: holder
                        .cloned()
                        .unwrap_or_else(|| "this transaction".to_owned()),
                });
            }
        }
        Ok(())
    }

    fn expect_version<'a>(
        kind: &str,
        id: &str,
        existing: Option<&'a ObjectRecord>,
        expected: u64,
    ) -> Result<&'a ObjectRecord, TxnRejection> {
        let current = existing.ok_or_else(|| TxnRejection::NotFound {
            kind: kind.to_owned(),
            id: id.to_owned(),
        })?;
        if current.version != expected {
            return Err(TxnRejection::Conflict {
                kind: kind.to_owned(),
                id: id.to_owned(),
                expected,
                actual: current.version,
            });
        }
        Ok(current)
    }

    fn apply_checked(&mut self, change: &Change, index: u64, now: SystemTime) -> ChangeEvent {
        match change {
            Change::Create {
                kind,
                id,
                name,
                data,
            } => {
                let record = ObjectRecord {
                    kind: kind.clone(),
                    id: id.clone(),
                    name: name.clone(),
                    version: index,
                    created_at: now,
                    updated_at: now,
                    data: data.clone(),
                };
                self.index_name(&record);
                self.objects
                    .insert((kind.clone(), id.clone()), record.clone());
                ChangeEvent::Created(record)
            }
            Change::Update {
                kind,
                id,
                name,
                data,
                ..
            } => {
                let key = (kind.clone(), id.clone());
                let old = self
                    .objects
                    .remove(&key)
                    .unwrap_or_else(|| unreachable_checked(kind, id));
                self.unindex_name(&old);
                let new = ObjectRecord {
                    name: name.clone(),
                    version: index,
                    updated_at: now,
                    data: data.clone(),
                    ..old.clone()
                };
                self.index_name(&new);
                self.objects.insert(key, new.clone());
                ChangeEvent::Updated { old, new }
            }
            Change::Delete { kind, id, .. } => {
                let old = self
                    .objects
                    .remove(&(kind.clone(), id.clone()))
                    .unwrap_or_else(|| unreachable_checked(kind, id));
                self.unindex_name(&old);
                ChangeEvent::Deleted(old)
            }
        }
    }

    fn index_name(&mut self, record: &ObjectRecord) {
        if !record.name.is_empty() {
            self.names.insert(
                (record.kind.clone(), record.name.clone()),
                record.id.clone(),
            );
        }
    }

    fn unindex_name(&mut self, record: &ObjectRecord) {
        let key = (record.kind.clone(), record.name.clone());
        if self.names.get(&key) == Some(&record.id) {
            self.names.remove(&key);
        }
    }
}

/// `check` has proved the object exists; reaching this is a bug in the store, not bad input.
fn unreachable_checked(kind: &str, id: &str) -> ! {
    panic!("{kind} {id} vanished between check and apply")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(kind: &str, id: &str, name: &str) -> Change {
        Change::Create {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
            data: id.as_bytes().to_vec().into(),
        }
    }

    fn update(kind: &str, id: &str, name: &str, version: u64) -> Change {
        Change::Update {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
            expected_version: version,
            data: b"updated".to_vec().into(),
        }
    }

    fn delete(kind: &str, id: &str, version: u64) -> Change {
        Change::Delete {
            kind: kind.into(),
            id: id.into(),
            expected_version: version,
        }
    }

    fn apply(
        store: &mut ObjectStore,
        index: u64,
        changes: Vec<Change>,
    ) -> Result<(), TxnRejection> {
        store.apply(&Transaction::new(changes), index).map(|_| ())
    }

    #[test]
    fn versions_are_the_index_that_last_changed_the_object() {
        let mut store = ObjectStore::default();
        apply(&mut store, 3, vec![create("service", "a", "web")]).unwrap();
        assert_eq!(store.get("service", "a").unwrap().version, 3);
        apply(&mut store, 7, vec![update("service", "a", "web", 3)]).unwrap();
        let record = store.get("service", "a").unwrap();
        assert_eq!((record.version, &record.data[..]), (7, &b"updated"[..]));
    }

    #[test]
    fn a_stale_update_fails_the_whole_batch() {
        let mut store = ObjectStore::default();
        apply(&mut store, 1, vec![create("service", "a", "web")]).unwrap();
        let before = store.clone();
        let refused = apply(
            &mut store,
            2,
            vec![create("task", "t1", ""), update("service", "a", "web", 0)],
        );
        assert_eq!(
            refused,
            Err(TxnRejection::Conflict {
                kind: "service".into(),
                id: "a".into(),
                expected: 0,
                actual: 1
            })
        );
        assert_eq!(store, before, "nothing of a refused batch is applied");
    }

    #[test]
    fn names_are_unique_per_kind() {
        let mut store = ObjectStore::default();
        apply(&mut store, 1, vec![create("service", "a", "web")]).unwrap();
        assert!(matches!(
            apply(&mut store, 2, vec![create("service", "b", "web")]),
            Err(TxnRejection::NameInUse { .. })
        ));
        // Another kind may use the same name, and unnamed objects never collide.
        apply(&mut store, 3, vec![create("network", "n", "web")]).unwrap();
        apply(
            &mut store,
            4,
            vec![create("task", "t1", ""), create("task", "t2", "")],
        )
        .unwrap();
        assert_eq!(store.get_by_name("service", "web").unwrap().id, "a");
    }

    #[test]
    fn a_name_freed_in_the_same_batch_can_be_claimed() {
        let mut store = ObjectStore::default();
        apply(&mut store, 1, vec![create("service", "a", "web")]).unwrap();
        apply(
            &mut store,
            2,
            vec![delete("service", "a", 1), create("service", "b", "web")],
        )
        .unwrap();
        assert_eq!(store.get_by_name("service", "web").unwrap().id, "b");
        apply(
            &mut store,
            3,
            vec![
                update("service", "b", "api", 2),
                create("service", "c", "web"),
            ],
        )
        .unwrap();
        assert_eq!(store.get_by_name("service", "api").unwrap().id, "b");
        assert_eq!(store.get_by_name("service", "web").unwrap().id, "c");
        assert!(matches!(
            apply(
                &mut store,
                4,
                vec![create("service", "d", "x"), create("service", "e", "x")]
            ),
            Err(TxnRejection::NameInUse { .. })
        ));
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut store = ObjectStore::default();
        assert_eq!(apply(&mut store, 1, vec![]), Err(TxnRejection::Empty));
        assert!(matches!(
            apply(&mut store, 1, vec![delete("task", "missing", 1)]),
            Err(TxnRejection::NotFound { .. })
        ));
        apply(&mut store, 1, vec![create("task", "t", "")]).unwrap();
        assert!(matches!(
            apply(&mut store, 2, vec![create("task", "t", "")]),
            Err(TxnRejection::AlreadyExists { .. })
        ));
        assert!(matches!(
            apply(
                &mut store,
                2,
                vec![update("task", "t", "", 1), delete("task", "t", 1)]
            ),
            Err(TxnRejection::DuplicateChange { .. })
        ));
    }

    #[test]
    fn list_returns_one_kind_in_id_order() {
        let mut store = ObjectStore::default();
        apply(
            &mut store,
            1,
            vec![
                create("task", "b", ""),
                create("task", "a", ""),
                create("tasks", "z", ""),
            ],
        )
        .unwrap();
        let ids: Vec<&str> = store.list("task").map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let rebuilt = ObjectStore::from_records(store.records().cloned().collect());
        assert_eq!(rebuilt, store);
    }
}

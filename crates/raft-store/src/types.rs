//! The store's data model: opaque objects, transactions of changes, and their outcomes. The store
//! knows kinds, ids and names; what an object means is the manager's business.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// A member's Raft id. Managers derive it from their node id; tests pick small numbers.
pub type MemberId = u64;

/// The kind of a stored object, such as `"service"` or `"task"`. The store only uses it to keep
/// kinds apart; it gives no kind a meaning.
pub type Kind = String;

/// One object as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub kind: Kind,
    pub id: String,
    /// Unique among live objects of the same kind when not empty (Swarm's name rule for services,
    /// networks, secrets and configs). Tasks and nodes leave it empty.
    pub name: String,
    /// The Raft index of the entry that last changed the object.
    pub version: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// The object's encoding, usually a protobuf message from `shoal_proto::api`. Shared, not
    /// copied, by the change that wrote it, the Raft log entry that carries that change and
    /// the watch history's events: at 50,000 tasks, copies of it were some 100 MB of a
    /// manager's memory.
    pub data: Bytes,
}

impl ObjectRecord {
    /// About how much memory the record holds: its data and strings, plus a fixed allowance for
    /// the rest. Used to bound what is kept in memory, so it need not be exact.
    pub fn approximate_bytes(&self) -> usize {
        const FIXED_FIELDS: usize = 64;
        FIXED_FIELDS + self.kind.len() + self.id.len() + self.name.len() + self.data.len()
    }
}

/// One change in a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Create {
        kind: Kind,
        id: String,
        name: String,
        data: Bytes,
    },
    /// Replaces an object, provided it is still at `expected_version` (optimistic concurrency).
    Update {
        kind: Kind,
        id: String,
        name: String,
        expected_version: u64,
        data: Bytes,
    },
    /// Removes an object, provided it is still at `expected_version`.
    Delete {
        kind: Kind,
        id: String,
        expected_version: u64,
    },
}

impl Change {
    pub fn kind(&self) -> &str {
        match self {
            Change::Create { kind, .. }
            | Change::Update { kind, .. }
            | Change::Delete { kind, .. } => kind,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Change::Create { id, .. } | Change::Update { id, .. } | Change::Delete { id, .. } => id,
        }
    }
}

/// A batch of changes that commits whole or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub changes: Vec<Change>,
    /// Set by the member that proposes the transaction, so that every member stamps objects with
    /// the same `created_at`/`updated_at` when it applies the entry.
    pub proposed_at: Option<SystemTime>,
}

impl Transaction {
    pub fn new(changes: Vec<Change>) -> Self {
        Transaction {
            changes,
            proposed_at: None,
        }
    }

    pub fn create(
        kind: impl Into<Kind>,
        id: impl Into<String>,
        name: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        Self::new(vec![Change::Create {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
            data: data.into(),
        }])
    }
}

/// Bytes a transaction's encoding adds around its changes, at most: the change count and the
/// proposer's timestamp (postcard varints, so at most 10 + 1 + 10 + 5 bytes).
const TRANSACTION_FRAME_BYTES: usize = 32;

impl Transaction {
    /// The size of the transaction as proposed, the size the proposal limit applies to.
    pub fn proposal_size(&self) -> Result<usize, StoreError> {
        let mut proposed = self.clone();
        proposed.proposed_at.get_or_insert_with(SystemTime::now);
        postcard::experimental::serialized_size(&proposed)
            .map_err(|error| StoreError::Raft(format!("sizing a proposal: {error}")))
    }

    /// Packs `groups` of changes, in order, into as few transactions as fit under `limit`
    /// bytes each. The changes of one group always share a transaction, and a transaction
    /// holds whole groups in the order given, so committing the transactions in order commits
    /// every group after the ones before it. Refused when one group alone is over the limit.
    pub fn pack(
        groups: impl IntoIterator<Item = Vec<Change>>,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let sizing = |error: postcard::Error| StoreError::Raft(format!("sizing a change: {error}"));
        let mut packed = Vec::new();
        let mut current: Vec<Change> = Vec::new();
        let mut current_bytes = TRANSACTION_FRAME_BYTES;
        for group in groups {
            let mut group_bytes = 0;
            for change in &group {
                group_bytes += postcard::experimental::serialized_size(change).map_err(sizing)?;
            }
            if TRANSACTION_FRAME_BYTES + group_bytes > limit {
                return Err(StoreError::ProposalTooLarge {
                    size: TRANSACTION_FRAME_BYTES + group_bytes,
                    limit,
                });
            }
            if current_bytes + group_bytes > limit {
                packed.push(Transaction::new(std::mem::take(&mut current)));
                current_bytes = TRANSACTION_FRAME_BYTES;
            }
            current.extend(group);
            current_bytes += group_bytes;
        }
        if !current.is_empty() {
            packed.push(Transaction::new(current));
        }
        Ok(packed)
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction of {} change(s)", self.changes.len())
    }
}

/// Why a transaction was refused when applied. Nothing of a refused transaction is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TxnRejection {
    #[error(
        "version conflict on {kind} {id}: expected version {expected}, found {actual}; re-read the object and retry"
    )]
    Conflict {
        kind: Kind,
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    #[error("{kind} name {name:?} is already in use by {existing_id}; pick another name")]
    NameInUse {
        kind: Kind,
        name: String,
        existing_id: String,
    },
    #[error("a transaction changes {kind} {id} more than once; merge the changes into one")]
    DuplicateChange { kind: Kind, id: String },
    #[error("an empty transaction changes nothing")]
    Empty,
}

/// What applying a log entry produced: the Raft response type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Applied at this log index, which is now the version of every object it changed.
    Committed {
        index: u64,
    },
    Rejected(TxnRejection),
}

/// What a committed transaction did to one object, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeEvent {
    Created(ObjectRecord),
    Updated {
        old: ObjectRecord,
        new: ObjectRecord,
    },
    Deleted(ObjectRecord),
}

impl ChangeEvent {
    /// The object after the change, or as it was when deleted.
    pub fn object(&self) -> &ObjectRecord {
        match self {
            ChangeEvent::Created(object) | ChangeEvent::Deleted(object) => object,
            ChangeEvent::Updated { new, .. } => new,
        }
    }
}

/// The changes of one committed log entry, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedChanges {
    pub index: u64,
    pub changes: Vec<ChangeEvent>,
}

impl CommittedChanges {
    /// About how much memory the entry holds: every record it carries, old and new.
    pub fn approximate_bytes(&self) -> usize {
        self.changes
            .iter()
            .map(|change| match change {
                ChangeEvent::Created(object) | ChangeEvent::Deleted(object) => {
                    object.approximate_bytes()
                }
                ChangeEvent::Updated { old, new } => {
                    old.approximate_bytes() + new.approximate_bytes()
                }
            })
            .sum()
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the cluster store.
    pub TypeConfig:
        D = Transaction,
        R = TxnOutcome,
        NodeId = MemberId,
        Node = openraft::impls::BasicNode,
);

/// Makes a random object id in Swarm's form: 128 random bits in base 36, 25 characters.
pub fn new_object_id() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut value: u128 = rand::random();
    let mut id = [b'0'; 25];
    for slot in id.iter_mut().rev() {
        *slot = DIGITS[(value % 36) as usize];
        value /= 36;
    }
    // 36^25 > 2^128, so every 128-bit value fits and the id is always 25 characters.
    String::from_utf8_lossy(&id).into_owned()
}

/// openraft's generic types, fixed to the store's configuration.
pub(crate) mod raft_types {
    use openraft::type_config::alias;

    use super::TypeConfig;

    pub(crate) type LogId = alias::LogIdOf<TypeConfig>;
    pub(crate) type Vote = alias::VoteOf<TypeConfig>;
    pub(crate) type Entry = alias::EntryOf<TypeConfig>;
    pub(crate) type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
    pub(crate) type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
    pub(crate) type Snapshot = alias::SnapshotOf<TypeConfig, Vec<u8>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ObjectRecord` as it was before its data became shared `Bytes`: logs and snapshots
    /// written then must read the same.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct RecordWithVecData {
        kind: Kind,
        id: String,
        name: String,
        version: u64,
        created_at: SystemTime,
        updated_at: SystemTime,
        data: Vec<u8>,
    }

    #[test]
    fn shared_data_is_encoded_as_the_byte_vector_was() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let record = ObjectRecord {
            kind: "task".into(),
            id: "t1".into(),
            name: String::new(),
            version: 9,
            created_at: at,
            updated_at: at,
            data: Bytes::from_static(&[0, 1, 2, 200, 255]),
        };
        let old = RecordWithVecData {
            kind: "task".into(),
            id: "t1".into(),
            name: String::new(),
            version: 9,
            created_at: at,
            updated_at: at,
            data: vec![0, 1, 2, 200, 255],
        };
        let written_before = postcard::to_allocvec(&old).unwrap();
        assert_eq!(postcard::to_allocvec(&record).unwrap(), written_before);
        assert_eq!(
            postcard::from_bytes::<ObjectRecord>(&written_before).unwrap(),
            record
        );
    }

    fn create(id: &str, bytes: usize) -> Change {
        Change::Create {
            kind: "task".into(),
            id: id.into(),
            name: String::new(),
            data: vec![7; bytes].into(),
        }
    }

    fn ids(txn: &Transaction) -> Vec<&str> {
        txn.changes.iter().map(Change::id).collect()
    }

    #[test]
    fn packing_keeps_groups_whole_in_order_and_each_transaction_under_the_limit() {
        let limit = 4096;
        let groups: Vec<Vec<Change>> = (0..10)
            .map(|group| {
                (0..3)
                    .map(|member| create(&format!("{group}-{member}"), 400))
                    .collect()
            })
            .collect();
        let packed = Transaction::pack(groups, limit).unwrap();
        // 10 groups of about 1.2 KB under 4 KB: three groups a transaction.
        assert_eq!(packed.len(), 4);
        let order: Vec<&str> = packed.iter().flat_map(ids).collect();
        let expected: Vec<String> = (0..10)
            .flat_map(|group| (0..3).map(move |member| format!("{group}-{member}")))
            .collect();
        assert_eq!(order, expected);
        for txn in &packed {
            assert_eq!(txn.changes.len() % 3, 0, "a group split: {:?}", ids(txn));
            let mut proposed = txn.clone();
            // The latest time postcard can encode costs the most bytes.
            proposed.proposed_at =
                Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(u64::MAX >> 1, 999_999_999));
            let size = postcard::experimental::serialized_size(&proposed).unwrap();
            assert!(size <= limit, "{size} > {limit}");
        }
    }

    #[test]
    fn packing_refuses_a_group_over_the_limit_alone() {
        let refused = Transaction::pack([vec![create("a", 300), create("b", 300)]], 500);
        assert!(
            matches!(
                refused,
                Err(StoreError::ProposalTooLarge { limit: 500, .. })
            ),
            "{refused:?}"
        );
        assert_eq!(
            Transaction::pack(Vec::<Vec<Change>>::new(), 500),
            Ok(Vec::new())
        );
    }

    #[test]
    fn object_ids_have_swarms_form() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_object_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            assert_eq!(id.len(), 25);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            );
        }
    }
}

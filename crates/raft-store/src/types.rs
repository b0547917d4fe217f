//! The store's data model: opaque objects, transactions of changes, and their outcomes. The store
//! knows kinds, ids and names; what an object means is the manager's business.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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
    /// The object's encoding, usually a protobuf message from `shoal_proto::api`.
    pub data: Vec<u8>,
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
        data: Vec<u8>,
    },
    /// Replaces an object, provided it is still at `expected_version` (optimistic concurrency).
    Update {
        kind: Kind,
        id: String,
        name: String,
        expected_version: u64,
        data: Vec<u8>,
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
        data: Vec<u8>,
    ) -> Self {
        Self::new(vec![Change::Create {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
            data,
        }])
    }
}

/// What a transaction adds to its changes when encoded as a proposal: the length of the list
/// and `proposed_at` (a varint each for seconds and nanoseconds), with room to spare.
const PROPOSAL_OVERHEAD_BYTES: usize = 32;

impl Transaction {
    /// The size of the transaction as a proposal, which the store holds to its limit
    /// ([`crate::StoreConfig::max_proposal_bytes`]).
    pub fn proposal_bytes(&self) -> usize {
        let changes: usize = self.changes.iter().map(change_bytes).sum();
        changes + PROPOSAL_OVERHEAD_BYTES
    }

    /// Puts `changes`, in order, into as few transactions as hold them each within
    /// `max_proposal_bytes`, for changes that need not commit together (such as status reports
    /// of many tasks). A change too large on its own gets a transaction of its own, which the
    /// store then refuses with [`crate::StoreError::ProposalTooLarge`].
    pub fn split_under(changes: Vec<Change>, max_proposal_bytes: usize) -> Vec<Transaction> {
        let mut transactions = Vec::new();
        let mut current = Vec::new();
        let mut current_bytes = PROPOSAL_OVERHEAD_BYTES;
        for change in changes {
            let size = change_bytes(&change);
            if !current.is_empty() && current_bytes + size > max_proposal_bytes {
                transactions.push(Transaction::new(std::mem::take(&mut current)));
                current_bytes = PROPOSAL_OVERHEAD_BYTES;
            }
            current_bytes += size;
            current.push(change);
        }
        if !current.is_empty() {
            transactions.push(Transaction::new(current));
        }
        transactions
    }
}

/// The encoded size of one change.
fn change_bytes(change: &Change) -> usize {
    postcard::experimental::serialized_size(change)
        .unwrap_or_else(|error| panic!("sizing an in-memory change cannot fail: {error}"))
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

    fn create_of(bytes: usize) -> Change {
        Change::Create {
            kind: "task".into(),
            id: new_object_id(),
            name: String::new(),
            data: vec![7; bytes],
        }
    }

    #[test]
    fn proposal_bytes_bound_the_encoded_transaction() {
        let mut txn = Transaction::new((0..10).map(|_| create_of(1000)).collect());
        txn.proposed_at = Some(std::time::SystemTime::now());
        let encoded = postcard::to_allocvec(&txn).unwrap().len();
        assert!(txn.proposal_bytes() >= encoded);
        assert!(txn.proposal_bytes() <= encoded + PROPOSAL_OVERHEAD_BYTES);
    }

    #[test]
    fn changes_are_split_in_order_into_transactions_under_the_limit() {
        let changes: Vec<Change> = (0..100).map(|_| create_of(1000)).collect();
        let ids: Vec<String> = changes
            .iter()
            .map(|change| change.id().to_owned())
            .collect();
        let transactions = Transaction::split_under(changes, 16 * 1024);
        assert!(transactions.len() > 1);
        for txn in &transactions {
            assert!(
                txn.proposal_bytes() <= 16 * 1024,
                "{}",
                txn.proposal_bytes()
            );
        }
        let split_ids: Vec<String> = transactions
            .iter()
            .flat_map(|txn| txn.changes.iter().map(|change| change.id().to_owned()))
            .collect();
        assert_eq!(split_ids, ids);
        // A change too large alone travels alone.
        let alone = Transaction::split_under(vec![create_of(10), create_of(20_000)], 16 * 1024);
        assert_eq!(alone.len(), 2);
        assert!(Transaction::split_under(Vec::new(), 1024).is_empty());
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

//! What travels inside the Raft service's opaque payloads. Each RPC has one request and one reply
//! type, encoded with postcard.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_proto::raft::RaftMessage;

use crate::error::StoreError;
use crate::types::raft_types::{SnapshotMeta, Vote};
use crate::types::{MemberId, ObjectRecord, Transaction, TypeConfig};

#[derive(Serialize, Deserialize)]
pub(crate) enum VoteCall {
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
}

/// Raft replies carry a remote failure as text: the only one possible is a fatal stop.
pub(crate) type VoteReply = Result<VoteResponse<TypeConfig>, String>;
pub(crate) type AppendCall = AppendEntriesRequest<TypeConfig>;
pub(crate) type AppendReply = Result<AppendEntriesResponse<TypeConfig>, String>;
pub(crate) type SnapshotReply = Result<SnapshotResponse<TypeConfig>, String>;

/// The first chunk of a streamed snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    pub(crate) vote: Vote,
    pub(crate) meta: SnapshotMeta,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ProposeCall {
    pub(crate) txn: Transaction,
    /// Set when a member forwards the call; the receiver then only commits it as leader, so a
    /// call is forwarded at most once.
    pub(crate) forwarded: bool,
}

/// The log index the transaction committed at.
pub(crate) type ProposeReply = Result<u64, StoreError>;

/// A linearizable read, served by the leader once a quorum has confirmed it still leads.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReadCall {
    /// With a kind, the reply lists that kind's objects; without, it carries only the read
    /// index, which a follower then waits for before reading locally.
    pub(crate) kind: Option<String>,
}

/// The leader's read index, and the objects asked for.
pub(crate) type ReadReply = Result<(u64, Vec<ObjectRecord>), StoreError>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum MembershipCall {
    AddLearner { member: MemberId, addr: String },
    Promote { member: MemberId },
    Remove { member: MemberId },
}

pub(crate) type MembershipReply = Result<(), StoreError>;

pub(crate) fn encode<T: Serialize>(value: &T) -> RaftMessage {
    RaftMessage {
        payload: postcard::to_allocvec(value)
            .unwrap_or_else(|error| panic!("encoding an in-memory message cannot fail: {error}")),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(message: &RaftMessage) -> Result<T, tonic::Status> {
    postcard::from_bytes(&message.payload)
        .map_err(|error| tonic::Status::invalid_argument(format!("undecodable payload: {error}")))
}

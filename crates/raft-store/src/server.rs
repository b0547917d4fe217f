//! Inbound Raft traffic: the gRPC service that peers and forwarding members call.

use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::Snapshot as RaftSnapshot;
use shoal_proto::raft::raft_server::Raft as RaftRpc;
use shoal_proto::raft::{RaftMessage, SnapshotChunk, snapshot_chunk};
use tonic::{Request, Response, Status, Streaming};

use crate::store::Inner;
use crate::wire::{
    self, AppendCall, MembershipCall, ProposeCall, ReadCall, SnapshotHeader, VoteCall,
};

/// Which call a peer makes on the Raft service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftCall {
    Vote,
    AppendEntries,
    InstallSnapshot,
    Propose,
    Read,
    ChangeMembership,
}

impl RaftCall {
    pub const ALL: [RaftCall; 6] = [
        RaftCall::Vote,
        RaftCall::AppendEntries,
        RaftCall::InstallSnapshot,
        RaftCall::Propose,
        RaftCall::Read,
        RaftCall::ChangeMembership,
    ];
}

/// Decides whether the peer that made a call may make it, before the store looks at the call.
/// The store's owner knows who its peers are; the store does not. The request it is shown
/// carries the call's metadata and connection (the peer's certificates) without its payload.
pub type RaftCallGuard =
    Arc<dyn Fn(RaftCall, &Request<()>) -> Result<(), Status> + Send + Sync + 'static>;

pub(crate) struct RaftService {
    pub(crate) inner: Arc<Inner>,
    pub(crate) guard: Option<RaftCallGuard>,
}

impl RaftService {
    fn admit<T>(&self, call: RaftCall, request: &Request<T>) -> Result<(), Status> {
        self.inner
            .fence()
            .admit(request, || self.inner.holds_no_state())?;
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        let bare =
            Request::from_parts(request.metadata().clone(), request.extensions().clone(), ());
        guard(call, &bare)
    }
}

type Reply = Result<Response<RaftMessage>, Status>;

fn reply<T: serde::Serialize>(value: &T) -> Reply {
    Ok(Response::new(wire::encode(value)))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftMessage>) -> Reply {
        self.admit(RaftCall::Vote, &request)?;
        let call: VoteCall = wire::decode(request.get_ref())?;
        let raft = &self.inner.raft;
        let result: wire::VoteReply = match call {
            VoteCall::Vote(request) => raft.vote(request).await,
            VoteCall::PreVote(request) => raft.pre_vote(request).await,
        }
        .map_err(|error| error.to_string());
        reply(&result)
    }

    async fn append_entries(&self, request: Request<RaftMessage>) -> Reply {
        self.admit(RaftCall::AppendEntries, &request)?;
        let call: AppendCall = wire::decode(request.get_ref())?;
        *self
            .inner
            .leader_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        let result: wire::AppendReply = self
            .inner
            .raft
            .append_entries(call)
            .await
            .map_err(|error| error.to_string());
        reply(&result)
    }

    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Reply {
        self.admit(RaftCall::InstallSnapshot, &request)?;
        let (header, data) =
            read_snapshot(request.into_inner(), self.inner.config.max_snapshot_bytes).await?;
        let snapshot = RaftSnapshot {
            meta: header.meta,
            snapshot: data,
        };
        let result: wire::SnapshotReply = self
            .inner
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(|error| error.to_string());
        reply(&result)
    }

    async fn propose(&self, request: Request<RaftMessage>) -> Reply {
        self.admit(RaftCall::Propose, &request)?;
        let call: ProposeCall = wire::decode(request.get_ref())?;
        let result: wire::ProposeReply = if call.forwarded {
            self.inner.write_as_leader(call.txn).await
        } else {
            self.inner.write(call.txn).await
        };
        reply(&result)
    }

    async fn read(&self, request: Request<RaftMessage>) -> Reply {
        self.admit(RaftCall::Read, &request)?;
        let call: ReadCall = wire::decode(request.get_ref())?;
        let result: wire::ReadReply = match self
            .inner
            .read_index_as_leader(tokio::time::Instant::now() + self.inner.config.request_timeout)
            .await
        {
            Ok(index) => {
                let objects = match call.kind {
                    Some(kind) => self.inner.list_local(&kind),
                    None => Vec::new(),
                };
                Ok((index, objects))
            }
            Err(error) => Err(error),
        };
        reply(&result)
    }

    async fn change_membership(&self, request: Request<RaftMessage>) -> Reply {
        self.admit(RaftCall::ChangeMembership, &request)?;
        let call: MembershipCall = wire::decode(request.get_ref())?;
        let result: wire::MembershipReply = self.inner.change_membership_as_leader(call).await;
        reply(&result)
    }
}

/// Reads an installed snapshot's stream: its metadata first, then its data, refused once the data
/// passes `max_bytes`, so a peer can't make this member buffer without bound.
async fn read_snapshot(
    mut chunks: impl futures::Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
    max_bytes: u64,
) -> Result<(SnapshotHeader, Vec<u8>), Status> {
    let header: SnapshotHeader = match chunks.next().await {
        Some(Ok(SnapshotChunk {
            chunk: Some(snapshot_chunk::Chunk::Meta(meta)),
        })) => postcard::from_bytes(&meta)
            .map_err(|error| Status::invalid_argument(format!("bad snapshot header: {error}")))?,
        _ => {
            return Err(Status::invalid_argument(
                "a snapshot must start with its metadata",
            ));
        }
    };
    let mut data = Vec::new();
    while let Some(chunk) = chunks.next().await {
        match chunk?.chunk {
            Some(snapshot_chunk::Chunk::Data(bytes)) => {
                if (data.len() + bytes.len()) as u64 > max_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "the snapshot is larger than this member's limit of {max_bytes} bytes \
                         (StoreConfig::max_snapshot_bytes)"
                    )));
                }
                data.extend_from_slice(&bytes);
            }
            _ => return Err(Status::invalid_argument("metadata may only come first")),
        }
    }
    Ok((header, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[usize]) -> Vec<Result<SnapshotChunk, Status>> {
        let header = SnapshotHeader {
            vote: crate::types::raft_types::Vote::new(1, 1),
            meta: Default::default(),
        };
        let meta = postcard::to_allocvec(&header).expect("encoding a header");
        std::iter::once(snapshot_chunk::Chunk::Meta(meta))
            .chain(
                data.iter()
                    .map(|n| snapshot_chunk::Chunk::Data(vec![7; *n])),
            )
            .map(|chunk| Ok(SnapshotChunk { chunk: Some(chunk) }))
            .collect()
    }

    #[tokio::test]
    async fn a_snapshot_stream_over_the_limit_is_refused() {
        let read = |sizes: &[usize]| read_snapshot(futures::stream::iter(chunks(sizes)), 1000);
        let (_, data) = read(&[400, 600]).await.expect("at the limit");
        assert_eq!(data.len(), 1000);
        let Err(refused) = read(&[400, 600, 1]).await else {
            panic!("a snapshot over the limit was read");
        };
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("limit of 1000 bytes"),
            "{refused:?}"
        );
    }
}

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

pub(crate) struct RaftService {
    pub(crate) inner: Arc<Inner>,
}

type Reply = Result<Response<RaftMessage>, Status>;

fn reply<T: serde::Serialize>(value: &T) -> Reply {
    Ok(Response::new(wire::encode(value)))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftMessage>) -> Reply {
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
        let call: AppendCall = wire::decode(request.get_ref())?;
        let result: wire::AppendReply = self
            .inner
            .raft
            .append_entries(call)
            .await
            .map_err(|error| error.to_string());
        reply(&result)
    }

    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Reply {
        let mut chunks = request.into_inner();
        let header: SnapshotHeader = match chunks.next().await {
            Some(Ok(SnapshotChunk {
                chunk: Some(snapshot_chunk::Chunk::Meta(meta)),
            })) => postcard::from_bytes(&meta).map_err(|error| {
                Status::invalid_argument(format!("bad snapshot header: {error}"))
            })?,
            _ => {
                return Err(Status::invalid_argument(
                    "a snapshot must start with its metadata",
                ));
            }
        };
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            match chunk?.chunk {
                Some(snapshot_chunk::Chunk::Data(bytes)) => data.extend_from_slice(&bytes),
                _ => return Err(Status::invalid_argument("metadata may only come first")),
            }
        }
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
        let call: ProposeCall = wire::decode(request.get_ref())?;
        let result: wire::ProposeReply = if call.forwarded {
            self.inner.write_as_leader(call.txn).await
        } else {
            self.inner.write(call.txn).await
        };
        reply(&result)
    }

    async fn read(&self, request: Request<RaftMessage>) -> Reply {
        let call: ReadCall = wire::decode(request.get_ref())?;
        let result: wire::ReadReply = match self.inner.read_index_as_leader().await {
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
        let call: MembershipCall = wire::decode(request.get_ref())?;
        let result: wire::MembershipReply = self.inner.change_membership_as_leader(call).await;
        reply(&result)
    }
}

//! Outbound Raft traffic: gRPC clients to peers over mutual TLS, one lazily connected channel per
//! peer address, and a link filter that tests use to cut members off from each other.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RaftNetworkV2};
use shoal_proto::raft::raft_client::RaftClient;
use shoal_proto::raft::{RaftMessage, SnapshotChunk, snapshot_chunk};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::StoreError;
use crate::fence::Fence;
use crate::types::raft_types::{Snapshot, Vote};
use crate::types::{MemberId, TypeConfig};
use crate::wire::{self, SnapshotHeader, VoteCall};

/// Snapshots travel in chunks of this size, far below any gRPC message limit.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest gRPC message a member sends or accepts: room for a batch of maximal proposals.
pub(crate) const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Which peers this member can currently reach. Tests cut links to simulate partitions; in
/// production nothing is ever cut.
#[derive(Clone, Debug, Default)]
pub struct LinkFilter {
    cut: Arc<RwLock<HashSet<MemberId>>>,
}

impl LinkFilter {
    pub fn cut(&self, member: MemberId) {
        self.cut
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member);
    }

    pub fn heal(&self, member: MemberId) {
        self.cut
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member);
    }

    pub fn heal_all(&self) {
        self.cut.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn is_cut(&self, member: MemberId) -> bool {
        self.cut
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&member)
    }
}

/// Clients to every peer, shared by Raft replication and by request forwarding.
pub(crate) struct Peers {
    tls: Mutex<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    pub(crate) links: LinkFilter,
    /// This member's epoch, which every call carries.
    pub(crate) fence: Arc<Fence>,
}

impl Peers {
    pub(crate) fn new(tls: ClientTlsConfig, links: LinkFilter, fence: Arc<Fence>) -> Self {
        Peers {
            tls: Mutex::new(tls),
            channels: Mutex::new(HashMap::new()),
            links,
            fence,
        }
    }

    /// New calls use `tls` from now on: cached channels are dropped (calls in flight on them
    /// finish as they are).
    pub(crate) fn replace_tls(&self, tls: ClientTlsConfig) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A client to `member` at `addr`, or `Unreachable` when the link is cut.
    pub(crate) fn client(
        &self,
        member: MemberId,
        addr: &str,
    ) -> Result<RaftClient<Channel>, StoreError> {
        let unreachable = |detail: String| StoreError::Unreachable {
            member,
            addr: addr.to_owned(),
            detail,
        };
        if self.links.is_cut(member) {
            return Err(unreachable("the link is cut".to_owned()));
        }
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let channel = Endpoint::from_shared(format!("https://{addr}"))
                    .and_then(|endpoint| endpoint.tls_config(tls))
                    .map_err(|error| unreachable(format!("bad address: {error}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

pub(crate) struct NetworkFactory {
    pub(crate) peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            peers: Arc::clone(&self.peers),
        }
    }
}

pub(crate) struct PeerConnection {
    target: MemberId,
    addr: String,
    peers: Arc<Peers>,
}

fn unreachable(error: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(error.to_string())))
}

fn network_error(error: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&AnyError::error(error.to_string())))
}

/// A failed call's message with its whole cause chain: tonic's own message is often just
/// "transport error", while the cause says what went wrong, such as an unknown certificate issuer.
pub(crate) fn describe_status(status: &tonic::Status) -> String {
    let mut description = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let text = error.to_string();
        if !description.contains(&text) {
            description.push_str(": ");
            description.push_str(&text);
        }
        cause = error.source();
    }
    description
}

/// Maps a failed call: a peer that can't be connected to is unreachable (back off); anything
/// else is a network error (retry).
fn status_error(status: tonic::Status) -> RPCError<TypeConfig> {
    if status.code() == tonic::Code::Unavailable {
        unreachable(describe_status(&status))
    } else {
        network_error(status)
    }
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.peers
            .client(self.target, &self.addr)
            .map_err(unreachable)
    }

    async fn call<Reply, F, Fut>(
        &self,
        option: &RPCOption,
        send: F,
    ) -> Result<Reply, RPCError<TypeConfig>>
    where
        Reply: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.client()?;
        let response = tokio::time::timeout(option.hard_ttl(), send(client))
            .await
            .map_err(|_| network_error(format!("no reply within {:?}", option.hard_ttl())))?
            .map_err(|status| {
                self.peers.fence.note_refusal(&status);
                status_error(status)
            })?;
        let reply: Result<Reply, String> =
            wire::decode(response.get_ref()).map_err(|status| network_error(status.message()))?;
        reply.map_err(unreachable)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let message = self.peers.fence.tag(wire::encode(&request));
        self.call(&option, |mut client| async move {
            client.append_entries(message).await
        })
        .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let message = self.peers.fence.tag(wire::encode(&VoteCall::Vote(request)));
        self.call(
            &option,
            |mut client| async move { client.vote(message).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let message = self
            .peers
            .fence
            .tag(wire::encode(&VoteCall::PreVote(request)));
        self.call(
            &option,
            |mut client| async move { client.vote(message).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .peers
            .client(self.target, &self.addr)
            .map_err(|error| {
                StreamingError::Unreachable(Unreachable::new(&AnyError::error(error.to_string())))
            })?;
        let header = wire::encode(&SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        })
        .payload;
        let data = snapshot.snapshot;
        let chunk_count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
        tracing::info!(
            target_member = self.target,
            bytes = data.len(),
            chunk_count,
            "sending a snapshot"
        );
        let mut chunks = vec![SnapshotChunk {
            chunk: Some(snapshot_chunk::Chunk::Meta(header)),
        }];
        chunks.extend(
            data.chunks(SNAPSHOT_CHUNK_BYTES)
                .map(|piece| SnapshotChunk {
                    chunk: Some(snapshot_chunk::Chunk::Data(piece.to_vec())),
                }),
        );
        let chunks = self.peers.fence.tag(futures::stream::iter(chunks));
        let send = async {
            tokio::time::timeout(option.hard_ttl(), client.install_snapshot(chunks))
                .await
                .map_err(|_| NetworkError::new(&AnyError::error("snapshot transfer timed out")))?
                .map_err(|status| {
                    self.peers.fence.note_refusal(&status);
                    NetworkError::new(&AnyError::error(describe_status(&status)))
                })
        };
        let response = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = send => response?,
        };
        let reply: wire::SnapshotReply = wire::decode(response.get_ref())
            .map_err(|status| NetworkError::new(&AnyError::error(status.message())))?;
        reply
            .map_err(|error| StreamingError::Unreachable(Unreachable::new(&AnyError::error(error))))
    }
}

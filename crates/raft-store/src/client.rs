//! A remote client of the store, for tools and benchmarks that run outside a member: it sends
//! writes and linearizable reads to whichever member it can reach, and remembers the leader.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_proto::raft::RaftMessage;
use shoal_proto::raft::raft_client::RaftClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::error::StoreError;
use crate::network::{Peers, describe_status};
use crate::tls::TlsIdentity;
use crate::types::{MemberId, ObjectRecord, Transaction};
use crate::wire::{self, ProposeCall, ReadCall};

pub struct StoreClient {
    members: Vec<(MemberId, String)>,
    peers: Peers,
    /// The member that answered last; tried first next time.
    preferred: AtomicUsize,
    timeout: Duration,
}

impl StoreClient {
    /// A client for the members at `members` (id and address), authenticating with `tls`.
    pub fn new(members: Vec<(MemberId, String)>, tls: &TlsIdentity, timeout: Duration) -> Self {
        StoreClient {
            members,
            peers: Peers::new(
                tls.client_config(),
                Default::default(),
                std::sync::Arc::new(crate::fence::Fence::of_client()),
            ),
            preferred: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Commits `txn` and returns its log index.
    pub async fn write(&self, txn: Transaction) -> Result<u64, StoreError> {
        let call = wire::encode(&ProposeCall {
            txn,
            forwarded: false,
        });
        self.each_member(|mut client| {
            let call = call.clone();
            async move { client.propose(call).await }
        })
        .await
    }

    /// Every object of `kind`, as of a linearizable read.
    pub async fn list(&self, kind: &str) -> Result<Vec<ObjectRecord>, StoreError> {
        let call = wire::encode(&ReadCall {
            kind: Some(kind.to_owned()),
        });
        let (_, objects): (u64, Vec<ObjectRecord>) = self
            .each_member(|mut client| {
                let call = call.clone();
                async move { client.read(call).await }
            })
            .await?;
        Ok(objects)
    }

    /// The current leader: only a leader answers a read, so the member that answers one is it.
    pub async fn find_leader(&self) -> Result<MemberId, StoreError> {
        let call = wire::encode(&ReadCall { kind: None });
        let _: (u64, Vec<ObjectRecord>) = self
            .each_member(|mut client| {
                let call = call.clone();
                async move { client.read(call).await }
            })
            .await?;
        Ok(self.members[self.preferred.load(Ordering::Relaxed)].0)
    }

    /// Sends a call to members, starting with the one that answered last, until one gives an
    /// answer that is not about leadership or reachability, or the timeout passes.
    async fn each_member<T, F, Fut>(&self, mut send: F) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned,
        F: FnMut(RaftClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for attempt in first.. {
            let index = attempt % self.members.len();
            if attempt > first && index == first % self.members.len() {
                // A whole round failed, most likely mid-election: give it a moment.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if Instant::now() >= deadline {
                break;
            }
            let (member, addr) = &self.members[index];
            let mut cut_short = false;
            let result: Result<T, StoreError> = async {
                let client = self.peers.client(*member, addr)?;
                let response = tokio::time::timeout_at(deadline, send(client))
                    .await
                    .map_err(|_| {
                        cut_short = true;
                        unreachable(*member, addr, "no answer in time")
                    })?
                    .map_err(|status| unreachable(*member, addr, describe_status(&status)))?;
                wire::decode::<Result<T, StoreError>>(response.get_ref())
                    .map_err(|status| unreachable(*member, addr, status.message()))?
            }
            .await;
            match result {
                // The deadline cut this attempt short: an earlier one's error (a refused
                // certificate, say) tells the caller more than the timeout does.
                Err(_) if cut_short && last_error.is_some() => break,
                Err(
                    error @ (StoreError::NotLeader { .. }
                    | StoreError::NoQuorum { .. }
                    | StoreError::Unreachable { .. }),
                ) => last_error = Some(error),
                answered => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        Err(last_error.unwrap_or(StoreError::NoQuorum {
            detail: format!("no member answered within {:?}", self.timeout),
        }))
    }
}

fn unreachable(member: MemberId, addr: &str, detail: impl ToString) -> StoreError {
    StoreError::Unreachable {
        member,
        addr: addr.to_owned(),
        detail: detail.to_string(),
    }
}

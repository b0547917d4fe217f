//! The cluster's objects as the Raft store keeps them. Each protobuf object is one record of its
//! kind, encoded with prost; its `meta` (version and timestamps) is the store's and is filled in
//! from the record on every read, never trusted from the encoded bytes.

use prost::Message;
use raft_store::{Change, ObjectRecord, Store, StoreError, StoreView, Transaction, TxnRejection};
use shoal_proto::api::{self, Meta, Timestamp, Version};

use crate::error::ManagerError;

/// A protobuf object that lives in the cluster store.
pub trait ClusterObject: Message + Default + Clone + PartialEq {
    /// The record kind the store files it under.
    const KIND: &'static str;

    fn id(&self) -> &str;

    /// The name that must be unique among objects of the kind, or "" when the kind has none.
    fn unique_name(&self) -> &str {
        ""
    }

    fn meta_mut(&mut self) -> &mut Option<Meta>;

    /// The version this copy was read at (0 for an object never stored).
    fn read_version(&self) -> u64;
}

macro_rules! cluster_object {
    ($type:ty, $kind:literal) => {
        cluster_object!($type, $kind, |_object: &$type| "");
    };
    ($type:ty, $kind:literal, $name:expr) => {
        impl ClusterObject for $type {
            const KIND: &'static str = $kind;

            fn id(&self) -> &str {
                &self.id
            }

            fn unique_name(&self) -> &str {
                let name: fn(&$type) -> &str = $name;
                name(self)
            }

            fn meta_mut(&mut self) -> &mut Option<Meta> {
                &mut self.meta
            }

            fn read_version(&self) -> u64 {
                self.meta
                    .as_ref()
                    .and_then(|meta| meta.version.as_ref())
                    .map_or(0, |version| version.index)
            }
        }
    };
}

fn annotated_name(annotations: Option<&api::Annotations>) -> &str {
    annotations.map_or("", |annotations| annotations.name.as_str())
}

cluster_object!(api::Node, "node");
cluster_object!(api::Task, "task");
cluster_object!(api::Cluster, "cluster");
cluster_object!(api::Service, "service", |service| annotated_name(
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
));
cluster_object!(api::Network, "network", |network| annotated_name(
    network
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
));
cluster_object!(api::Secret, "secret", |secret| annotated_name(
    secret
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
));
cluster_object!(api::Config, "config", |config| annotated_name(
    config
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
));
cluster_object!(api::Stack, "stack", |stack| annotated_name(
    stack
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
));

/// The swarm's cluster object in `view`; `None` before `swarm init` has written it.
pub fn cluster_of(view: &StoreView<'_>) -> Result<Option<api::Cluster>, ManagerError> {
    view.list(api::Cluster::KIND)
        .next()
        .map(decode::<api::Cluster>)
        .transpose()
}

/// Attempts at a rewrite that keeps meeting concurrent changes to the object.
const WRITE_ATTEMPTS: usize = 5;

/// Who may commit a rewrite.
#[derive(Clone, Copy, Debug)]
enum Writer {
    /// Any member: a follower forwards the write to the leader.
    AnyMember,
    /// Only this member, while it leads in this term ([`Store::write_in_term`]).
    LeaderInTerm(u64),
}

/// Rewrites object `id` of kind `T` with `change`, re-reading and trying again when another
/// write changed the object first. `None` when there is no such object. A change that leaves
/// the object as it is writes nothing: thousands of agents reconnecting to a new leader each
/// state what their node already says, and each write would wake the orchestration loop.
pub(crate) async fn update_object<T: ClusterObject>(
    store: &Store,
    id: &str,
    change: impl Fn(&mut T),
) -> Result<Option<T>, ManagerError> {
    rewrite(store, Writer::AnyMember, id, change).await
}

async fn rewrite<T: ClusterObject>(
    store: &Store,
    writer: Writer,
    id: &str,
    change: impl Fn(&mut T),
) -> Result<Option<T>, ManagerError> {
    for _ in 0..WRITE_ATTEMPTS {
        let Some(mut object) =
            store.local_view(|view| view.get(T::KIND, id).map(decode::<T>).transpose())?
        else {
            return Ok(None);
        };
        let stored = object.clone();
        change(&mut object);
        if object == stored {
            return Ok(Some(object));
        }
        let txn = Transaction::new(vec![update(&object)]);
        let written = match writer {
            Writer::AnyMember => store.write(txn).await,
            Writer::LeaderInTerm(term) => store.write_in_term(term, txn).await,
        };
        match written {
            Ok(_) => return Ok(Some(object)),
            Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ManagerError::FailedPrecondition(format!(
        "{} {id} kept changing while it was written: try again",
        T::KIND
    )))
}

/// [`update_object`] for a node, whose writers are many (sessions, status and reachability
/// all write nodes).
pub(crate) async fn update_node(
    store: &Store,
    node_id: &str,
    change: impl Fn(&mut api::Node),
) -> Result<Option<api::Node>, ManagerError> {
    update_object(store, node_id, change).await
}

/// [`update_node`] committed only while this manager leads in `term`, never forwarded: for what
/// a leader judges from its own sessions, such as a node gone silent.
pub(crate) async fn update_node_in_term(
    store: &Store,
    term: u64,
    node_id: &str,
    change: impl Fn(&mut api::Node),
) -> Result<Option<api::Node>, ManagerError> {
    rewrite(store, Writer::LeaderInTerm(term), node_id, change).await
}

/// Rewrites node `node_id` with `change_node` and the cluster object with `change_cluster` in one
/// transaction, re-reading and trying again on concurrent changes, as [`update_node`] does.
/// `None` when there is no such node.
pub(crate) async fn update_node_and_cluster(
    store: &Store,
    node_id: &str,
    change_node: impl Fn(&mut api::Node),
    change_cluster: impl Fn(&mut api::Cluster),
) -> Result<Option<api::Node>, ManagerError> {
    for _ in 0..WRITE_ATTEMPTS {
        let (node, cluster) = store.local_view(|view| {
            let node = view
                .get(api::Node::KIND, node_id)
                .map(decode::<api::Node>)
                .transpose()?;
            Ok::<_, ManagerError>((node, cluster_of(view)?))
        })?;
        let Some(mut node) = node else {
            return Ok(None);
        };
        let mut cluster = cluster.ok_or_else(|| {
            ManagerError::FailedPrecondition(
                "this manager's store holds no cluster object yet: try again shortly".to_owned(),
            )
        })?;
        change_node(&mut node);
        change_cluster(&mut cluster);
        match store
            .write(Transaction::new(vec![update(&node), update(&cluster)]))
            .await
        {
            Ok(_) => return Ok(Some(node)),
            Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ManagerError::FailedPrecondition(format!(
        "node {node_id} kept changing while it was written: try again"
    )))
}

/// Decodes a stored record, with `meta` from the record.
pub fn decode<T: ClusterObject>(record: &ObjectRecord) -> Result<T, ManagerError> {
    let mut object = T::decode(&record.data[..]).map_err(|error| ManagerError::Corrupt {
        kind: record.kind.clone(),
        id: record.id.clone(),
        detail: error.to_string(),
    })?;
    *object.meta_mut() = Some(Meta {
        version: Some(Version {
            index: record.version,
        }),
        created_at: Some(Timestamp::from(record.created_at)),
        updated_at: Some(Timestamp::from(record.updated_at)),
    });
    Ok(object)
}

/// Decodes every record of `T`'s kind.
pub fn decode_all<'a, T: ClusterObject>(
    records: impl IntoIterator<Item = &'a ObjectRecord>,
) -> Result<Vec<T>, ManagerError> {
    records.into_iter().map(decode).collect()
}

fn encode_without_meta<T: ClusterObject>(object: &T) -> Vec<u8> {
    let mut stored = object.clone();
    *stored.meta_mut() = None;
    stored.encode_to_vec()
}

pub fn create<T: ClusterObject>(object: &T) -> Change {
    Change::Create {
        kind: T::KIND.to_owned(),
        id: object.id().to_owned(),
        name: object.unique_name().to_owned(),
        data: encode_without_meta(object).into(),
    }
}

/// Replaces the stored object, provided it is still at the version `object` was read at.
pub fn update<T: ClusterObject>(object: &T) -> Change {
    update_at(object, object.read_version())
}

/// Replaces the stored object, provided it is still at `expected_version`: for a change decided
/// on an earlier read than the copy in hand.
pub fn update_at<T: ClusterObject>(object: &T, expected_version: u64) -> Change {
    Change::Update {
        kind: T::KIND.to_owned(),
        id: object.id().to_owned(),
        name: object.unique_name().to_owned(),
        expected_version,
        data: encode_without_meta(object).into(),
    }
}

/// Deletes the stored object, provided it is still at the version `object` was read at.
pub fn delete<T: ClusterObject>(object: &T) -> Change {
    Change::Delete {
        kind: T::KIND.to_owned(),
        id: object.id().to_owned(),
        expected_version: object.read_version(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn service(name: &str) -> api::Service {
        api::Service {
            id: "svc1".into(),
            spec: Some(api::ServiceSpec {
                annotations: Some(api::Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn meta_comes_from_the_record_not_the_bytes() {
        let Change::Create {
            kind,
            id,
            name,
            data,
        } = create(&service("web"))
        else {
            panic!("create makes a Create");
        };
        assert_eq!(
            (kind.as_str(), id.as_str(), name.as_str()),
            ("service", "svc1", "web")
        );
        let record = ObjectRecord {
            kind,
            id,
            name,
            version: 42,
            created_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7),
            updated_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(9),
            data,
        };
        let decoded: api::Service = decode(&record).unwrap();
        assert_eq!(decoded.read_version(), 42);
        let meta = decoded.meta.unwrap();
        assert_eq!(meta.created_at.unwrap().seconds, 7);
        assert_eq!(meta.updated_at.unwrap().seconds, 9);
        // An update states the version it read, and stores no meta of its own.
        let Change::Update {
            expected_version,
            data,
            ..
        } = update(&decoded)
        else {
            panic!("update makes an Update");
        };
        assert_eq!(expected_version, 42);
        assert_eq!(api::Service::decode(&data[..]).unwrap().meta, None);
    }

    #[test]
    fn undecodable_records_name_the_object() {
        let record = ObjectRecord {
            kind: "task".into(),
            id: "t1".into(),
            name: String::new(),
            version: 1,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            data: vec![0xff, 0xff, 0xff].into(),
        };
        let error = decode::<api::Task>(&record).unwrap_err();
        assert!(error.to_string().contains("task t1"), "{error}");
    }
}

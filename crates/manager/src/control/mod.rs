//! The control API: what `shoal service|node|swarm|info` call on a manager. Each call validates
//! with the pure rules in [`service_spec`], resolves references with [`resolve`], and reads or
//! writes the store; every write carries the version the caller read, so a stale update is
//! refused rather than lost.

mod gate;
mod managers;
mod networks;
pub(crate) mod payloads;
mod ports;
mod progress;
mod resolve;
mod service_spec;
mod stacks;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use raft_store::{ReadConsistency, Store, StoreView};
use shoal_proto::api::control_server::Control;
use shoal_proto::api::{
    self, Cluster, ClusterResponse, ConfigResponse, CreateConfigRequest, CreateSecretRequest,
    CreateServiceRequest, GetClusterRequest, GetConfigRequest, GetNodeRequest, GetSecretRequest,
    GetServiceRequest, GetTaskRequest, GetUnlockKeyRequest, GetUnlockKeyResponse,
    ListConfigsRequest, ListConfigsResponse, ListNodesRequest, ListNodesResponse,
    ListSecretsRequest, ListSecretsResponse, ListServicesRequest, ListServicesResponse,
    ListTasksRequest, ListTasksResponse, Node, NodeResponse, RemoveConfigRequest,
    RemoveConfigResponse, RemoveNodeRequest, RemoveNodeResponse, RemoveSecretRequest,
    RemoveSecretResponse, RemoveServiceRequest, RemoveServiceResponse, SecretResponse, Service,
    ServiceLogsRequest, ServiceProgressRequest, ServiceProgressResponse, ServiceResponse, Task,
    TaskResponse, UpdateClusterRequest, UpdateConfigRequest, UpdateNodeRequest,
    UpdateSecretRequest, UpdateServiceRequest, service_spec::Mode,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub use gate::ControlGate;
pub(crate) use managers::reachability_on_leader;

use crate::dispatcher::{LogBroker, LogReading, LogStream, LogTarget};
use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::orchestrator::GivenUpSlots;
use crate::view::ClusterView;
use crate::view::shared::SharedView;
use payloads::Payload;

/// Attempts at a stack change or network removal that keeps meeting concurrent writes.
const FRESH_READ_ATTEMPTS: usize = 5;

/// The control API over one manager's store.
#[derive(Clone)]
pub struct ControlApi {
    store: Arc<Store>,
    /// The decoded, indexed store the node and task reads use, so a read with a filter costs
    /// what it returns.
    view: Arc<SharedView>,
    given_up: watch::Receiver<GivenUpSlots>,
    logs: LogBroker,
}

fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map_or("", |annotations| annotations.name.as_str())
}

fn node_hostname(node: &Node) -> &str {
    node.description
        .as_ref()
        .map_or("", |description| description.hostname.as_str())
}

/// Services the user can see: one being removed is already gone for them.
fn visible_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<&'a Service> {
    services
        .into_iter()
        .filter(|service| !service.pending_delete)
        .collect()
}

/// The service `reference` names among `services` (the view's or decoded ones).
fn resolve_service<'a, S: Borrow<Service>>(
    services: &'a [S],
    reference: &str,
) -> Result<&'a Service, ManagerError> {
    resolve::resolve(
        services,
        reference,
        "service",
        |s| &s.borrow().id,
        |s| service_name(s.borrow()),
    )
    .map(Borrow::borrow)
}

/// The node `reference` names among `nodes` (the view's or decoded ones).
fn resolve_node<'a, N: Borrow<Node>>(
    nodes: &'a [N],
    reference: &str,
) -> Result<&'a Node, ManagerError> {
    resolve::resolve(
        nodes,
        reference,
        "node",
        |n| &n.borrow().id,
        |n| node_hostname(n.borrow()),
    )
    .map(Borrow::borrow)
}

/// The task `reference` names among `tasks` (the view's or decoded ones).
fn resolve_task<'a, T: Borrow<Task>>(
    tasks: &'a [T],
    reference: &str,
) -> Result<&'a Task, ManagerError> {
    resolve::resolve(tasks, reference, "task", |t| &t.borrow().id, |_| "").map(Borrow::borrow)
}

/// The cluster object as clients see it: without the CA's private key, the unlock key (which
/// `GetUnlockKey` gives) or the network keys (which only nodes get, in their sessions).
fn without_secrets(mut cluster: Cluster) -> Cluster {
    cluster.unlock_keys.clear();
    cluster.network_bootstrap_keys.clear();
    if let Some(root_ca) = cluster.root_ca.as_mut() {
        root_ca.ca_key.clear();
        if let Some(rotation) = root_ca.root_rotation.as_mut() {
            rotation.ca_key.clear();
        }
    }
    cluster
}

/// `current` rolled back to its previous spec by hand: as in SwarmKit, the two specs swap, so
/// a second rollback undoes the first.
fn rolled_back(
    current: &Service,
    reference: &str,
    started_at: api::Timestamp,
) -> Result<Service, ManagerError> {
    let previous_spec = current.previous_spec.clone().ok_or_else(|| {
        ManagerError::FailedPrecondition(format!(
            "service {reference} has no previous spec to roll back to: it was never updated"
        ))
    })?;
    let mut service = current.clone();
    service.spec = Some(previous_spec);
    service.spec_version = current.previous_spec_version;
    service.previous_spec = current.spec.clone();
    service.previous_spec_version = current.spec_version;
    service.update_status = Some(api::UpdateStatus {
        state: api::update_status::UpdateState::RollbackStarted as i32,
        started_at: Some(started_at),
        completed_at: None,
        message: "manually requested rollback".to_owned(),
    });
    service_spec::refresh_endpoint(&mut service);
    Ok(service)
}

fn update_paused(service: &Service) -> bool {
    use api::update_status::UpdateState;
    matches!(
        service.update_status.as_ref().map(api::UpdateStatus::state),
        Some(UpdateState::Paused | UpdateState::RollbackPaused)
    )
}

impl ControlApi {
    pub(crate) fn new(
        store: Arc<Store>,
        view: Arc<SharedView>,
        given_up: watch::Receiver<GivenUpSlots>,
        logs: LogBroker,
    ) -> ControlApi {
        ControlApi {
            store,
            view,
            given_up,
            logs,
        }
    }

    /// Reads at an index that includes every write acknowledged before the call.
    async fn read<R>(
        &self,
        read: impl FnOnce(&StoreView<'_>) -> Result<R, ManagerError>,
    ) -> Result<R, ManagerError> {
        self.store.view(ReadConsistency::Linearizable, read).await?
    }

    /// Reads the indexed view at an index that includes every write acknowledged before the
    /// call.
    async fn read_view<R>(
        &self,
        read: impl FnOnce(&ClusterView) -> Result<R, ManagerError>,
    ) -> Result<R, ManagerError> {
        self.store.read_barrier().await?;
        self.view.read_current(read)?
    }

    async fn cluster(&self) -> Result<Cluster, ManagerError> {
        self.read(|view| {
            objects::cluster_of(view)?.ok_or_else(|| {
                ManagerError::FailedPrecondition(
                    "the swarm has no cluster object yet: wait for 'shoal swarm init' to finish"
                        .to_owned(),
                )
            })
        })
        .await
    }

    async fn read_back<T: ClusterObject>(&self, id: &str) -> Result<T, ManagerError> {
        self.read(|view| {
            let record = view
                .get(T::KIND, id)
                .ok_or_else(|| ManagerError::NotFound {
                    kind: T::KIND,
                    reference: id.to_owned(),
                })?;
            objects::decode(record)
        })
        .await
    }

    async fn create_service(&self, mut spec: api::ServiceSpec) -> Result<Service, ManagerError> {
        let annotations = spec.annotations.get_or_insert_with(Default::default);
        if annotations.name.is_empty() {
            annotations.name = service_spec::generated_service_name(rand::random());
        }
        if spec.mode.is_none() {
            spec.mode = Some(Mode::Replicated(api::ReplicatedService {
                replicas: spec::defaults::REPLICAS,
            }));
        }
        spec::defaults::apply_service_defaults(&mut spec);
        service_spec::check_service_spec(&spec)?;
        self.bind_networks(&mut spec).await?;
        self.bind_payloads(&mut spec).await?;
        let id = raft_store::new_object_id();
        self.write_service_plan(|services, networks| {
            let mut created = [service_spec::new_service(id.clone(), spec.clone())];
            let guard = ports::allocate_published_ports(services, networks, &mut created, &[])?;
            let mut changes = vec![objects::create(&created[0])];
            changes.extend(guard.as_ref().map(objects::update));
            Ok((changes, ()))
        })
        .await?;
        self.read_back(&id).await
    }

    /// Decides a service write on a fresh read of the services and networks, and writes it;
    /// a conflict on a network (the allocator rewrites networks as it gives addresses, and a
    /// write claiming a published port rewrites the ingress network, see [`ports`]) means
    /// deciding again on a newer read. Any other conflict, such as a service changed since the
    /// caller read it, is the caller's.
    async fn write_service_plan<R>(
        &self,
        plan: impl Fn(&[Service], &[api::Network]) -> Result<(Vec<raft_store::Change>, R), ManagerError>,
    ) -> Result<R, ManagerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (services, networks): (Vec<Service>, Vec<api::Network>) = self
                .read(|view| {
                    Ok((
                        objects::decode_all(view.list(Service::KIND))?,
                        objects::decode_all(view.list(api::Network::KIND))?,
                    ))
                })
                .await?;
            let (changes, outcome) = plan(&services, &networks)?;
            if changes.is_empty() {
                return Ok(outcome);
            }
            match self
                .store
                .write(raft_store::Transaction::new(changes))
                .await
            {
                Ok(_) => return Ok(outcome),
                Err(raft_store::StoreError::Rejected(raft_store::TxnRejection::Conflict {
                    kind,
                    ..
                })) if kind == api::Network::KIND && attempt < FRESH_READ_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Binds the networks a spec attaches to to their ids, refusing unknown ones and those no
    /// service may join.
    async fn bind_networks(&self, spec: &mut api::ServiceSpec) -> Result<(), ManagerError> {
        let attaches = spec
            .task
            .as_ref()
            .is_some_and(|task| !task.networks.is_empty())
            || !spec.networks.is_empty();
        if !attaches {
            return Ok(());
        }
        let networks = self.networks().await?;
        networks::bind_attachments(spec, &networks, "")
    }

    /// Fills in the ids of the secrets and configs a spec names, refusing unknown ones.
    async fn bind_payloads(&self, spec: &mut api::ServiceSpec) -> Result<(), ManagerError> {
        let Some(api::task_spec::Runtime::Container(container)) =
            spec.task.as_mut().and_then(|task| task.runtime.as_mut())
        else {
            return Ok(());
        };
        if container.secrets.is_empty() && container.configs.is_empty() {
            return Ok(());
        }
        let (secrets, configs): (Vec<api::Secret>, Vec<api::Config>) = self
            .read(|view| {
                Ok((
                    objects::decode_all(view.list(api::Secret::KIND))?,
                    objects::decode_all(view.list(api::Config::KIND))?,
                ))
            })
            .await?;
        payloads::bind_references(container, &secrets, &configs)
    }

    async fn update_service(&self, request: UpdateServiceRequest) -> Result<Service, ManagerError> {
        let rollback = request.rollback() == api::update_service_request::Rollback::Previous;
        let updated_spec = if rollback {
            None
        } else {
            let mut updated_spec = request.spec.clone().ok_or_else(|| {
                ManagerError::InvalidArgument("the update carries no spec".to_owned())
            })?;
            self.bind_networks(&mut updated_spec).await?;
            self.bind_payloads(&mut updated_spec).await?;
            spec::defaults::apply_service_defaults(&mut updated_spec);
            Some(updated_spec)
        };
        let started_at = crate::orchestration_loop::now().to_proto_timestamp();
        let outcome = self
            .write_service_plan(|services, networks| {
                let visible = visible_services(services);
                let current = resolve_service(&visible, &request.service)?;
                let service = match &updated_spec {
                    None => rolled_back(current, &request.service, started_at)?,
                    Some(updated_spec) => {
                        let current_spec = current.spec.clone().unwrap_or_default();
                        service_spec::check_service_update(&current_spec, updated_spec)?;
                        match service_spec::respec(current, updated_spec.clone()) {
                            Some(respecified) => respecified,
                            // As in Docker, an update that changes nothing resumes a paused
                            // update.
                            None if update_paused(current) => {
                                let mut resumed = current.clone();
                                resumed.update_status = None;
                                resumed
                            }
                            None => return Ok((Vec::new(), current.clone())),
                        }
                    }
                };
                let mut changed = [service];
                let guard = ports::allocate_published_ports(services, networks, &mut changed, &[])?;
                let [service] = changed;
                let mut changes = vec![objects::update_at(&service, request.version)];
                changes.extend(guard.as_ref().map(objects::update));
                Ok((changes, service))
            })
            .await?;
        self.read_back(&outcome.id).await
    }

    async fn remove_service(&self, reference: &str) -> Result<String, ManagerError> {
        let id = self
            .read_view(|view| {
                let services = visible_services(view.services());
                Ok(resolve_service(&services, reference)?.id.clone())
            })
            .await?;
        // The orchestrator stops and removes the tasks, then deletes the service. Removing asks
        // for no version, so a write of the managers' own (an update's progress, the
        // allocator's) landing first makes it read again rather than refuse.
        objects::update_object(&self.store, &id, |service: &mut Service| {
            service.pending_delete = true;
        })
        .await?
        .ok_or_else(|| ManagerError::NotFound {
            kind: Service::KIND,
            reference: reference.to_owned(),
        })?;
        Ok(id)
    }

    async fn update_node(&self, request: UpdateNodeRequest) -> Result<Node, ManagerError> {
        let spec = request.spec.ok_or_else(|| {
            ManagerError::InvalidArgument("the update carries no node spec".to_owned())
        })?;
        let mut node = self
            .read_view(|view| {
                Ok(resolve_node(&view.nodes().collect::<Vec<_>>(), &request.node)?.clone())
            })
            .await?;
        let current_role = node
            .spec
            .as_ref()
            .map_or(api::NodeRole::Worker, |spec| spec.desired_role());
        let demoted =
            current_role == api::NodeRole::Manager && spec.desired_role() == api::NodeRole::Worker;
        if demoted {
            return self.demote(node, spec, request.version).await;
        }
        node.spec = Some(spec);
        self.store
            .write(raft_store::Transaction::new(vec![objects::update_at(
                &node,
                request.version,
            )]))
            .await?;
        self.read_back(&node.id).await
    }

    /// A demotion: the node leaves the Raft group first (a demotion that can't commit changes
    /// nothing), then its object says worker and its manager certificates are revoked. The caller's version is checked before anything
    /// changes; the object write after the Raft change re-reads on conflicts, so the two never
    /// disagree for long.
    async fn demote(
        &self,
        node: Node,
        spec: api::NodeSpec,
        version: u64,
    ) -> Result<Node, ManagerError> {
        let stored = objects::ClusterObject::read_version(&node);
        if version != stored {
            return Err(
                raft_store::StoreError::Rejected(raft_store::TxnRejection::Conflict {
                    kind: Node::KIND.to_owned(),
                    id: node.id.clone(),
                    expected: version,
                    actual: stored,
                })
                .into(),
            );
        }
        if let Some(manager) = node.manager_status.clone() {
            // The node leaves the Raft group first: a demotion that can't commit changes nothing.
            // A manager that is no member any more (after --force-new-cluster) just goes.
            let status = self.store.status();
            if manager.raft_id == status.member_id {
                // Out of the Raft group, this manager could no longer write the node object.
                return Err(ManagerError::FailedPrecondition(format!(
                    "node {} is the manager serving this call and can't carry out its own demotion: run 'shoal node demote {}' on another manager",
                    node.id, node.id
                )));
            }
            if status.voters.contains_key(&manager.raft_id)
                || status.learners.contains_key(&manager.raft_id)
            {
                self.check_manager_may_go(
                    manager.raft_id,
                    managers::Departure::Demotion,
                    &format!("demoting node {}", node.id),
                )?;
                self.store.remove_member(manager.raft_id).await?;
            }
            tracing::info!(node = %node.id, member = manager.raft_id, "manager left the Raft group");
        }
        // Its manager certificates are revoked with it: rights follow the role.
        let now = std::time::SystemTime::now();
        objects::update_node_and_cluster(
            &self.store,
            &node.id,
            |stored| {
                stored.spec = Some(spec.clone());
                stored.manager_status = None;
                stored.role = api::NodeRole::Worker as i32;
            },
            |cluster| crate::authz::revoke_manager_certificates(cluster, &node.id, now),
        )
        .await?;
        self.read_back(&node.id).await
    }

    fn check_manager_may_go(
        &self,
        raft_id: u64,
        departure: managers::Departure,
        what: &str,
    ) -> Result<(), ManagerError> {
        let status = self.store.status();
        let voters = status.voters.keys().copied().collect();
        managers::check_manager_may_go(raft_id, &voters, &status.unreachable, departure, what)
    }

    /// Takes this manager out of the Raft group, for `swarm leave`. Without `force`, refused
    /// when the managers left would lose their quorum.
    pub async fn leave_managers(&self, node_id: &str, force: bool) -> Result<(), ManagerError> {
        let status = self.store.status();
        let raft_id = status.member_id;
        if !force {
            self.check_manager_may_go(raft_id, managers::Departure::Leave, "leaving the swarm")
                .map_err(|error| {
                    ManagerError::FailedPrecondition(format!(
                        "{error}. Use 'shoal swarm leave --force' to leave anyway"
                    ))
                })?;
        }
        let left = async {
            objects::update_node(&self.store, node_id, |node| {
                node.role = api::NodeRole::Worker as i32;
                node.manager_status = None;
                if let Some(spec) = node.spec.as_mut() {
                    spec.set_desired_role(api::NodeRole::Worker);
                }
            })
            .await?;
            self.store.remove_member(raft_id).await?;
            Ok::<(), ManagerError>(())
        }
        .await;
        match left {
            Ok(()) => Ok(()),
            Err(error) if force => {
                tracing::warn!(%error, "leaving without the other managers' agreement (--force)");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn stack_objects(&self) -> Result<stacks::StackObjects, ManagerError> {
        self.read(|view| {
            Ok(stacks::StackObjects {
                services: objects::decode_all(view.list(Service::KIND))?,
                networks: objects::decode_all(view.list(api::Network::KIND))?,
                secrets: objects::decode_all(view.list(api::Secret::KIND))?,
                configs: objects::decode_all(view.list(api::Config::KIND))?,
                stacks: objects::decode_all(view.list(api::Stack::KIND))?,
            })
        })
        .await
    }

    /// Plans a stack change on a fresh read and writes it as one transaction; a concurrent
    /// write to the same objects (the updater writing a service's status, say) means planning
    /// again on a newer read.
    async fn write_stack_plan(
        &self,
        plan: impl Fn(&stacks::StackObjects) -> Result<stacks::StackPlan, ManagerError>,
    ) -> Result<Vec<api::StackChange>, ManagerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let planned = plan(&self.stack_objects().await?)?;
            if planned.changes.is_empty() {
                return Ok(planned.report);
            }
            match self
                .store
                .write(raft_store::Transaction::new(planned.changes))
                .await
            {
                Ok(_) => return Ok(planned.report),
                Err(raft_store::StoreError::Rejected(raft_store::TxnRejection::Conflict {
                    ..
                })) if attempt < FRESH_READ_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn deploy_stack(
        &self,
        revision: api::StackSpec,
        secrets: Vec<api::SecretSpec>,
        configs: Vec<api::ConfigSpec>,
        prune: bool,
        history: stacks::History,
    ) -> Result<api::DeployStackResponse, ManagerError> {
        let name = revision
            .annotations
            .as_ref()
            .map(|annotations| annotations.name.clone())
            .unwrap_or_default();
        let changes = self
            .write_stack_plan(|objects| {
                stacks::plan_deploy(
                    objects,
                    revision.clone(),
                    secrets.clone(),
                    configs.clone(),
                    prune,
                    history,
                    &mut raft_store::new_object_id,
                )
            })
            .await?;
        let stack = self
            .stack_objects()
            .await?
            .stacks
            .into_iter()
            .find(|stack| objects::ClusterObject::unique_name(stack) == name);
        Ok(api::DeployStackResponse { stack, changes })
    }

    /// Everything a network call reads, at one index.
    async fn network_objects(
        &self,
    ) -> Result<(Vec<api::Network>, Vec<Service>, Vec<Task>), ManagerError> {
        self.read(|view| {
            Ok((
                objects::decode_all(view.list(api::Network::KIND))?,
                objects::decode_all(view.list(Service::KIND))?,
                objects::decode_all(view.list(Task::KIND))?,
            ))
        })
        .await
    }

    async fn networks(&self) -> Result<Vec<api::Network>, ManagerError> {
        self.read(|view| objects::decode_all(view.list(api::Network::KIND)))
            .await
    }

    fn resolve_network<'a>(
        networks: &'a [api::Network],
        reference: &str,
    ) -> Result<&'a api::Network, ManagerError> {
        resolve::resolve(
            networks,
            reference,
            "network",
            |network| &network.id,
            |network| objects::ClusterObject::unique_name(network),
        )
    }

    /// Stores a new network's spec; the leader's allocator gives it a subnet and a VNI later.
    async fn create_network(
        &self,
        mut spec: api::NetworkSpec,
    ) -> Result<api::Network, ManagerError> {
        spec::defaults::apply_network_defaults(&mut spec);
        networks::check_create(&spec, &self.networks().await?)?;
        let network = api::Network {
            id: raft_store::new_object_id(),
            spec: Some(spec),
            ..Default::default()
        };
        self.store
            .write(raft_store::Transaction::new(vec![objects::create(
                &network,
            )]))
            .await?;
        self.read_back(&network.id).await
    }

    async fn remove_network(&self, reference: &str) -> Result<String, ManagerError> {
        self.write_network_plan(|all, services, tasks| {
            let network = Self::resolve_network(all, reference)?;
            let change = match networks::check_remove(network, services, tasks)? {
                networks::Removal::Now => objects::delete(network),
                networks::Removal::OnceUnused => objects::update(&api::Network {
                    pending_delete: true,
                    ..network.clone()
                }),
            };
            Ok((vec![change], network.id.clone()))
        })
        .await
    }

    /// Decides a network removal on a fresh read and writes it at the versions read. The
    /// allocator rewrites networks as it hands out addresses, so a conflict means deciding again
    /// on a newer read, not failing the user's command.
    async fn write_network_plan<R>(
        &self,
        plan: impl Fn(
            &[api::Network],
            &[Service],
            &[Task],
        ) -> Result<(Vec<raft_store::Change>, R), ManagerError>,
    ) -> Result<R, ManagerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (all, services, tasks) = self.network_objects().await?;
            let (changes, outcome) = plan(&all, &services, &tasks)?;
            if changes.is_empty() {
                return Ok(outcome);
            }
            match self
                .store
                .write(raft_store::Transaction::new(changes))
                .await
            {
                Ok(_) => return Ok(outcome),
                Err(raft_store::StoreError::Rejected(raft_store::TxnRejection::Conflict {
                    ..
                })) if attempt < FRESH_READ_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Removes every unused network passing `filters` in one transaction, and returns their
    /// names.
    async fn prune_networks(&self, filters: &[String]) -> Result<Vec<String>, ManagerError> {
        self.write_network_plan(|all, services, tasks| {
            let unused = networks::prunable(all, services, tasks, filters)?;
            let names = unused
                .iter()
                .map(|network| objects::ClusterObject::unique_name(*network).to_owned())
                .collect();
            Ok((unused.into_iter().map(objects::delete).collect(), names))
        })
        .await
    }

    async fn create_payload<T: Payload>(&self, mut payload: T) -> Result<T, ManagerError> {
        payloads::check_payload(T::PAYLOAD, payload.annotations(), payload.data())?;
        payload.meta_mut().take();
        let id = raft_store::new_object_id();
        payload.set_id(id.clone());
        self.store
            .write(raft_store::Transaction::new(vec![objects::create(
                &payload,
            )]))
            .await?;
        Ok(self.read_back::<T>(&id).await?.into_read())
    }

    async fn payloads<T: Payload>(&self) -> Result<Vec<T>, ManagerError> {
        let all: Vec<T> = self
            .read(|view| objects::decode_all(view.list(T::KIND)))
            .await?;
        Ok(all.into_iter().map(Payload::into_read).collect())
    }

    async fn payload<T: Payload>(&self, reference: &str) -> Result<T, ManagerError> {
        let all: Vec<T> = self
            .read(|view| objects::decode_all(view.list(T::KIND)))
            .await?;
        let found = resolve::resolve(&all, reference, T::PAYLOAD.noun(), |p| p.id(), |p| p.name())?;
        Ok(found.clone().into_read())
    }

    /// Changes the labels of a secret or config read at `version`, and nothing else.
    async fn update_payload<T: Payload>(
        &self,
        reference: &str,
        version: u64,
        requested: T,
    ) -> Result<T, ManagerError> {
        let all: Vec<T> = self
            .read(|view| objects::decode_all(view.list(T::KIND)))
            .await?;
        let found = resolve::resolve(&all, reference, T::PAYLOAD.noun(), |p| p.id(), |p| p.name())?;
        let updated = payloads::relabel(found, &requested)?;
        self.store
            .write(raft_store::Transaction::new(vec![objects::update_at(
                &updated, version,
            )]))
            .await?;
        Ok(self.read_back::<T>(found.id()).await?.into_read())
    }

    /// Removes a secret or config, refused while a service uses it.
    async fn remove_payload<T: Payload>(&self, reference: &str) -> Result<String, ManagerError> {
        let (all, services): (Vec<T>, Vec<Service>) = self
            .read(|view| {
                Ok((
                    objects::decode_all(view.list(T::KIND))?,
                    objects::decode_all(view.list(Service::KIND))?,
                ))
            })
            .await?;
        let found = resolve::resolve(&all, reference, T::PAYLOAD.noun(), |p| p.id(), |p| p.name())?;
        let users = payloads::services_using(T::PAYLOAD, found.id(), &services);
        if !users.is_empty() {
            let noun = T::PAYLOAD.noun();
            return Err(ManagerError::FailedPrecondition(format!(
                "{noun} {} is in use by the following service(s): {}; remove it from them first ('shoal service update --{noun}-rm {}') or remove the services",
                found.name(),
                users.join(", "),
                found.name()
            )));
        }
        self.store
            .write(raft_store::Transaction::new(vec![objects::delete(found)]))
            .await?;
        Ok(found.id().to_owned())
    }

    async fn remove_node(&self, request: RemoveNodeRequest) -> Result<String, ManagerError> {
        let node = self
            .read_view(|view| {
                Ok(resolve_node(&view.nodes().collect::<Vec<_>>(), &request.node)?.clone())
            })
            .await?;
        if node.manager_status.is_some() || node.role() == api::NodeRole::Manager {
            return Err(ManagerError::FailedPrecondition(format!(
                "node {} is a manager and a member of the Raft group: demote it first with 'shoal node demote {}'",
                node.id, node.id
            )));
        }
        let state = node
            .status
            .as_ref()
            .map_or(api::node_status::State::Unknown, |status| status.state());
        if !request.force && state != api::node_status::State::Down {
            return Err(ManagerError::FailedPrecondition(format!(
                "node {} is not down and can't be removed: stop its daemon or run 'shoal swarm leave' on it first, or use --force",
                node.id
            )));
        }
        let mut cluster = self.cluster().await?;
        crate::authz::revoke_every_certificate(
            &mut cluster,
            &node.id,
            std::time::SystemTime::now(),
        );
        self.store
            .write(raft_store::Transaction::new(vec![
                objects::delete(&node),
                objects::update(&cluster),
            ]))
            .await?;
        tracing::info!(node = %node.id, "node removed; its certificate is revoked");
        Ok(node.id)
    }

    async fn update_cluster(&self, request: UpdateClusterRequest) -> Result<Cluster, ManagerError> {
        let spec = request.spec.ok_or_else(|| {
            ManagerError::InvalidArgument("the update carries no cluster spec".to_owned())
        })?;
        spec::validate::cluster_spec(&spec)?;
        let mut cluster = self.cluster().await?;
        cluster.spec = Some(spec);
        crate::data_key::settle_unlock_keys(
            &mut cluster,
            request.rotate_manager_unlock_key,
            crate::data_key::UnlockKey::generate,
        )?;
        if request.rotate_root_ca {
            crate::node_ca::start_root_rotation(&mut cluster)?;
        }
        if request.rotate_worker_token || request.rotate_manager_token {
            let root = cluster.root_ca.get_or_insert_with(Default::default);
            let root_der = crate::ca::pem_to_der(&String::from_utf8_lossy(&root.ca_cert))?;
            let tokens = root.join_tokens.get_or_insert_with(Default::default);
            if request.rotate_worker_token {
                tokens.worker = crate::join_token::JoinToken::generate(&root_der).to_string();
            }
            if request.rotate_manager_token {
                tokens.manager = crate::join_token::JoinToken::generate(&root_der).to_string();
            }
        }
        self.store
            .write(raft_store::Transaction::new(vec![objects::update_at(
                &cluster,
                request.version,
            )]))
            .await?;
        Ok(without_secrets(self.read_back(&cluster.id).await?))
    }

    async fn list_tasks(
        &self,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, ManagerError> {
        self.read_view(|view| {
            let services = visible_services(view.services());
            let mut service_ids = BTreeSet::new();
            for reference in &request.services {
                service_ids.insert(resolve_service(&services, reference)?.id.clone());
            }
            let mut node_ids = BTreeSet::new();
            if !request.nodes.is_empty() {
                let nodes: Vec<&Node> = view.nodes().collect();
                for reference in &request.nodes {
                    node_ids.insert(resolve_node(&nodes, reference)?.id.clone());
                }
            }
            // The narrower index picks the candidates; the other filter checks them.
            let candidates: Vec<&Task> = if !service_ids.is_empty() {
                service_ids
                    .iter()
                    .flat_map(|id| view.tasks_of_service(id))
                    .collect()
            } else if !node_ids.is_empty() {
                node_ids
                    .iter()
                    .flat_map(|id| view.tasks_on_node(id))
                    .collect()
            } else {
                view.tasks().collect()
            };
            let mut tasks: Vec<&Task> = candidates
                .into_iter()
                .filter(|task| node_ids.is_empty() || node_ids.contains(&task.node_id))
                .collect();
            // Sorted as references and encoded from them, never copied: at 50,000 tasks the
            // copies alone held 100 MB of the leader's memory until the answer was sent.
            tasks.sort_by(|left, right| left.id.cmp(&right.id));
            Ok(ListTasksResponse::encoding(tasks.iter().copied()))
        })
        .await
    }

    /// Every node, in id order.
    async fn nodes(&self) -> Result<Vec<Node>, ManagerError> {
        self.read_view(|view| Ok(view.nodes().cloned().collect()))
            .await
    }

    async fn progress(&self, reference: &str) -> Result<ServiceProgressResponse, ManagerError> {
        let given_up = self.given_up.borrow().clone();
        self.read_view(|view| progress_of(view, reference, &given_up))
            .await
    }

    /// The nodes and tasks a log request reads from.
    /// The nodes and tasks whose output `request` asks for, and the ids of the services it
    /// names. A request that follows services asks only for tasks that have started; the rest
    /// are [`follow_new_tasks`]' to add once they do.
    async fn log_targets(
        &self,
        request: &ServiceLogsRequest,
    ) -> Result<(Vec<LogTarget>, HashSet<String>), ManagerError> {
        self.read_view(|view| {
            let services = visible_services(view.services());
            // Every task only when some are named: a follow of services needs their own.
            let tasks: Vec<&Task> = if request.tasks.is_empty() {
                Vec::new()
            } else {
                view.tasks().collect()
            };
            let mut service_ids = HashSet::new();
            let mut wanted: Vec<&Task> = Vec::new();
            for reference in &request.services {
                let service = resolve_service(&services, reference)?;
                service_ids.insert(service.id.clone());
                wanted.extend(
                    view.tasks_of_service(&service.id)
                        .filter(|task| !request.follow || has_started(task)),
                );
            }
            for reference in &request.tasks {
                wanted.push(resolve_task(&tasks, reference)?);
            }
            Ok((log_targets_of(wanted), service_ids))
        })
        .await
    }
}

/// Whether a task's container has started, so its node can read its output.
fn has_started(task: &Task) -> bool {
    !task.node_id.is_empty()
        && crate::orchestrator::observed_state(task) as i32 >= api::TaskState::Running as i32
}

/// The tasks by the node that holds them; tasks not placed yet have no output to read.
fn log_targets_of<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Vec<LogTarget> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in tasks {
        if !task.node_id.is_empty() {
            by_node
                .entry(task.node_id.clone())
                .or_default()
                .push(task.id.clone());
        }
    }
    by_node
        .into_iter()
        .map(|(node_id, task_ids)| LogTarget { node_id, task_ids })
        .collect()
}

fn progress_of(
    view: &ClusterView,
    reference: &str,
    given_up: &GivenUpSlots,
) -> Result<ServiceProgressResponse, ManagerError> {
    let services = visible_services(view.services());
    let service_id = resolve_service(&services, reference)?.id.clone();
    let snapshot = view.snapshot();
    progress::service_progress(&snapshot, &service_id, given_up).ok_or_else(|| {
        ManagerError::NotFound {
            kind: "service",
            reference: reference.to_owned(),
        }
    })
}

/// The shortest time between two progress messages to one caller: a rollout commits task
/// states in quick succession, and a display needs no more than ten frames a second.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a committed entry can move service `service_id`'s progress: it changes the service,
/// one of its tasks, or a node (whose state can keep slots from being placed).
fn moves_progress(committed: &raft_store::CommittedChanges, service_id: &str) -> bool {
    committed.changes.iter().any(|change| {
        let record = change.object();
        (record.kind == Service::KIND && record.id == service_id)
            || record.kind == Node::KIND
            || (record.kind == Task::KIND
                && objects::decode::<Task>(record).is_ok_and(|task| task.service_id == service_id))
    })
}

/// Sends `first`, then service `service_id`'s progress again whenever a committed change or
/// a given-up slot moves it, from the latest state and at most every [`PROGRESS_INTERVAL`],
/// until the caller hangs up; a removed service ends the stream with NotFound. `watch` began
/// before `first` was read, so no change falls between.
async fn push_progress(
    store: Arc<Store>,
    view: Arc<SharedView>,
    mut given_up: watch::Receiver<GivenUpSlots>,
    service_id: String,
    first: ServiceProgressResponse,
    mut changes: raft_store::Watch,
    sender: tokio::sync::mpsc::Sender<Result<ServiceProgressResponse, Status>>,
) {
    let mut last = first.clone();
    let mut last_sent = tokio::time::Instant::now();
    if sender.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = sender.closed() => return,
            changed = given_up.changed() => if changed.is_err() {
                return;
            },
            committed = changes.next() => match committed {
                Ok(committed) if !moves_progress(&committed, &service_id) => continue,
                Ok(_) => {}
                // The progress is read from the view, which has every change published, so a
                // fresh position from there loses nothing.
                Err(raft_store::StoreError::WatchCompacted { .. }) => {
                    changes = store.watch_unpublished();
                }
                Err(error) => {
                    let _ = sender.send(Err(ManagerError::from(error).into())).await;
                    return;
                }
            },
        }
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep_until(last_sent + PROGRESS_INTERVAL) => {}
        }
        let given_up_now = given_up.borrow().clone();
        let next = view
            .read_current(|view| progress_of(view, &service_id, &given_up_now))
            .and_then(|next| next);
        match next {
            Ok(next) if next == last => {}
            Ok(next) => {
                last = next.clone();
                last_sent = tokio::time::Instant::now();
                if sender.send(Ok(next)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = sender.send(Err(error.into())).await;
                return;
            }
        }
    }
}

/// Adds the tasks of `services` that start while subscription `id` follows them, as committed
/// changes show them, until its caller goes away or the store stops. `asked` holds the tasks
/// already asked for; `watch` began before they were read, so no start falls between.
async fn follow_new_tasks(
    logs: LogBroker,
    id: String,
    services: HashSet<String>,
    mut asked: HashSet<String>,
    mut watch: raft_store::Watch,
) {
    let caller_gone = logs.caller_gone(&id);
    tokio::pin!(caller_gone);
    loop {
        let committed = tokio::select! {
            () = &mut caller_gone => return,
            committed = watch.next() => match committed {
                Ok(committed) => committed,
                Err(error) => {
                    tracing::debug!(%error, "following logs stops adding new tasks");
                    return;
                }
            },
        };
        let started: Vec<Task> = committed
            .changes
            .iter()
            .filter(|change| !matches!(change, raft_store::ChangeEvent::Deleted(_)))
            .map(raft_store::ChangeEvent::object)
            .filter(|record| record.kind == Task::KIND)
            .filter_map(|record| objects::decode::<Task>(record).ok())
            .filter(|task| services.contains(&task.service_id) && has_started(task))
            .filter(|task| asked.insert(task.id.clone()))
            .collect();
        if !started.is_empty() && !logs.extend(&id, log_targets_of(&started)) {
            return;
        }
    }
}

type ControlResult<T> = Result<Response<T>, Status>;

fn reply<T>(result: Result<T, ManagerError>) -> ControlResult<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn get_cluster(&self, _: Request<GetClusterRequest>) -> ControlResult<ClusterResponse> {
        reply(self.cluster().await.map(|cluster| ClusterResponse {
            cluster: Some(without_secrets(cluster)),
        }))
    }

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> ControlResult<ClusterResponse> {
        reply(
            ControlApi::update_cluster(self, request.into_inner())
                .await
                .map(|cluster| ClusterResponse {
                    cluster: Some(cluster),
                }),
        )
    }

    async fn get_unlock_key(
        &self,
        _: Request<GetUnlockKeyRequest>,
    ) -> ControlResult<GetUnlockKeyResponse> {
        reply(self.cluster().await.and_then(|cluster| {
            Ok(GetUnlockKeyResponse {
                unlock_key: crate::data_key::cluster_unlock_key(&cluster)?
                    .map(|key| key.to_string())
                    .unwrap_or_default(),
            })
        }))
    }

    async fn list_nodes(&self, _: Request<ListNodesRequest>) -> ControlResult<ListNodesResponse> {
        let nodes = self.nodes().await;
        let status = self.store.status();
        reply(nodes.map(|nodes| ListNodesResponse {
            nodes: managers::with_live_manager_status(nodes, &status),
        }))
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> ControlResult<NodeResponse> {
        let reference = request.into_inner().node;
        let nodes = self.nodes().await;
        let status = self.store.status();
        reply(nodes.and_then(|nodes| {
            let node = resolve_node(&nodes, &reference)?.clone();
            Ok(NodeResponse {
                node: managers::with_live_manager_status(vec![node], &status).pop(),
            })
        }))
    }

    async fn create_secret(
        &self,
        request: Request<CreateSecretRequest>,
    ) -> ControlResult<SecretResponse> {
        let secret = api::Secret {
            spec: request.into_inner().spec,
            ..Default::default()
        };
        reply(
            self.create_payload(secret)
                .await
                .map(|secret| SecretResponse {
                    secret: Some(secret),
                }),
        )
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> ControlResult<SecretResponse> {
        let reference = request.into_inner().secret;
        reply(self.payload(&reference).await.map(|secret| SecretResponse {
            secret: Some(secret),
        }))
    }

    async fn list_secrets(
        &self,
        _: Request<ListSecretsRequest>,
    ) -> ControlResult<ListSecretsResponse> {
        reply(
            self.payloads()
                .await
                .map(|secrets| ListSecretsResponse { secrets }),
        )
    }

    async fn remove_secret(
        &self,
        request: Request<RemoveSecretRequest>,
    ) -> ControlResult<RemoveSecretResponse> {
        let reference = request.into_inner().secret;
        reply(
            self.remove_payload::<api::Secret>(&reference)
                .await
                .map(|secret_id| RemoveSecretResponse { secret_id }),
        )
    }

    async fn update_secret(
        &self,
        request: Request<UpdateSecretRequest>,
    ) -> ControlResult<SecretResponse> {
        let request = request.into_inner();
        let requested = api::Secret {
            spec: request.spec,
            ..Default::default()
        };
        reply(
            self.update_payload(&request.secret, request.version, requested)
                .await
                .map(|secret| SecretResponse {
                    secret: Some(secret),
                }),
        )
    }

    async fn create_config(
        &self,
        request: Request<CreateConfigRequest>,
    ) -> ControlResult<ConfigResponse> {
        let config = api::Config {
            spec: request.into_inner().spec,
            ..Default::default()
        };
        reply(
            self.create_payload(config)
                .await
                .map(|config| ConfigResponse {
                    config: Some(config),
                }),
        )
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> ControlResult<ConfigResponse> {
        let reference = request.into_inner().config;
        reply(self.payload(&reference).await.map(|config| ConfigResponse {
            config: Some(config),
        }))
    }

    async fn list_configs(
        &self,
        _: Request<ListConfigsRequest>,
    ) -> ControlResult<ListConfigsResponse> {
        reply(
            self.payloads()
                .await
                .map(|configs| ListConfigsResponse { configs }),
        )
    }

    async fn update_config(
        &self,
        request: Request<UpdateConfigRequest>,
    ) -> ControlResult<ConfigResponse> {
        let request = request.into_inner();
        let requested = api::Config {
            spec: request.spec,
            ..Default::default()
        };
        reply(
            self.update_payload(&request.config, request.version, requested)
                .await
                .map(|config| ConfigResponse {
                    config: Some(config),
                }),
        )
    }

    async fn remove_config(
        &self,
        request: Request<RemoveConfigRequest>,
    ) -> ControlResult<RemoveConfigResponse> {
        let reference = request.into_inner().config;
        reply(
            self.remove_payload::<api::Config>(&reference)
                .await
                .map(|config_id| RemoveConfigResponse { config_id }),
        )
    }

    async fn deploy_stack(
        &self,
        request: Request<api::DeployStackRequest>,
    ) -> ControlResult<api::DeployStackResponse> {
        let request = request.into_inner();
        let Some(revision) = request.spec else {
            return reply(Err(ManagerError::InvalidArgument(
                "the deploy carries no stack spec".to_owned(),
            )));
        };
        reply(
            ControlApi::deploy_stack(
                self,
                revision,
                request.secrets,
                request.configs,
                request.prune,
                stacks::History::Push,
            )
            .await,
        )
    }

    async fn list_stacks(
        &self,
        _: Request<api::ListStacksRequest>,
    ) -> ControlResult<api::ListStacksResponse> {
        reply(
            self.stack_objects()
                .await
                .map(|objects| api::ListStacksResponse {
                    stacks: objects.stacks,
                }),
        )
    }

    async fn remove_stack(
        &self,
        request: Request<api::RemoveStackRequest>,
    ) -> ControlResult<api::StackChangesResponse> {
        let name = request.into_inner().name;
        reply(
            self.write_stack_plan(|objects| stacks::plan_remove(objects, &name))
                .await
                .map(|changes| api::StackChangesResponse { changes }),
        )
    }

    async fn rollback_stack(
        &self,
        request: Request<api::RollbackStackRequest>,
    ) -> ControlResult<api::DeployStackResponse> {
        let name = request.into_inner().name;
        let result = async {
            let revision = stacks::previous_revision(&self.stack_objects().await?, &name)?;
            // The earlier revision's secrets and configs still exist (a deploy never changes
            // them, and only `stack rm` removes them), so no data travels.
            ControlApi::deploy_stack(
                self,
                revision,
                Vec::new(),
                Vec::new(),
                true,
                stacks::History::Swap,
            )
            .await
        }
        .await;
        reply(result)
    }

    async fn create_network(
        &self,
        request: Request<api::CreateNetworkRequest>,
    ) -> ControlResult<api::NetworkResponse> {
        let spec = request.into_inner().spec.unwrap_or_default();
        reply(
            ControlApi::create_network(self, spec)
                .await
                .map(|network| api::NetworkResponse {
                    network: Some(network),
                }),
        )
    }

    async fn get_network(
        &self,
        request: Request<api::GetNetworkRequest>,
    ) -> ControlResult<api::NetworkResponse> {
        let reference = request.into_inner().network;
        reply(self.networks().await.and_then(|all| {
            Ok(api::NetworkResponse {
                network: Some(Self::resolve_network(&all, &reference)?.clone()),
            })
        }))
    }

    async fn list_networks(
        &self,
        request: Request<api::ListNetworksRequest>,
    ) -> ControlResult<api::ListNetworksResponse> {
        let filters = request.into_inner().filters;
        reply(self.networks().await.and_then(|all| {
            Ok(api::ListNetworksResponse {
                networks: networks::list(all, &filters)?,
            })
        }))
    }

    async fn remove_network(
        &self,
        request: Request<api::RemoveNetworkRequest>,
    ) -> ControlResult<api::RemoveNetworkResponse> {
        let reference = request.into_inner().network;
        reply(
            ControlApi::remove_network(self, &reference)
                .await
                .map(|network_id| api::RemoveNetworkResponse { network_id }),
        )
    }

    async fn prune_networks(
        &self,
        request: Request<api::PruneNetworksRequest>,
    ) -> ControlResult<api::PruneNetworksResponse> {
        let filters = request.into_inner().filters;
        reply(
            ControlApi::prune_networks(self, &filters)
                .await
                .map(|networks_deleted| api::PruneNetworksResponse { networks_deleted }),
        )
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> ControlResult<RemoveNodeResponse> {
        reply(
            ControlApi::remove_node(self, request.into_inner())
                .await
                .map(|node_id| RemoveNodeResponse { node_id }),
        )
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> ControlResult<NodeResponse> {
        reply(
            ControlApi::update_node(self, request.into_inner())
                .await
                .map(|node| NodeResponse { node: Some(node) }),
        )
    }

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> ControlResult<ServiceResponse> {
        let spec = request.into_inner().spec.unwrap_or_default();
        reply(
            ControlApi::create_service(self, spec)
                .await
                .map(|service| ServiceResponse {
                    service: Some(service),
                }),
        )
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> ControlResult<ServiceResponse> {
        let reference = request.into_inner().service;
        reply(
            self.read_view(|view| {
                let services = visible_services(view.services());
                Ok(ServiceResponse {
                    service: Some(resolve_service(&services, &reference)?.clone()),
                })
            })
            .await,
        )
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> ControlResult<ListServicesResponse> {
        reply(
            self.read_view(|view| {
                let services = visible_services(view.services());
                let snapshot = view.snapshot();
                let statuses = services
                    .iter()
                    .map(|service| progress::service_status(&snapshot, service))
                    .collect();
                Ok(ListServicesResponse {
                    services: services.into_iter().cloned().collect(),
                    statuses,
                })
            })
            .await,
        )
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> ControlResult<ServiceResponse> {
        reply(
            ControlApi::update_service(self, request.into_inner())
                .await
                .map(|service| ServiceResponse {
                    service: Some(service),
                }),
        )
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> ControlResult<RemoveServiceResponse> {
        let reference = request.into_inner().service;
        reply(
            ControlApi::remove_service(self, &reference)
                .await
                .map(|service_id| RemoveServiceResponse { service_id }),
        )
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> ControlResult<ListTasksResponse> {
        reply(ControlApi::list_tasks(self, request.into_inner()).await)
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> ControlResult<TaskResponse> {
        let reference = request.into_inner().task;
        let task = self
            .read_view(|view| match view.task(&reference) {
                Some(task) => Ok(task.clone()),
                // Not a whole id: a prefix, looked up among them all.
                None => {
                    let tasks: Vec<&Task> = view.tasks().collect();
                    resolve_task(&tasks, &reference).cloned()
                }
            })
            .await;
        reply(task.map(|task| TaskResponse { task: Some(task) }))
    }

    type ServiceProgressStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ServiceProgressResponse, Status>> + Send>,
    >;

    async fn service_progress(
        &self,
        request: Request<ServiceProgressRequest>,
    ) -> ControlResult<Self::ServiceProgressStream> {
        // Watching from before the first read, so a change meanwhile is pushed either way (from
        // the first change not yet published: the read is of the view, which has the rest).
        let changes = self.store.watch_unpublished();
        let first = self
            .progress(&request.into_inner().service)
            .await
            .map_err(Status::from)?;
        let service_id = first
            .service
            .as_ref()
            .map(|service| service.id.clone())
            .unwrap_or_default();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(push_progress(
            Arc::clone(&self.store),
            Arc::clone(&self.view),
            self.given_up.clone(),
            service_id,
            first,
            changes,
            sender,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> ControlResult<Self::ServiceLogsStream> {
        let request = request.into_inner();
        if request.services.is_empty() && request.tasks.is_empty() {
            return Err(Status::invalid_argument(
                "no service or task given: name one, as in 'shoal service logs web'",
            ));
        }
        // Watching from before the read (of the view, which has every change published), so a
        // task starting meanwhile is seen either way.
        let watch = self.store.watch_unpublished();
        let (targets, services) = self.log_targets(&request).await.map_err(Status::from)?;
        let follow_services = request.follow && !services.is_empty();
        let asked: HashSet<String> = targets
            .iter()
            .flat_map(|target| target.task_ids.iter().cloned())
            .collect();
        let stream = self.logs.subscribe(
            targets,
            LogReading {
                follow: request.follow,
                tail: request.tail,
                open_ended: follow_services,
            },
        );
        if follow_services && let Some(id) = stream.id() {
            tokio::spawn(follow_new_tasks(
                self.logs.clone(),
                id.to_owned(),
                services,
                asked,
                watch,
            ));
        }
        Ok(Response::new(stream))
    }
}

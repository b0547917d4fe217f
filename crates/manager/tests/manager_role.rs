//! The manager role end to end without containers: `ManagerRole::init` on loopback, a worker
//! played by the test over the real dispatcher (gRPC, mutual TLS with the node's certificate),
//! and the control API. Checks that a session makes the node ready, assignments reach the
//! worker, batched status reports converge the service, a node whose heartbeats stop is marked
//! down, worker sessions carry the network keys and their rotations (which clients never see),
//! and bad requests (taken names, bad constraints, stale versions, unknown references) are
//! refused with errors that say what to do.

use std::time::{Duration, Instant};

use manager::data_key::{StoredDataKey, UnlockKey};
use manager::objects::ClusterObject as _;
use manager::{InitOptions, ManagerRole, SwarmDir};
use raft_store::Transaction;
use shoal_proto::api::control_server::Control;
use shoal_proto::api::dispatcher_client::DispatcherClient;
use shoal_proto::api::{
    AssignmentsRequest, ContainerSpec, CreateServiceRequest, HeartbeatRequest, ListNodesRequest,
    ListServicesRequest, ReplicatedService, ServiceProgressRequest, ServiceSpec, SessionRequest,
    TaskSpec, TaskState, TaskStatus, TaskStatusUpdate, UpdateTaskStatusRequest, node_status,
    service_progress_response::Verdict, service_spec, task_spec,
};
use tokio_stream::StreamExt as _;
use tonic::Request;
use tonic::transport::Endpoint;

async fn poll_until<T, F>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn service_spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(shoal_proto::api::Annotations {
            name: name.to_owned(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                image: "busybox".to_owned(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas,
        })),
        ..Default::default()
    }
}

/// Init options for a one-manager swarm on loopback, on a port the system picks.
fn on_loopback(hostname: &str) -> InitOptions {
    InitOptions {
        advertise_addr: "127.0.0.1".into(),
        listen_addr: "127.0.0.1:0".into(),
        hostname: hostname.into(),
        ..Default::default()
    }
}

/// Creates a service through the control API; the stored service, or the refusal.
async fn create_service(
    control: &manager::ControlApi,
    spec: ServiceSpec,
) -> Result<shoal_proto::api::Service, tonic::Status> {
    control
        .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
        .await
        .map(|response| response.into_inner().service.unwrap())
}

/// Polls until the swarm's one node is in `state`, failing after `timeout`.
async fn wait_for_node_state(
    control: &manager::ControlApi,
    state: node_status::State,
    timeout: Duration,
) {
    poll_until(&format!("the node to be {state:?}"), timeout, || {
        let control = control.clone();
        async move {
            let nodes = control
                .list_nodes(Request::new(ListNodesRequest {}))
                .await
                .ok()?
                .into_inner()
                .nodes;
            (nodes[0].status.as_ref()?.state() == state).then_some(())
        }
    })
    .await;
}

/// A one-manager swarm on loopback with dispatcher heartbeats every `heartbeat`, and a
/// dispatcher client holding the node's own certificate.
async fn one_manager_swarm(
    swarm_dir: &SwarmDir,
    heartbeat: Duration,
) -> (
    ManagerRole,
    manager::Membership,
    DispatcherClient<tonic::transport::Channel>,
) {
    let role = ManagerRole::init(
        swarm_dir,
        InitOptions {
            dispatcher_heartbeat: Some(heartbeat),
            ..on_loopback("test-host")
        },
        Default::default(),
    )
    .await
    .unwrap();
    let (membership, identity) = swarm_dir.load().unwrap().unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", membership.advertise_addr))
        .unwrap()
        .tls_config(identity.client_config())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (role, membership, DispatcherClient::new(channel))
}

/// Sends a heartbeat every 50 ms on `session_id` until one is refused or the task is aborted.
fn keep_heartbeating(
    dispatcher: &DispatcherClient<tonic::transport::Channel>,
    session_id: String,
) -> tokio::task::JoinHandle<()> {
    let mut dispatcher = dispatcher.clone();
    tokio::spawn(async move {
        while dispatcher
            .heartbeat(HeartbeatRequest {
                session_id: session_id.clone(),
            })
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test]
async fn a_worker_session_runs_a_service_and_a_silent_node_goes_down() {
    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let heartbeat = Duration::from_millis(200);
    let (role, membership, mut dispatcher) = one_manager_swarm(&swarm_dir, heartbeat).await;
    // A second init on the same data root is refused and leaves the swarm intact.
    let again = ManagerRole::init(&swarm_dir, InitOptions::default(), Default::default()).await;
    assert!(
        again
            .err()
            .unwrap()
            .to_string()
            .contains("already part of a swarm")
    );

    let control = role.control();

    let mut session = dispatcher
        .session(SessionRequest {
            node_id: membership.node_id.clone(),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = session.message().await.unwrap().unwrap();
    assert_eq!(first.heartbeat_period.unwrap().nanos, 200_000_000);
    let session_id = first.session_id;
    let nodes = control
        .list_nodes(Request::new(ListNodesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(
        nodes[0].status.as_ref().unwrap().state(),
        node_status::State::Ready
    );

    // The certificate is this node's: a session for any other node is refused.
    let stranger = dispatcher
        .session(SessionRequest {
            node_id: "not-a-member".into(),
            description: None,
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::PermissionDenied);

    let heartbeats = keep_heartbeating(&dispatcher, session_id.clone());

    control
        .create_service(Request::new(CreateServiceRequest {
            spec: Some(service_spec("web", 3)),
        }))
        .await
        .unwrap();
    let mut assignments = dispatcher
        .assignments(AssignmentsRequest {
            session_id: session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let assigned = loop {
        let message = assignments.message().await.unwrap().unwrap();
        if message.tasks.len() == 3 {
            break message.tasks;
        }
    };
    // The worker reports every task running in one call: the dispatcher writes it as one batch.
    let updates = assigned
        .iter()
        .map(|task| {
            let mut status = TaskStatus {
                message: "started".into(),
                ..Default::default()
            };
            status.set_state(TaskState::Running);
            TaskStatusUpdate {
                task_id: task.id.clone(),
                status: Some(status),
            }
        })
        .collect();
    dispatcher
        .update_task_status(UpdateTaskStatusRequest {
            session_id: session_id.clone(),
            updates,
        })
        .await
        .unwrap();
    let mut pushed = control
        .service_progress(Request::new(ServiceProgressRequest {
            service: "web".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let progress = pushed
        .next()
        .await
        .expect("the progress comes at once")
        .unwrap();
    assert_eq!(progress.verdict(), Verdict::Converged, "{progress:?}");
    assert_eq!((progress.done, progress.desired), (3, 3));
    let listed = control
        .list_services(Request::new(ListServicesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.statuses[0].running_tasks, 3);

    // Heartbeats stop: within three periods (plus a check interval) the node is down and the
    // session is over.
    heartbeats.abort();
    let silent_since = Instant::now();
    wait_for_node_state(&control, node_status::State::Down, heartbeat * 6).await;
    // Not before three periods have passed since the last heartbeat (sent up to 50 ms before
    // the abort).
    assert!(silent_since.elapsed() >= heartbeat * 3 - Duration::from_millis(60));
    // Node changes the session told of before (the node's own write at the session's
    // opening may land after its first message) come first; then the stream ends.
    let ended = loop {
        match session.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(ended.is_err(), "the session stream ends: {ended:?}");
    role.shutdown().await;
}

/// A manager that lost the leadership without noticing yet may mark a node down after the new
/// leader opened the node's session (its write is forwarded and commits; the fault campaign
/// found it, seed 7). The live session's heartbeats mark the node ready again, where before it
/// stayed down for good.
#[tokio::test]
async fn a_live_sessions_heartbeats_undo_a_stale_mark_down() {
    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let heartbeat = Duration::from_millis(200);
    let (role, membership, mut dispatcher) = one_manager_swarm(&swarm_dir, heartbeat).await;
    let mut session = dispatcher
        .session(SessionRequest {
            node_id: membership.node_id.clone(),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    let session_id = session.message().await.unwrap().unwrap().session_id;
    let heartbeats = keep_heartbeating(&dispatcher, session_id);

    // What the stale manager writes: the node down, for a heartbeat failure.
    let store = role.store();
    let mut node: shoal_proto::api::Node = store
        .local_view(|view| {
            view.get(shoal_proto::api::Node::KIND, &membership.node_id)
                .map(manager::objects::decode::<shoal_proto::api::Node>)
                .transpose()
        })
        .unwrap()
        .unwrap();
    let status = node.status.as_mut().unwrap();
    status.set_state(node_status::State::Down);
    status.message = "heartbeat failure".into();
    store
        .write(Transaction::new(vec![manager::objects::update(&node)]))
        .await
        .unwrap();

    let control = role.control();
    wait_for_node_state(&control, node_status::State::Ready, heartbeat * 5).await;
    heartbeats.abort();
    role.shutdown().await;
}

#[tokio::test]
async fn the_control_api_refuses_bad_input_with_what_to_do() {
    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(
        &swarm_dir,
        InitOptions {
            advertise_addr: "127.0.0.1".into(),
            listen_addr: "127.0.0.1:0".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let control = role.control();
    let web = create_service(&control, service_spec("web", 1))
        .await
        .unwrap();

    let taken = create_service(&control, service_spec("web", 2))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    assert!(taken.message().contains("already in use"), "{taken:?}");

    let mut constrained = service_spec("db", 1);
    constrained.task.as_mut().unwrap().placement = Some(Box::new(shoal_proto::api::Placement {
        constraints: vec!["node.labels.zone=east".into()],
        ..Default::default()
    }));
    let bad_constraint = create_service(&control, constrained).await.unwrap_err();
    assert_eq!(bad_constraint.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_constraint.message().starts_with("invalid constraint"),
        "{bad_constraint:?}"
    );

    // An update based on a version someone else has since replaced is refused, and the
    // service keeps the newer spec.
    let read_version = web.meta.as_ref().unwrap().version.unwrap().index;
    let update = |replicas: u64, version: u64| {
        let control = control.clone();
        async move {
            control
                .update_service(Request::new(shoal_proto::api::UpdateServiceRequest {
                    service: "web".into(),
                    version,
                    spec: Some(service_spec("web", replicas)),
                    ..Default::default()
                }))
                .await
        }
    };
    update(4, read_version).await.unwrap();
    let stale = update(7, read_version).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);
    assert!(stale.message().contains("re-read"), "{stale:?}");
    let current = control
        .get_service(Request::new(shoal_proto::api::GetServiceRequest {
            service: web.id[..6].to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(
        current.spec.unwrap().mode,
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 4
        }))
    );
    // Scaling replaces no task: the spec version, which marks tasks out of date, stays.
    assert_eq!(current.spec_version, web.spec_version);
    let mut changed = service_spec("web", 4);
    if let Some(task_spec::Runtime::Container(container)) =
        changed.task.as_mut().and_then(|task| task.runtime.as_mut())
    {
        container.env = vec!["COLOR=blue".into()];
    }
    let updated = control
        .update_service(Request::new(shoal_proto::api::UpdateServiceRequest {
            service: "web".into(),
            version: current.meta.unwrap().version.unwrap().index,
            spec: Some(changed),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert!(updated.spec_version.unwrap().index > web.spec_version.unwrap().index);

    // A rollback swaps the two specs back, spec versions included, and says why it runs. The
    // updater writes the service's update status first (nothing runs the new tasks here, so
    // the update stays under way), and the rollback states the version after that.
    let updating = loop {
        let service = control
            .get_service(Request::new(shoal_proto::api::GetServiceRequest {
                service: "web".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .service
            .unwrap();
        if service.update_status.is_some() {
            break service;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let rolled_back = control
        .update_service(Request::new(shoal_proto::api::UpdateServiceRequest {
            service: "web".into(),
            version: updating.meta.as_ref().unwrap().version.unwrap().index,
            spec: None,
            rollback: shoal_proto::api::update_service_request::Rollback::Previous as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(rolled_back.spec, updated.previous_spec);
    assert_eq!(rolled_back.spec_version, updated.previous_spec_version);
    assert_eq!(rolled_back.previous_spec, updated.spec);
    let status = rolled_back.update_status.unwrap();
    assert_eq!(
        status.state(),
        shoal_proto::api::update_status::UpdateState::RollbackStarted
    );
    assert_eq!(status.message, "manually requested rollback");

    let unknown = control
        .get_service(Request::new(shoal_proto::api::GetServiceRequest {
            service: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("shoal service ls"),
        "{unknown:?}"
    );
    role.shutdown().await;
}

/// A channel to the cluster port at `addr` that shows `identity`, or no client certificate at
/// all with `None` (trusting the root in `root_pem`).
async fn cluster_port(
    addr: &str,
    identity: Option<&raft_store::TlsIdentity>,
    root_pem: &[u8],
) -> tonic::transport::Channel {
    let tls = match identity {
        Some(identity) => identity.client_config(),
        None => tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(root_pem))
            .domain_name(raft_store::MANAGER_SERVER_NAME),
    };
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_cluster_port_admits_each_caller_to_what_its_certificate_allows() {
    use shoal_proto::api::control_client::ControlClient;
    use shoal_proto::api::node_ca_client::NodeCaClient;
    use shoal_proto::api::{
        GetClusterRequest, RemoveNodeRequest, RenewNodeCertificateRequest, UpdateClusterRequest,
    };
    use shoal_proto::raft::RaftMessage;
    use shoal_proto::raft::raft_client::RaftClient;

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(&swarm_dir, on_loopback("manager-host"), Default::default())
        .await
        .unwrap();
    let (membership, manager_identity) = swarm_dir.load().unwrap().unwrap();
    let addr = membership.advertise_addr.clone();
    let control = role.control();
    let cluster = control
        .get_cluster(Request::new(GetClusterRequest {}))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    let tokens = cluster.root_ca.clone().unwrap().join_tokens.unwrap();

    // A worker joins with the worker token: it gets its id, a worker certificate and the
    // manager list; the CA never saw its key.
    let grant = manager::join::join(&addr, &tokens.worker, "worker-host", "")
        .await
        .unwrap();
    assert_eq!(grant.role, shoal_proto::api::NodeRole::Worker);
    assert_eq!(grant.cluster_id, membership.cluster_id);
    assert_eq!(grant.manager_addrs, vec![addr.clone()]);
    let nodes = control
        .list_nodes(Request::new(ListNodesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 2);

    // A made-up secret is refused.
    let digest = tokens.worker.split('-').nth(2).unwrap();
    let forged = format!("SWMTKN-1-{digest}-{}", "0".repeat(25));
    let refused = manager::join::join(&addr, &forged, "intruder", "")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("join token is not valid"), "{refused}");

    // The worker's certificate opens neither the control API nor Raft.
    let worker_port = cluster_port(&addr, Some(&grant.identity), &[]).await;
    let denied = ControlClient::new(worker_port.clone())
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    assert!(denied.message().contains("worker certificate"), "{denied}");
    let denied = RaftClient::new(worker_port.clone())
        .vote(RaftMessage::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");

    // Without a client certificate, only the CA's join call answers.
    let anonymous = cluster_port(&addr, None, &manager_identity.ca_pem).await;
    let denied = DispatcherClient::new(anonymous.clone())
        .session(SessionRequest {
            node_id: grant.node_id.clone(),
            description: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied}");
    let denied = ControlClient::new(anonymous)
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied}");

    // A manager's certificate opens the control API on the cluster port.
    let manager_port = cluster_port(&addr, Some(&manager_identity), &[]).await;
    let listed = ControlClient::new(manager_port)
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(listed.len(), 2);

    // A rotated token stops working at once; the joined worker is unaffected.
    control
        .update_cluster(Request::new(UpdateClusterRequest {
            version: cluster
                .meta
                .as_ref()
                .unwrap()
                .version
                .as_ref()
                .unwrap()
                .index,
            spec: cluster.spec.clone(),
            rotate_worker_token: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let refused = manager::join::join(&addr, &tokens.worker, "late", "")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("rotated"), "{refused}");
    let (_, csr) = manager::ca::new_key_and_request().unwrap();
    NodeCaClient::new(worker_port.clone())
        .renew_node_certificate(RenewNodeCertificateRequest { csr: csr.clone() })
        .await
        .unwrap();

    // Once removed, the worker's certificate is refused everywhere.
    control
        .remove_node(Request::new(RemoveNodeRequest {
            node: grant.node_id.clone(),
            force: true,
        }))
        .await
        .unwrap();
    let denied = NodeCaClient::new(worker_port.clone())
        .renew_node_certificate(RenewNodeCertificateRequest { csr })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    assert!(denied.message().contains("revoked"), "{denied}");
    let denied = DispatcherClient::new(worker_port)
        .session(SessionRequest {
            node_id: grant.node_id.clone(),
            description: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    role.shutdown().await;
}

#[tokio::test]
async fn secrets_and_configs_keep_their_data_to_themselves_and_their_users() {
    use shoal_proto::api::{
        ConfigSpec, CreateConfigRequest, CreateSecretRequest, GetConfigRequest, GetSecretRequest,
        ListSecretsRequest, RemoveConfigRequest, RemoveSecretRequest, SecretReference, SecretSpec,
    };

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(&swarm_dir, on_loopback("manager-host"), Default::default())
        .await
        .unwrap();
    let control = role.control();
    let named = |name: &str| {
        Some(shoal_proto::api::Annotations {
            name: name.to_owned(),
            ..Default::default()
        })
    };
    let secret = control
        .create_secret(Request::new(CreateSecretRequest {
            spec: Some(SecretSpec {
                annotations: named("db-password"),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .secret
        .unwrap();
    // The data is stored but never returned.
    assert!(secret.spec.as_ref().unwrap().data.is_empty());
    let listed = control
        .list_secrets(Request::new(ListSecretsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].spec.as_ref().unwrap().data.is_empty());
    let by_name = control
        .get_secret(Request::new(GetSecretRequest {
            secret: "db-password".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .secret
        .unwrap();
    assert_eq!(by_name.id, secret.id);

    // A taken name, an oversized payload and a bad name are refused, writing nothing.
    for (name, size) in [("db-password", 1), ("big", 500 * 1024 + 1), ("bad name", 1)] {
        let refused = control
            .create_secret(Request::new(CreateSecretRequest {
                spec: Some(SecretSpec {
                    annotations: named(name),
                    data: vec![b'x'; size],
                    ..Default::default()
                }),
            }))
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Ok, "{name}");
    }

    // A secret a service uses can't be removed; the refusal names the service.
    let mut spec = service_spec("db", 0);
    if let Some(task_spec::Runtime::Container(container)) =
        spec.task.as_mut().and_then(|task| task.runtime.as_mut())
    {
        container.secrets.push(SecretReference {
            secret_id: secret.id.clone(),
            secret_name: "db-password".into(),
            ..Default::default()
        });
    }
    control
        .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
        .await
        .unwrap();
    let refused = control
        .remove_secret(Request::new(RemoveSecretRequest {
            secret: "db-password".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("in use"), "{refused}");
    assert!(refused.message().contains("db"), "{refused}");

    // A config's data is returned; an unused one is removed.
    let config = control
        .create_config(Request::new(CreateConfigRequest {
            spec: Some(ConfigSpec {
                annotations: named("settings"),
                data: b"port=80".to_vec(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let read = control
        .get_config(Request::new(GetConfigRequest {
            config: config.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(read.spec.unwrap().data, b"port=80");
    control
        .remove_config(Request::new(RemoveConfigRequest {
            config: "settings".into(),
        }))
        .await
        .unwrap();
    let gone = control
        .get_config(Request::new(GetConfigRequest {
            config: "settings".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    role.shutdown().await;
}

/// The cluster as the control API shows it, and the version to update it at.
async fn cluster_and_version(control: &manager::ControlApi) -> (shoal_proto::api::Cluster, u64) {
    let cluster = control
        .get_cluster(Request::new(shoal_proto::api::GetClusterRequest {}))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    let version = cluster
        .meta
        .as_ref()
        .and_then(|meta| meta.version.as_ref())
        .map_or(0, |version| version.index);
    (cluster, version)
}

async fn unlock_key_text(control: &manager::ControlApi) -> String {
    control
        .get_unlock_key(Request::new(shoal_proto::api::GetUnlockKeyRequest {}))
        .await
        .unwrap()
        .into_inner()
        .unlock_key
}

/// Waits until the data key file opens with `unlock_key` (or is in clear, for `None`).
async fn data_key_file_sealed_by(swarm_dir: &SwarmDir, unlock_key: Option<&UnlockKey>) {
    poll_until(
        "the data key file sealed as autolock says",
        Duration::from_secs(10),
        || async {
            match (swarm_dir.load_data_key().ok()?, unlock_key) {
                (StoredDataKey::Clear(_), None) => Some(()),
                (StoredDataKey::Sealed(sealed), Some(key)) => sealed.unseal(key).ok().map(drop),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test]
async fn autolock_seals_the_data_key_file_by_the_current_unlock_key() {
    use shoal_proto::api::{EncryptionConfig, UpdateClusterRequest};

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(
        &swarm_dir,
        InitOptions {
            autolock: true,
            ..on_loopback("locked-host")
        },
        Default::default(),
    )
    .await
    .unwrap();
    let control = role.control();

    // The key is only given by GetUnlockKey; the cluster object never shows it.
    let first = UnlockKey::parse(&unlock_key_text(&control).await).unwrap();
    let (cluster, version) = cluster_and_version(&control).await;
    assert!(cluster.unlock_keys.is_empty());
    let StoredDataKey::Sealed(sealed) = swarm_dir.load_data_key().unwrap() else {
        panic!("under autolock the data key file is sealed from the start");
    };
    assert_eq!(
        sealed.unseal(&first).unwrap().as_bytes(),
        role.data_key().as_bytes()
    );

    // A rotation re-seals the file: the old key no longer opens it.
    control
        .update_cluster(Request::new(UpdateClusterRequest {
            version,
            spec: cluster.spec.clone(),
            rotate_manager_unlock_key: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let second = UnlockKey::parse(&unlock_key_text(&control).await).unwrap();
    assert_ne!(second, first);
    data_key_file_sealed_by(&swarm_dir, Some(&second)).await;
    let StoredDataKey::Sealed(sealed) = swarm_dir.load_data_key().unwrap() else {
        panic!("still sealed");
    };
    let refused = sealed.unseal(&first).unwrap_err().to_string();
    assert!(refused.contains("invalid key provided"), "{refused}");

    // Turning autolock off leaves the file in clear and no key to show or rotate.
    let (cluster, version) = cluster_and_version(&control).await;
    let mut spec = cluster.spec.clone().unwrap();
    spec.encryption_config = Some(EncryptionConfig {
        auto_lock_managers: false,
    });
    control
        .update_cluster(Request::new(UpdateClusterRequest {
            version,
            spec: Some(spec.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    data_key_file_sealed_by(&swarm_dir, None).await;
    assert_eq!(unlock_key_text(&control).await, "");
    let (_, version) = cluster_and_version(&control).await;
    let refused = control
        .update_cluster(Request::new(UpdateClusterRequest {
            version,
            spec: Some(spec),
            rotate_manager_unlock_key: true,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("autolock is not turned on"),
        "{refused}"
    );

    // The manager starts again from the file it left, and reads its sealed store.
    let (membership, identity) = swarm_dir.load().unwrap().unwrap();
    let cluster_id = membership.cluster_id.clone();
    role.shutdown().await;
    let StoredDataKey::Clear(data_key) = swarm_dir.load_data_key().unwrap() else {
        panic!("in clear without autolock");
    };
    let role = ManagerRole::start(
        &swarm_dir,
        membership,
        identity,
        data_key,
        Default::default(),
    )
    .await
    .unwrap();
    let (cluster, _) = cluster_and_version(&role.control()).await;
    assert_eq!(cluster.id, cluster_id);
    role.shutdown().await;
}

/// A node that joins the swarm at `addr` with a manager token, as its daemon would: admitted by
/// the CA, its manager role started on a loopback port of its own, and taken into the Raft group.
async fn join_as_manager(
    data_root: &std::path::Path,
    addr: &str,
    token: &str,
    hostname: &str,
) -> (ManagerRole, manager::join::JoinGrant, String) {
    let grant = manager::join::join(addr, token, hostname, "")
        .await
        .unwrap();
    assert_eq!(grant.role, shoal_proto::api::NodeRole::Manager);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own_addr = format!("127.0.0.1:{port}");
    let membership = grant.membership(own_addr.clone(), own_addr.clone(), vec![addr.to_owned()]);
    let role = ManagerRole::start_new(
        &SwarmDir::new(data_root),
        membership.clone(),
        grant.identity.clone(),
        Default::default(),
    )
    .await
    .unwrap();
    manager::join::join_raft(
        &membership.manager_addrs,
        &grant.identity,
        membership.raft_member_id,
        &own_addr,
    )
    .await
    .unwrap();
    (role, grant, own_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_managers_old_certificate_is_refused_by_every_manager_call() {
    use shoal_proto::api::control_client::ControlClient;
    use shoal_proto::api::raft_membership_client::RaftMembershipClient;
    use shoal_proto::api::{
        GetClusterRequest, GetNodeRequest, NodeRole, RaftJoinRequest, UpdateNodeRequest,
    };
    use shoal_proto::raft::RaftMessage;
    use shoal_proto::raft::raft_client::RaftClient;

    let roots = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let swarm_dir = SwarmDir::new(roots[0].path());
    let first = ManagerRole::init(&swarm_dir, on_loopback("manager-a"), Default::default())
        .await
        .unwrap();
    let (membership, _) = swarm_dir.load().unwrap().unwrap();
    let a_addr = membership.advertise_addr.clone();
    let control = first.control();
    let tokens = control
        .get_cluster(Request::new(GetClusterRequest {}))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap()
        .root_ca
        .unwrap()
        .join_tokens
        .unwrap();
    let (second, b, _) =
        join_as_manager(roots[1].path(), &a_addr, &tokens.manager, "manager-b").await;
    let (third, c, c_addr) =
        join_as_manager(roots[2].path(), &a_addr, &tokens.manager, "manager-c").await;

    // Before its demotion, B's certificate opens the control API like any manager's.
    let b_on_a = cluster_port(&a_addr, Some(&b.identity), &[]).await;
    ControlClient::new(b_on_a)
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap();

    let node = control
        .get_node(Request::new(GetNodeRequest {
            node: b.node_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    let mut spec = node.spec.clone().unwrap();
    spec.set_desired_role(NodeRole::Worker);
    control
        .update_node(Request::new(UpdateNodeRequest {
            node: b.node_id.clone(),
            version: node.meta.unwrap().version.unwrap().index,
            spec: Some(spec),
        }))
        .await
        .unwrap();
    // Its daemon stops its manager role once it hears; the old certificate stays with it.
    second.shutdown().await;

    fn err<T>(result: Result<T, tonic::Status>) -> Result<tonic::Status, ()> {
        result.err().ok_or(())
    }
    let refused = |what: &str, result: Result<tonic::Status, ()>| {
        let status = result.unwrap_or_else(|()| panic!("{what} was allowed"));
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status}"
        );
        assert!(status.message().contains("revoked"), "{what}: {status}");
    };
    // The leader and the follower both refuse it, every call of every manager service.
    for (manager, addr) in [("leader", &a_addr), ("follower", &c_addr)] {
        let port = cluster_port(addr, Some(&b.identity), &[]).await;
        // The follower learns of the demotion by replication.
        poll_until(
            "the demotion to reach every manager",
            Duration::from_secs(10),
            || {
                let port = port.clone();
                async move {
                    ControlClient::new(port)
                        .list_nodes(ListNodesRequest {})
                        .await
                        .err()
                        .filter(|status| status.code() == tonic::Code::PermissionDenied)
                }
            },
        )
        .await;
        refused(
            &format!("control on the {manager}"),
            err(ControlClient::new(port.clone())
                .list_nodes(ListNodesRequest {})
                .await),
        );
        refused(
            &format!("a Raft join on the {manager}"),
            err(RaftMembershipClient::new(port.clone())
                .join(RaftJoinRequest {
                    raft_id: manager::raft_member_id_for(&b.node_id),
                    addr: "127.0.0.1:1".into(),
                })
                .await),
        );
        let mut raft = RaftClient::new(port.clone());
        refused(
            &format!("vote on the {manager}"),
            err(raft.vote(RaftMessage::default()).await),
        );
        refused(
            &format!("append entries on the {manager}"),
            err(raft.append_entries(RaftMessage::default()).await),
        );
        refused(
            &format!("install snapshot on the {manager}"),
            err(raft.install_snapshot(tokio_stream::iter(Vec::new())).await),
        );
        refused(
            &format!("propose on the {manager}"),
            err(raft.propose(RaftMessage::default()).await),
        );
        refused(
            &format!("read on the {manager}"),
            err(raft.read(RaftMessage::default()).await),
        );
        refused(
            &format!("change membership on the {manager}"),
            err(raft.change_membership(RaftMessage::default()).await),
        );
    }

    // It keeps a worker's rights: its daemon renews to a worker certificate with the old one.
    let (_, role) = manager::join::renew_certificate(std::slice::from_ref(&a_addr), &b.identity)
        .await
        .unwrap();
    assert_eq!(role, NodeRole::Worker);
    // The managers that stay are unaffected.
    let c_on_a = cluster_port(&a_addr, Some(&c.identity), &[]).await;
    let nodes = ControlClient::new(c_on_a)
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 3);
    third.shutdown().await;
    first.shutdown().await;
}

/// Issue 13: the rules of `spec` hold on every write path, whichever client writes. A stack
/// deploy is refused what `service create` is refused, with the same message; the templates
/// compose accepts and the worker expands are accepted; a service gets Swarm's defaults however
/// it was made; and `swarm init` refuses address pools with the message the CLI gives.
#[tokio::test]
async fn every_write_path_enforces_the_spec_rules_alike() {
    use shoal_proto::api::{
        Annotations, DeployStackRequest, GetServiceRequest, ResourceRequirements, Resources,
        StackSpec,
    };

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(&swarm_dir, on_loopback("spec-host"), Default::default())
        .await
        .unwrap();
    let control = role.control();
    let deploy = |spec: ServiceSpec| {
        let control = control.clone();
        async move {
            control
                .deploy_stack(Request::new(DeployStackRequest {
                    spec: Some(StackSpec {
                        annotations: Some(Annotations {
                            name: "app".into(),
                            ..Default::default()
                        }),
                        services: vec![spec],
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .await
        }
    };
    let with_container = |mut spec: ServiceSpec, change: &dyn Fn(&mut ContainerSpec)| {
        if let Some(task_spec::Runtime::Container(container)) =
            spec.task.as_mut().and_then(|task| task.runtime.as_mut())
        {
            change(container);
        }
        spec
    };

    // Reserving more than the limit: refused on both paths, with spec's message.
    let over_reserved = |name: &str| {
        let mut spec = service_spec(name, 1);
        let resources = ResourceRequirements {
            limits: Some(Resources {
                memory_bytes: 64 << 20,
                ..Default::default()
            }),
            reservations: Some(Resources {
                memory_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        };
        spec.task.as_mut().unwrap().resources = Some(Box::new(resources));
        spec
    };
    let expected = spec::validate::resources_rule(
        over_reserved("x").task.unwrap().resources.as_ref().unwrap(),
    )
    .unwrap_err()
    .to_string();
    let by_create = create_service(&control, over_reserved("big"))
        .await
        .unwrap_err();
    assert_eq!(by_create.code(), tonic::Code::InvalidArgument);
    assert_eq!(by_create.message(), expected);
    let by_stack = deploy(over_reserved("app_big")).await.unwrap_err();
    assert_eq!(by_stack.code(), tonic::Code::InvalidArgument);
    assert_eq!(by_stack.message(), expected);

    // Templates: what the worker can't expand is refused up front; what it can is accepted.
    let colour = with_container(service_spec("colour", 1), &|container| {
        container.env = vec!["X={{.Task.Colour}}".into()];
    });
    let refused = create_service(&control, colour.clone()).await.unwrap_err();
    assert!(
        refused.message().starts_with(
            "environment: invalid template \"X={{.Task.Colour}}\": unknown placeholder"
        ),
        "{refused:?}"
    );
    let mut colour_in_stack = colour;
    colour_in_stack.annotations.as_mut().unwrap().name = "app_colour".into();
    assert_eq!(
        deploy(colour_in_stack).await.unwrap_err().message(),
        refused.message()
    );
    let platform = with_container(service_spec("platform", 1), &|container| {
        container.hostname = "{{.Node.Platform.OS}}-{{- .Task.Slot -}}".into();
    });
    create_service(&control, platform).await.unwrap();

    // Swarm's service-level defaults are stored however the service was made; the restart
    // policy, which tasks copy, is left unset as Docker leaves it.
    let made = create_service(&control, service_spec("made", 1))
        .await
        .unwrap();
    deploy(service_spec("app_made", 1)).await.unwrap();
    let deployed = control
        .get_service(Request::new(GetServiceRequest {
            service: "app_made".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    for service in [&made, &deployed] {
        let spec = service.spec.clone().unwrap();
        assert_eq!(spec.update, Some(spec::defaults::update_config()));
        assert_eq!(spec.rollback, Some(spec::defaults::update_config()));
        assert_eq!(spec.task.unwrap().restart, None);
    }
    // Deploying the same file again changes nothing, defaults and all.
    let again = deploy(service_spec("app_made", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again
            .changes
            .iter()
            .all(|change| change.action() == shoal_proto::api::stack_change::Action::Unchanged),
        "{:?}",
        again.changes
    );
    role.shutdown().await;

    // Address pools: refused with the message `swarm init`'s flags get from the CLI.
    for (pools, subnet_size) in [(vec!["10.0.0.0/8"], 30), (vec!["fd00::/8"], 64)] {
        let pools: Vec<String> = pools.into_iter().map(str::to_owned).collect();
        let other_root = tempfile::tempdir().unwrap();
        let error = ManagerRole::init(
            &SwarmDir::new(other_root.path()),
            InitOptions {
                default_addr_pool: pools.clone(),
                subnet_size,
                ..on_loopback("pool-host")
            },
            Default::default(),
        )
        .await
        .err()
        .expect("a refused pool")
        .to_string();
        assert_eq!(
            error,
            spec::validate::address_pools(&pools, subnet_size)
                .unwrap_err()
                .to_string()
        );
    }
}

/// A node that opens sessions or sends heartbeats in a loop is refused past its rate, with
/// how long to wait, and its ordinary heartbeats still pass.
#[tokio::test]
async fn session_opens_and_heartbeats_are_rate_limited_per_node() {
    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let (_role, membership, mut dispatcher) =
        one_manager_swarm(&swarm_dir, Duration::from_secs(5)).await;
    let open = |mut dispatcher: DispatcherClient<tonic::transport::Channel>| {
        let node_id = membership.node_id.clone();
        async move {
            dispatcher
                .session(SessionRequest {
                    node_id,
                    description: None,
                })
                .await
        }
    };
    let mut session_id = None;
    let mut refusal = None;
    for _ in 0..100 {
        match open(dispatcher.clone()).await {
            Ok(response) => {
                let first = response.into_inner().message().await.unwrap().unwrap();
                session_id = Some(first.session_id);
            }
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("100 session opens in a row were all accepted");
    assert_eq!(refusal.code(), tonic::Code::ResourceExhausted, "{refusal}");
    assert!(
        refusal.message().contains("session opens") && refusal.message().contains("retry in"),
        "{refusal}"
    );

    let session_id = session_id.expect("no session opened before the refusal");
    let beat = |session_id: String| HeartbeatRequest { session_id };
    let mut refusal = None;
    for _ in 0..1000 {
        if let Err(status) = dispatcher.heartbeat(beat(session_id.clone())).await {
            refusal = Some(status);
            break;
        }
    }
    let refusal = refusal.expect("1000 heartbeats in a row were all accepted");
    assert_eq!(refusal.code(), tonic::Code::ResourceExhausted, "{refusal}");
    assert!(refusal.message().contains("heartbeats"), "{refusal}");
    // The session is still open: once the bucket refills, a heartbeat passes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    dispatcher.heartbeat(beat(session_id)).await.unwrap();
}

/// A node's assignment set larger than the 4 MiB a gRPC client decodes by default (one task
/// using twelve secrets of 400 KiB) reaches it whole, in parts that each decode.
#[tokio::test]
async fn an_assignment_set_over_4_mib_reaches_the_worker_whole_in_parts() {
    use shoal_proto::api::{AssignmentsMessage, CreateSecretRequest, SecretReference, SecretSpec};

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let (role, membership, mut dispatcher) =
        one_manager_swarm(&swarm_dir, Duration::from_secs(1)).await;
    let control = role.control();
    let mut references = vec![];
    for index in 0..12u8 {
        let name = format!("big-{index}");
        let secret = control
            .create_secret(Request::new(CreateSecretRequest {
                spec: Some(SecretSpec {
                    annotations: Some(shoal_proto::api::Annotations {
                        name: name.clone(),
                        ..Default::default()
                    }),
                    data: vec![b'a' + index; 400 * 1024],
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .secret
            .unwrap();
        references.push(SecretReference {
            secret_id: secret.id,
            secret_name: name,
            ..Default::default()
        });
    }
    let mut spec = service_spec("many-secrets", 1);
    if let Some(task_spec::Runtime::Container(container)) =
        spec.task.as_mut().and_then(|task| task.runtime.as_mut())
    {
        container.secrets = references;
    }
    control
        .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
        .await
        .unwrap();

    let mut session = dispatcher
        .session(SessionRequest {
            node_id: membership.node_id.clone(),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    let session_id = session.message().await.unwrap().unwrap().session_id;
    let heartbeats = keep_heartbeating(&dispatcher, session_id.clone());
    let mut stream = dispatcher
        .assignments(AssignmentsRequest { session_id })
        .await
        .unwrap()
        .into_inner();
    let mut parts_of_the_set = 0;
    let set = tokio::time::timeout(Duration::from_secs(30), async {
        let mut whole = AssignmentsMessage::default();
        loop {
            let part = stream
                .message()
                .await
                .expect("a part of the assignment set could not be received")
                .expect("the assignment stream ended");
            if part.part == 0 {
                whole = AssignmentsMessage::default();
                parts_of_the_set = 0;
            }
            parts_of_the_set += 1;
            whole.tasks.extend(part.tasks);
            whole.secrets.extend(part.secrets);
            whole.configs.extend(part.configs);
            if !part.more && !whole.tasks.is_empty() {
                return whole;
            }
        }
    })
    .await
    .expect("no assignment set with the task came");
    assert_eq!(set.tasks.len(), 1);
    assert_eq!(set.secrets.len(), 12);
    let bytes: usize = set
        .secrets
        .iter()
        .map(|secret| secret.spec.as_ref().unwrap().data.len())
        .sum();
    assert_eq!(bytes, 12 * 400 * 1024);
    assert!(parts_of_the_set > 1, "{parts_of_the_set} parts");
    heartbeats.abort();
    role.shutdown().await;
}

/// Every task and service in `store`, as its member has applied them.
fn tasks_and_services(
    store: &raft_store::Store,
) -> (Vec<shoal_proto::api::Task>, Vec<shoal_proto::api::Service>) {
    store
        .local_view(|view| {
            Ok::<_, manager::ManagerError>((
                manager::objects::decode_all(view.list(shoal_proto::api::Task::KIND))?,
                manager::objects::decode_all(view.list(shoal_proto::api::Service::KIND))?,
            ))
        })
        .unwrap()
}

/// Polls `store` until service `name` has a VIP and `replicas` tasks with an address each;
/// returns the VIP and the tasks' addresses.
async fn wait_for_addresses(
    store: &raft_store::Store,
    name: &str,
    replicas: usize,
) -> (String, Vec<String>) {
    poll_until(
        &format!("service {name}'s VIP and task addresses"),
        Duration::from_secs(20),
        || {
            let (tasks, services) = tasks_and_services(store);
            let found = services
                .iter()
                .find(|service| service.unique_name() == name)
                .and_then(|service| {
                    let vip = service.endpoint.as_ref()?.virtual_ips.first()?.addr.clone();
                    let addresses: Vec<String> = tasks
                        .iter()
                        .filter(|task| task.service_id == service.id)
                        .filter_map(|task| task.networks.first()?.addresses.first().cloned())
                        .collect();
                    (addresses.len() == replicas).then_some((vip, addresses))
                });
            async move { found }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_network_get_fresh_addresses_and_keep_them_unique_across_a_failover() {
    use shoal_proto::api::{
        GetClusterRequest, Network, NetworkAttachmentConfig, NetworkSpec, Task,
    };

    let roots = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let swarm_dir = SwarmDir::new(roots[0].path());
    let first = ManagerRole::init(&swarm_dir, on_loopback("manager-a"), Default::default())
        .await
        .unwrap();
    let (membership, _) = swarm_dir.load().unwrap().unwrap();
    let a_addr = membership.advertise_addr.clone();
    let tokens = first
        .control()
        .get_cluster(Request::new(GetClusterRequest {}))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap()
        .root_ca
        .unwrap()
        .join_tokens
        .unwrap();
    let (second, _, _) =
        join_as_manager(roots[1].path(), &a_addr, &tokens.manager, "manager-b").await;
    let (third, _, _) =
        join_as_manager(roots[2].path(), &a_addr, &tokens.manager, "manager-c").await;

    // The network as `network create` stores it: a spec, nothing allocated.
    let network = Network {
        id: "appnetid".into(),
        spec: Some(NetworkSpec {
            annotations: Some(shoal_proto::api::Annotations {
                name: "appnet".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    first
        .store()
        .write(Transaction::new(vec![manager::objects::create(&network)]))
        .await
        .unwrap();
    let on_network = |name: &str| {
        let mut spec = service_spec(name, 3);
        spec.task.as_mut().unwrap().networks = vec![NetworkAttachmentConfig {
            target: network.id.clone(),
            ..Default::default()
        }];
        spec
    };
    // Two services created at once: their allocations can't take the same address.
    let control = first.control();
    let (web, db) = tokio::join!(
        create_service(&control, on_network("web")),
        create_service(&control, on_network("db"))
    );
    web.unwrap();
    db.unwrap();
    let (web_vip, web_addresses) = wait_for_addresses(first.store(), "web", 3).await;
    let (db_vip, db_addresses) = wait_for_addresses(first.store(), "db", 3).await;
    let allocated: Network = first
        .store()
        .local_view(|view| {
            view.get(Network::KIND, &network.id)
                .map(manager::objects::decode::<Network>)
                .transpose()
        })
        .unwrap()
        .unwrap();
    // The first /24 of the default pool is the ingress network's, which `swarm init` made.
    let config = &allocated.ipam.as_ref().unwrap().configs[0];
    assert_eq!(
        (config.subnet.as_str(), config.gateway.as_str()),
        ("10.0.1.0/24", "10.0.1.1")
    );
    assert!(
        [&web_vip, &db_vip].contains(&&"10.0.1.2/24".to_owned()),
        "{web_vip} {db_vip}"
    );
    // Nothing is scheduled without its addresses: every task got past NEW with them (and no
    // further: no worker runs a session here).
    let (tasks, _) = tasks_and_services(first.store());
    assert!(tasks.iter().all(|task: &Task| {
        task.status.as_ref().unwrap().state() == TaskState::Pending && !task.networks.is_empty()
    }));

    // The leader stops; a new one allocates for a new service from what Raft holds.
    first.shutdown().await;
    let new_leader = poll_until("a new leader", Duration::from_secs(20), || {
        let leader = [&second, &third]
            .into_iter()
            .find(|role| role.store().status().is_leader)
            .map(|role| role.control());
        async move { leader }
    })
    .await;
    create_service(&new_leader, on_network("api"))
        .await
        .unwrap();
    let survivor = if second.store().status().is_leader {
        &second
    } else {
        &third
    };
    let (api_vip, api_addresses) = wait_for_addresses(survivor.store(), "api", 3).await;

    let mut every_address: Vec<String> = [web_vip, db_vip, api_vip]
        .into_iter()
        .chain(web_addresses)
        .chain(db_addresses)
        .chain(api_addresses)
        .collect();
    every_address.sort();
    let count = every_address.len();
    every_address.dedup();
    assert_eq!(
        every_address.len(),
        count,
        "an address given twice: {every_address:?}"
    );
    assert!(
        every_address
            .iter()
            .all(|address| address.starts_with("10.0.1.") && address != "10.0.1.1/24"),
        "{every_address:?}"
    );

    second.shutdown().await;
    third.shutdown().await;
}

/// The network keys a session message carries for `subsystem`, oldest first.
fn session_keys(
    message: &shoal_proto::api::SessionMessage,
    subsystem: &str,
) -> Vec<shoal_proto::api::EncryptionKey> {
    let mut keys: Vec<_> = message
        .network_keys
        .iter()
        .filter(|key| key.subsystem == subsystem)
        .cloned()
        .collect();
    keys.sort_by_key(|key| key.lamport_time);
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sessions_get_the_network_keys_and_each_rotation_but_clients_never_do() {
    use shoal_proto::api::encryption_key::Algorithm;
    use shoal_proto::api::{SessionMessage, Timestamp};
    use spec::network::{KEY_SUBSYSTEM_GOSSIP, KEY_SUBSYSTEM_IPSEC};

    let data_root = tempfile::tempdir().unwrap();
    let swarm_dir = SwarmDir::new(data_root.path());
    let role = ManagerRole::init(&swarm_dir, on_loopback("manager-host"), Default::default())
        .await
        .unwrap();
    let (membership, _) = swarm_dir.load().unwrap().unwrap();
    let control = role.control();
    let (cluster, _) = cluster_and_version(&control).await;
    let tokens = cluster.root_ca.clone().unwrap().join_tokens.unwrap();

    // A worker joins and opens its session as its agent would.
    let grant = manager::join::join(
        &membership.advertise_addr,
        &tokens.worker,
        "worker-host",
        "",
    )
    .await
    .unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", membership.advertise_addr))
        .unwrap()
        .tls_config(grant.identity.client_config())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut session = DispatcherClient::new(channel)
        .session(SessionRequest {
            node_id: grant.node_id.clone(),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = session.message().await.unwrap().unwrap();

    // Its first message holds three keys per subsystem, made at init: AES-256-GCM, 32 bytes
    // each, all different.
    for subsystem in [KEY_SUBSYSTEM_GOSSIP, KEY_SUBSYSTEM_IPSEC] {
        let keys = session_keys(&first, subsystem);
        assert_eq!(keys.len(), 3, "{subsystem}");
        for key in &keys {
            assert_eq!(key.algorithm(), Algorithm::Aes256Gcm);
            assert_eq!(key.key.len(), 32);
        }
    }
    let mut secrets: Vec<&[u8]> = first.network_keys.iter().map(|key| &key.key[..]).collect();
    secrets.sort();
    secrets.dedup();
    assert_eq!(secrets.len(), 6);

    // The cluster object holds them; GetCluster shows neither them nor where they went.
    let stored = role
        .store()
        .local_view(manager::objects::cluster_of)
        .unwrap()
        .unwrap();
    assert_eq!(stored.network_bootstrap_keys, first.network_keys);
    let (shown, _) = cluster_and_version(&control).await;
    assert!(shown.network_bootstrap_keys.is_empty());

    // The last rotation is made to lie more than an interval back, as if the leader's clock had
    // run on for 12 hours: the leader rotates once, and the open session gets the new rings.
    let interval = spec::defaults::NETWORK_KEY_ROTATION_INTERVAL;
    let backdated = std::time::SystemTime::now() - interval - Duration::from_secs(60);
    poll_until(
        "the backdated rotation time written",
        Duration::from_secs(30),
        || {
            let store = role.store().clone();
            async move {
                let mut cluster = store.local_view(manager::objects::cluster_of).ok()??;
                cluster.network_keys_rotated_at = Some(Timestamp::from(backdated));
                store
                    .write(Transaction::new(vec![manager::objects::update(&cluster)]))
                    .await
                    .ok()
                    .map(drop)
            }
        },
    )
    .await;
    let rotated: SessionMessage = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let next = session.message().await.unwrap().unwrap();
            if next.network_keys != first.network_keys {
                return next;
            }
        }
    })
    .await
    .expect("a session message with the rotated keys");
    for subsystem in [KEY_SUBSYSTEM_GOSSIP, KEY_SUBSYSTEM_IPSEC] {
        let before = session_keys(&first, subsystem);
        let after = session_keys(&rotated, subsystem);
        // The oldest key went, the two newest stayed, and a new primary came after them.
        assert_eq!(after.len(), 3, "{subsystem}");
        assert_eq!(after[..2], before[1..], "{subsystem}");
        assert!(after[2].lamport_time > before[2].lamport_time);
        assert!(!before.iter().any(|key| key.key == after[2].key));
    }
    let stored = role
        .store()
        .local_view(manager::objects::cluster_of)
        .unwrap()
        .unwrap();
    assert_eq!(stored.network_bootstrap_keys, rotated.network_keys);
    let rotated_at =
        std::time::SystemTime::try_from(stored.network_keys_rotated_at.unwrap()).unwrap();
    assert!(rotated_at > backdated + interval);

    // Still nothing for clients, from GetCluster or from an update's answer.
    let (shown, version) = cluster_and_version(&control).await;
    assert!(shown.network_bootstrap_keys.is_empty());
    let updated = control
        .update_cluster(Request::new(shoal_proto::api::UpdateClusterRequest {
            version,
            spec: shown.spec.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert!(updated.network_bootstrap_keys.is_empty());
    role.shutdown().await;
}

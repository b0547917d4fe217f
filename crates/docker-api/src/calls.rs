//! One handler per route: read the call's parameters, make the control API calls the shoal CLI
//! makes, and shape the answer as Docker does. Decisions (shapes, filters, versions) live in the
//! pure modules; this is the glue.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use shoal_proto::api;
use shoal_proto::engine as pb;

use crate::error::{ApiError, Reply};
use crate::filters::Filters;
use crate::route::Route;
use crate::server::{Backend, Body, Call, full, json, no_content};
use crate::{select, shape, system};

type Answer = Result<Response<Body>, ApiError>;

fn ok(value: &Value) -> Answer {
    Ok(json(StatusCode::OK, value))
}

/// Answers `route`.
pub(crate) async fn call(mut backend: Backend, route: Route, call: Call) -> Answer {
    let c = &mut backend;
    match route {
        Route::Ping => ping(c).await,
        Route::Version => ok(&system::version_json(
            &system::HostFacts::read(&c.data_root).kernel_version,
        )),
        Route::Info => info(c).await,
        Route::SwarmInspect => swarm_inspect(c).await,
        Route::SwarmInit => swarm_init(c, &call).await,
        Route::SwarmJoin => swarm_join(c, &call).await,
        Route::SwarmLeave => {
            let force = call.flag("force");
            c.swarm.leave(api::LeaveRequest { force }).await.answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::SwarmUpdate => swarm_update(c, &call).await,
        Route::SwarmUnlockKey => {
            let key = c
                .control
                .get_unlock_key(api::GetUnlockKeyRequest {})
                .await
                .answer()?;
            ok(&json!({ "UnlockKey": key.unlock_key }))
        }
        Route::SwarmUnlock => {
            let body = call.json()?;
            let unlock_key = system::string_field(&body, "UnlockKey")?;
            c.swarm
                .unlock(api::UnlockRequest { unlock_key })
                .await
                .answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::NodeList => node_list(c, &call).await,
        Route::NodeInspect(node) => {
            let node = get_node(c, &node).await?;
            ok(&shape::node::node_inspect_json(&node))
        }
        Route::NodeUpdate(node) => node_update(c, &call, node).await,
        Route::NodeDelete(node) => {
            let force = call.flag("force");
            c.control
                .remove_node(api::RemoveNodeRequest { node, force })
                .await
                .answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::ServiceList => service_list(c, &call).await,
        Route::ServiceCreate => service_create(c, &call).await,
        Route::ServiceInspect(service) => {
            let mut service = get_service(c, &service).await?;
            if call.flag("insertDefaults")
                && let Some(spec) = service.spec.as_mut()
            {
                spec::defaults::insert_service_defaults(spec);
            }
            ok(&shape::service::service_inspect_json(&service))
        }
        Route::ServiceUpdate(service) => service_update(c, &call, service).await,
        Route::ServiceDelete(service) => {
            c.control
                .remove_service(api::RemoveServiceRequest { service })
                .await
                .answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::ServiceLogs(reference) => logs(c, &call, vec![reference], Vec::new()).await,
        Route::TaskLogs(reference) => logs(c, &call, Vec::new(), vec![reference]).await,
        Route::TaskList => task_list(c, &call).await,
        Route::TaskInspect(task) => {
            let task = c
                .control
                .get_task(api::GetTaskRequest { task })
                .await
                .answer()?
                .task
                .unwrap_or_default();
            ok(&shape::task::task_json(&task))
        }
        Route::SecretList => {
            let filters = Filters::parse(call.param("filters"), select::PAYLOAD_FILTERS)?;
            let secrets = c
                .control
                .list_secrets(api::ListSecretsRequest {})
                .await
                .answer()?
                .secrets;
            let listed: Vec<Value> = secrets
                .iter()
                .filter(|s| {
                    select::payload_passes(
                        &filters,
                        &s.id,
                        s.spec.as_ref().and_then(|s| s.annotations.as_ref()),
                    )
                })
                .map(shape::payload::secret_json)
                .collect();
            ok(&Value::Array(listed))
        }
        Route::SecretCreate => {
            let spec = shape::payload::secret_spec_from_json(&call.json()?).map_err(shape_error)?;
            let secret = c
                .control
                .create_secret(api::CreateSecretRequest { spec: Some(spec) })
                .await
                .answer()?
                .secret
                .unwrap_or_default();
            Ok(json(StatusCode::CREATED, &json!({ "ID": secret.id })))
        }
        Route::SecretInspect(secret) => {
            let secret = c
                .control
                .get_secret(api::GetSecretRequest { secret })
                .await
                .answer()?
                .secret
                .unwrap_or_default();
            ok(&shape::payload::secret_json(&secret))
        }
        Route::SecretDelete(secret) => {
            c.control
                .remove_secret(api::RemoveSecretRequest { secret })
                .await
                .answer()?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        Route::SecretUpdate(secret) => {
            let version = version_param(&call)?;
            let spec = shape::payload::secret_spec_from_json(&call.json()?).map_err(shape_error)?;
            c.control
                .update_secret(api::UpdateSecretRequest {
                    secret,
                    version,
                    spec: Some(spec),
                })
                .await
                .answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::ConfigUpdate(config) => {
            let version = version_param(&call)?;
            let spec = shape::payload::config_spec_from_json(&call.json()?).map_err(shape_error)?;
            c.control
                .update_config(api::UpdateConfigRequest {
                    config,
                    version,
                    spec: Some(spec),
                })
                .await
                .answer()?;
            Ok(no_content(StatusCode::OK))
        }
        Route::ConfigList => {
            let filters = Filters::parse(call.param("filters"), select::PAYLOAD_FILTERS)?;
            let configs = c
                .control
                .list_configs(api::ListConfigsRequest {})
                .await
                .answer()?
                .configs;
            let listed: Vec<Value> = configs
                .iter()
                .filter(|s| {
                    select::payload_passes(
                        &filters,
                        &s.id,
                        s.spec.as_ref().and_then(|s| s.annotations.as_ref()),
                    )
                })
                .map(shape::payload::config_json)
                .collect();
            ok(&Value::Array(listed))
        }
        Route::ConfigCreate => {
            let spec = shape::payload::config_spec_from_json(&call.json()?).map_err(shape_error)?;
            let config = c
                .control
                .create_config(api::CreateConfigRequest { spec: Some(spec) })
                .await
                .answer()?
                .config
                .unwrap_or_default();
            Ok(json(StatusCode::CREATED, &json!({ "ID": config.id })))
        }
        Route::ConfigInspect(config) => {
            let config = c
                .control
                .get_config(api::GetConfigRequest { config })
                .await
                .answer()?
                .config
                .unwrap_or_default();
            ok(&shape::payload::config_json(&config))
        }
        Route::ConfigDelete(config) => {
            c.control
                .remove_config(api::RemoveConfigRequest { config })
                .await
                .answer()?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        Route::NetworkList => {
            let filters = Filters::parse(
                call.param("filters"),
                &["name", "id", "label", "driver", "scope", "type", "dangling"],
            )?;
            let networks = c
                .control
                .list_networks(api::ListNetworksRequest {
                    filters: filters.as_key_values(),
                })
                .await
                .answer()?
                .networks;
            ok(&Value::Array(
                networks
                    .iter()
                    .map(|n| shape::network::network_json(n, None))
                    .collect(),
            ))
        }
        Route::NetworkInspect(network) => {
            let network = c
                .control
                .get_network(api::GetNetworkRequest { network })
                .await
                .answer()?
                .network
                .unwrap_or_default();
            let attachments = c
                .swarm
                .network_attachments(api::NetworkAttachmentsRequest {
                    network_id: network.id.clone(),
                })
                .await
                .ok()
                .map(tonic::Response::into_inner);
            ok(&shape::network::network_json(
                &network,
                attachments.as_ref(),
            ))
        }
        Route::NetworkCreate => {
            let spec =
                shape::network::network_spec_from_json(&call.json()?).map_err(shape_error)?;
            let network = c
                .control
                .create_network(api::CreateNetworkRequest { spec: Some(spec) })
                .await
                .answer()?
                .network
                .unwrap_or_default();
            Ok(json(
                StatusCode::CREATED,
                &json!({ "Id": network.id, "Warning": "" }),
            ))
        }
        Route::NetworkDelete(network) => {
            c.control
                .remove_network(api::RemoveNetworkRequest { network })
                .await
                .answer()?;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        Route::NetworkPrune => {
            let filters = Filters::parse(call.param("filters"), &["label", "label!", "until"])?;
            let pruned = c
                .control
                .prune_networks(api::PruneNetworksRequest {
                    filters: filters.as_key_values(),
                })
                .await
                .answer()?;
            ok(&json!({ "NetworksDeleted": pruned.networks_deleted }))
        }
        Route::ContainerList => {
            let all = call.flag("all");
            let containers = c
                .engine
                .list_containers(pb::ListContainersRequest { all })
                .await
                .answer()?
                .containers;
            let now = std::time::SystemTime::now();
            ok(&Value::Array(
                containers
                    .iter()
                    .map(|container| shape::engine::container_summary_json(container, now))
                    .collect(),
            ))
        }
        Route::ContainerInspect(id) => {
            let container = c
                .engine
                .inspect_container(pb::ContainerRef { id })
                .await
                .answer()?;
            ok(&shape::engine::container_inspect_json(&container))
        }
        Route::ContainerLogs(id) => crate::logs::container(c, &call, id).await,
        Route::ImageList => {
            let images = c
                .engine
                .list_images(pb::ListImagesRequest {})
                .await
                .answer()?
                .images;
            ok(&Value::Array(
                images
                    .iter()
                    .map(shape::engine::image_summary_json)
                    .collect(),
            ))
        }
        Route::ImageInspect(name) => {
            let document = c
                .engine
                .inspect_image(pb::InspectImageRequest { name })
                .await
                .answer()?;
            let value: Value = serde_json::from_str(&document.json).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the engine's image document did not read: {e}"),
                )
            })?;
            ok(&value)
        }
        Route::ExecCreate(container) => crate::exec::create(c, &call, container).await,
        Route::ExecInspect(id) => crate::exec::inspect(c, &id),
        Route::ExecResize(id) => crate::exec::resize(c, &call, &id).await,
        Route::ImageLoad | Route::ExecStart(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "image load and exec start take their connection; the server answers them itself",
        )),
        Route::DistributionInspect(image) => {
            let resolved = c
                .engine
                .resolve_image(pb::ResolveImageRequest { reference: image })
                .await
                .answer()?;
            ok(&shape::engine::distribution_json(&resolved))
        }
    }
}

fn shape_error(error: shape::ShapeError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

async fn ping(c: &mut Backend) -> Answer {
    let info = c.swarm.info(api::InfoRequest {}).await.answer()?;
    let mut response = Response::new(full("OK"));
    let headers = response.headers_mut();
    headers.insert(
        "Swarm",
        hyper::header::HeaderValue::from_static(system::swarm_header(&info)),
    );
    for (name, value) in [
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
        ("Builder-Version", "1"),
    ] {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    }
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// The cluster, when this node is a manager that can read it.
async fn cluster(c: &mut Backend) -> Option<api::Cluster> {
    c.control
        .get_cluster(api::GetClusterRequest {})
        .await
        .ok()
        .and_then(|r| r.into_inner().cluster)
}

async fn info(c: &mut Backend) -> Answer {
    let info = c.swarm.info(api::InfoRequest {}).await.answer()?;
    let cluster = if info.control_available {
        cluster(c).await
    } else {
        None
    };
    // Containers and images on this node, from the same engine API the shoal CLI lists.
    let containers = c
        .engine
        .list_containers(pb::ListContainersRequest { all: true })
        .await
        .map(|r| r.into_inner().containers)
        .unwrap_or_default();
    let images = c
        .engine
        .list_images(pb::ListImagesRequest {})
        .await
        .map(|r| r.into_inner().images.len())
        .unwrap_or(0);
    let facts = system::HostFacts::read(&c.data_root);
    ok(&system::info_json(
        &info,
        cluster.as_ref(),
        system::ContainerCounts::of(&containers),
        images,
        &facts,
        std::time::SystemTime::now(),
    ))
}

async fn swarm_inspect(c: &mut Backend) -> Answer {
    let cluster = c
        .control
        .get_cluster(api::GetClusterRequest {})
        .await
        .answer()?
        .cluster
        .unwrap_or_default();
    ok(&shape::swarm::swarm_inspect_json(&cluster))
}

async fn swarm_init(c: &mut Backend, call: &Call) -> Answer {
    let request = system::init_request(&call.json()?)?;
    let node_id = c.swarm.init(request).await.answer()?.node_id;
    ok(&Value::String(node_id))
}

async fn swarm_join(c: &mut Backend, call: &Call) -> Answer {
    let request = system::join_request(&call.json()?)?;
    c.swarm.join(request).await.answer()?;
    Ok(no_content(StatusCode::OK))
}

/// `?version=N`, which every update carries: the version the client read.
fn version_param(call: &Call) -> Result<u64, ApiError> {
    let text = call.param("version").unwrap_or_default();
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid version {text:?}: pass the object's Version.Index as read"
        ))
    })
}

async fn swarm_update(c: &mut Backend, call: &Call) -> Answer {
    let version = version_param(call)?;
    let current = c
        .control
        .get_cluster(api::GetClusterRequest {})
        .await
        .answer()?
        .cluster
        .unwrap_or_default();
    let spec = shape::swarm::cluster_spec_from_json(&call.json()?, current.spec.as_ref())
        .map_err(shape_error)?;
    c.control
        .update_cluster(api::UpdateClusterRequest {
            version,
            spec: Some(spec),
            rotate_worker_token: call.flag("rotateWorkerToken"),
            rotate_manager_token: call.flag("rotateManagerToken"),
            rotate_root_ca: false,
            rotate_manager_unlock_key: call.flag("rotateManagerUnlockKey"),
        })
        .await
        .answer()?;
    Ok(no_content(StatusCode::OK))
}

async fn get_node(c: &mut Backend, node: &str) -> Result<api::Node, ApiError> {
    Ok(c.control
        .get_node(api::GetNodeRequest {
            node: node.to_owned(),
        })
        .await
        .answer()?
        .node
        .unwrap_or_default())
}

async fn node_list(c: &mut Backend, call: &Call) -> Answer {
    let filters = Filters::parse(call.param("filters"), select::NODE_FILTERS)?;
    let nodes = c
        .control
        .list_nodes(api::ListNodesRequest {})
        .await
        .answer()?
        .nodes;
    ok(&Value::Array(
        nodes
            .iter()
            .filter(|node| select::node_passes(&filters, node))
            .map(shape::node::node_inspect_json)
            .collect(),
    ))
}

async fn node_update(c: &mut Backend, call: &Call, node: String) -> Answer {
    let version = version_param(call)?;
    let current = get_node(c, &node).await?;
    let spec = shape::node::node_spec_from_json(&call.json()?, current.spec.as_ref())
        .map_err(shape_error)?;
    c.control
        .update_node(api::UpdateNodeRequest {
            node,
            version,
            spec: Some(spec),
        })
        .await
        .answer()?;
    Ok(no_content(StatusCode::OK))
}

async fn get_service(c: &mut Backend, service: &str) -> Result<api::Service, ApiError> {
    Ok(c.control
        .get_service(api::GetServiceRequest {
            service: service.to_owned(),
        })
        .await
        .answer()?
        .service
        .unwrap_or_default())
}

async fn service_list(c: &mut Backend, call: &Call) -> Answer {
    let filters = Filters::parse(call.param("filters"), select::SERVICE_FILTERS)?;
    let listed = c
        .control
        .list_services(api::ListServicesRequest {})
        .await
        .answer()?;
    let with_status = call.flag("status");
    let services: Vec<Value> = listed
        .services
        .iter()
        .zip(
            listed
                .statuses
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .filter(|(service, _)| select::service_passes(&filters, service))
        .map(|(service, status)| {
            let mut value = shape::service::service_inspect_json(service);
            if with_status && let Some(status) = status {
                value["ServiceStatus"] = shape::service::service_status_json(status);
            }
            value
        })
        .collect();
    ok(&Value::Array(services))
}

async fn service_create(c: &mut Backend, call: &Call) -> Answer {
    let spec = shape::service::service_spec_from_json(&call.json()?, None).map_err(shape_error)?;
    let service = c
        .control
        .create_service(api::CreateServiceRequest { spec: Some(spec) })
        .await
        .answer()?
        .service
        .unwrap_or_default();
    Ok(json(StatusCode::CREATED, &json!({ "ID": service.id })))
}

async fn service_update(c: &mut Backend, call: &Call, service: String) -> Answer {
    let version = version_param(call)?;
    let rollback = match call.param("rollback").unwrap_or_default() {
        "" => api::update_service_request::Rollback::None,
        "previous" => api::update_service_request::Rollback::Previous,
        other => {
            return Err(ApiError::bad_request(format!(
                "unrecognized rollback option {other}: only \"previous\" is accepted"
            )));
        }
    };
    let current = get_service(c, &service).await?;
    let spec = shape::service::service_spec_from_json(&call.json()?, current.spec.as_ref())
        .map_err(shape_error)?;
    c.control
        .update_service(api::UpdateServiceRequest {
            service,
            version,
            spec: Some(spec),
            rollback: rollback as i32,
        })
        .await
        .answer()?;
    ok(&json!({ "Warnings": null }))
}

async fn task_list(c: &mut Backend, call: &Call) -> Answer {
    let filters = Filters::parse(call.param("filters"), select::TASK_FILTERS)?;
    let tasks = c
        .control
        .list_tasks(api::ListTasksRequest {
            services: filters.values("service").to_vec(),
            nodes: filters.values("node").to_vec(),
        })
        .await
        .answer()?
        .tasks;
    // Names and `_up-to-date` need the services the tasks belong to.
    let services = if filters.has("name") || filters.has("_up-to-date") {
        c.control
            .list_services(api::ListServicesRequest {})
            .await
            .answer()?
            .services
    } else {
        Vec::new()
    };
    ok(&Value::Array(
        tasks
            .iter()
            .filter(|task| select::task_passes(&filters, task, &services))
            .map(shape::task::task_json)
            .collect(),
    ))
}

async fn logs(c: &mut Backend, call: &Call, services: Vec<String>, tasks: Vec<String>) -> Answer {
    crate::logs::answer(c, call, services, tasks).await
}

/// `POST /images/load` (`docker load`): the archive streams to the engine as it arrives, and
/// the answer names what was loaded, one JSON message per image as Docker's does.
pub(crate) async fn image_load(mut backend: Backend, body: hyper::body::Incoming) -> Answer {
    use http_body_util::BodyExt;
    let (sender, receiver) = tokio::sync::mpsc::channel::<pb::Upload>(4);
    let forward = tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Ok(data) = frame.into_data()
                && sender
                    .send(pb::Upload {
                        reference: String::new(),
                        data: data.to_vec(),
                    })
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    let loaded = backend
        .engine
        .load_image(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await;
    forward.abort();
    let images = loaded.answer()?.images;
    let mut text = String::new();
    for image in &images {
        let lines: Vec<String> = if image.repo_tags.is_empty() {
            vec![format!("Loaded image ID: {}\n", image.id)]
        } else {
            image
                .repo_tags
                .iter()
                .map(|tag| format!("Loaded image: {tag}\n"))
                .collect()
        };
        for line in lines {
            text.push_str(&json!({ "stream": line }).to_string());
            text.push('\n');
        }
    }
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

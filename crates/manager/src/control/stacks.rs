//! Stacks: what `stack deploy`, `stack rm` and `stack rollback` change, planned as one store
//! transaction over one read of the store. Pure: the caller reads, plans, writes.
//!
//! A deploy creates the revision's networks, secrets and configs that do not exist yet, creates
//! or updates its services (an unchanged service is left alone, so an unchanged file changes
//! nothing, and a changed one rolls with its own update settings; the published ports of those
//! it writes are given as `service create` gives them, and may move between the stack's services
//! in one deploy), removes with `prune` the
//! stack's services the revision no longer has, and records the revision in the stack object,
//! whose earlier revisions `stack rollback` returns to. Everything a stack makes carries Docker's
//! `com.docker.stack.namespace` label, which `stack rm` removes by.

use raft_store::Change;
use shoal_proto::api::{
    Config, ConfigSpec, Network, Secret, SecretSpec, Service, ServiceSpec, Stack, StackChange,
    StackSpec, stack_change::Action, task_spec,
};

use super::payloads::{self, Payload, PayloadKind};
use super::service_spec;
use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};

/// The label Docker puts on everything a stack owns.
pub(crate) const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// Earlier revisions a stack keeps for `stack rollback`.
const KEPT_REVISIONS: usize = 5;

/// The objects a stack command reads, from one read of the store.
#[derive(Debug, Default)]
pub(crate) struct StackObjects {
    pub(crate) services: Vec<Service>,
    pub(crate) networks: Vec<Network>,
    pub(crate) secrets: Vec<Secret>,
    pub(crate) configs: Vec<Config>,
    pub(crate) stacks: Vec<Stack>,
}

/// What a stack command writes, and what it reports doing.
#[derive(Debug, Default)]
pub(crate) struct StackPlan {
    pub(crate) changes: Vec<Change>,
    pub(crate) report: Vec<StackChange>,
}

impl StackPlan {
    fn note(&mut self, kind: &str, name: &str, id: &str, action: Action) {
        self.report.push(StackChange {
            kind: kind.to_owned(),
            name: name.to_owned(),
            id: id.to_owned(),
            action: action as i32,
        });
    }
}

/// How a deploy changes the stack's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum History {
    /// A new revision: the current one becomes the newest earlier revision.
    Push,
    /// A rollback to the newest earlier revision, which the current one replaces.
    Swap,
}

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

fn spec_name(annotations: Option<&shoal_proto::api::Annotations>) -> &str {
    annotations.map_or("", |annotations| annotations.name.as_str())
}

fn belongs_to(labels: Option<&std::collections::HashMap<String, String>>, stack: &str) -> bool {
    labels
        .and_then(|labels| labels.get(NAMESPACE_LABEL))
        .is_some_and(|namespace| namespace == stack)
}

fn service_labels(service: &Service) -> Option<&std::collections::HashMap<String, String>> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map(|annotations| &annotations.labels)
}

fn service_of<'a>(services: &'a [Service], name: &str) -> Option<&'a Service> {
    services
        .iter()
        .find(|service| service.unique_name() == name)
}

fn stack_of<'a>(stacks: &'a [Stack], name: &str) -> Option<&'a Stack> {
    stacks.iter().find(|stack| stack.unique_name() == name)
}

/// Checks a stack name as Docker does: it prefixes service names, so letters, digits, '-' and
/// '_', starting with a letter or digit.
pub(crate) fn check_stack_name(name: &str) -> Result<(), ManagerError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid stack name {name:?}: use letters, digits, '-' and '_', starting with a letter or digit"
        )))
    }
}

/// Plans a deploy of `revision` (with the data of the secrets and configs it creates).
pub(crate) fn plan_deploy(
    objects: &StackObjects,
    revision: StackSpec,
    secrets: Vec<SecretSpec>,
    configs: Vec<ConfigSpec>,
    prune: bool,
    history: History,
    new_id: &mut dyn FnMut() -> String,
) -> Result<StackPlan, ManagerError> {
    let stack = spec_name(revision.annotations.as_ref()).to_owned();
    check_stack_name(&stack)?;
    let mut plan = StackPlan::default();

    let mut networks = objects.networks.clone();
    for spec in &revision.networks {
        spec::validate::network_spec(spec)?;
        let name = spec_name(spec.annotations.as_ref());
        if let Some(existing) = networks.iter().find(|network| {
            spec_name(network.spec.as_ref().and_then(|s| s.annotations.as_ref())) == name
        }) {
            plan.note("network", name, &existing.id, Action::Unchanged);
            continue;
        }
        let mut spec = spec.clone();
        label(&mut spec.annotations, &stack);
        spec::defaults::apply_network_defaults(&mut spec);
        // The same checks as `network create`: a subnet another network has is refused.
        super::networks::check_create(&spec, &networks)?;
        let network = Network {
            id: new_id(),
            spec: Some(spec),
            ..Default::default()
        };
        plan.changes.push(objects::create(&network));
        plan.note("network", name, &network.id, Action::Create);
        networks.push(network);
    }

    let secrets = add_payloads(
        &mut plan,
        &objects.secrets,
        secrets.into_iter().map(|spec| Secret {
            spec: Some(spec),
            ..Default::default()
        }),
        &stack,
        new_id,
    )?;
    let configs = add_payloads(
        &mut plan,
        &objects.configs,
        configs.into_iter().map(|spec| Config {
            spec: Some(spec),
            ..Default::default()
        }),
        &stack,
        new_id,
    )?;

    let prefix = format!("{stack}_");
    let mut deployed_names = Vec::new();
    // Services created or re-specified, written once their published ports are given.
    let mut written: Vec<Service> = Vec::new();
    let mut created: Vec<bool> = Vec::new();
    for spec in &revision.services {
        let name = spec_name(spec.annotations.as_ref()).to_owned();
        if !name.starts_with(&prefix) {
            return Err(invalid(format!(
                "service {name} is not named after stack {stack}: stack services are named {prefix}SERVICE"
            )));
        }
        let mut bound = spec.clone();
        label(&mut bound.annotations, &stack);
        bind(&mut bound, &networks, &secrets, &configs)?;
        // Swarm's defaults filled in as `service create` gets them, before the spec is compared
        // with the stored one, so a redeploy of the same file changes nothing.
        spec::defaults::apply_service_defaults(&mut bound);
        service_spec::check_service_spec(&bound)?;
        match service_of(&objects.services, &name) {
            Some(existing) if existing.pending_delete => {
                return Err(ManagerError::FailedPrecondition(format!(
                    "service {name} is still being removed: deploy again once 'shoal service ls' no longer lists it"
                )));
            }
            Some(existing) => {
                service_spec::check_service_update(
                    &existing.spec.clone().unwrap_or_default(),
                    &bound,
                )?;
                match service_spec::respec(existing, bound) {
                    Some(updated) => {
                        written.push(updated);
                        created.push(false);
                        plan.note("service", &name, &existing.id, Action::Update);
                    }
                    None => plan.note("service", &name, &existing.id, Action::Unchanged),
                }
            }
            None => {
                let service = service_spec::new_service(new_id(), bound);
                plan.note("service", &name, &service.id, Action::Create);
                written.push(service);
                created.push(true);
            }
        }
        deployed_names.push(name);
    }
    let mut pruned: Vec<Service> = Vec::new();
    if prune {
        for service in objects.services.iter().filter(|service| {
            !service.pending_delete && belongs_to(service_labels(service), &stack)
        }) {
            let name = service.unique_name();
            if !deployed_names.iter().any(|deployed| deployed == name) {
                let mut removed = service.clone();
                removed.pending_delete = true;
                plan.note("service", name, &service.id, Action::Remove);
                pruned.push(removed);
            }
        }
    }
    // Ports move between the stack's services within one deploy, and those of pruned services
    // are free for the others.
    let leaving: Vec<String> = pruned.iter().map(|service| service.id.clone()).collect();
    let guard = super::ports::allocate_published_ports(
        &objects.services,
        &networks,
        &mut written,
        &leaving,
    )?;
    for (service, created) in written.iter().zip(created) {
        plan.changes.push(if created {
            objects::create(service)
        } else {
            objects::update(service)
        });
    }
    plan.changes.extend(pruned.iter().map(objects::update));
    plan.changes.extend(guard.as_ref().map(objects::update));

    let mut revision = revision;
    label(&mut revision.annotations, &stack);
    match stack_of(&objects.stacks, &stack) {
        Some(existing) if existing.spec.as_ref() == Some(&revision) => {}
        Some(existing) => {
            let mut updated = existing.clone();
            let mut earlier = existing.previous_specs.clone();
            if history == History::Swap && !earlier.is_empty() {
                earlier.remove(0);
            }
            earlier.insert(0, existing.spec.clone().unwrap_or_default());
            earlier.truncate(KEPT_REVISIONS);
            updated.previous_specs = earlier;
            updated.spec = Some(revision);
            plan.changes.push(objects::update(&updated));
        }
        None => {
            let created = Stack {
                id: new_id(),
                spec: Some(revision),
                ..Default::default()
            };
            plan.changes.push(objects::create(&created));
        }
    }
    Ok(plan)
}

/// The revision `stack rollback` deploys: the newest earlier one.
pub(crate) fn previous_revision(
    objects: &StackObjects,
    stack: &str,
) -> Result<StackSpec, ManagerError> {
    let found = stack_of(&objects.stacks, stack).ok_or_else(|| ManagerError::NotFound {
        kind: "stack",
        reference: stack.to_owned(),
    })?;
    found.previous_specs.first().cloned().ok_or_else(|| {
        ManagerError::FailedPrecondition(format!(
            "stack {stack} has no earlier revision to roll back to: it was deployed once"
        ))
    })
}

/// Plans `stack rm`: the stack's services go (their tasks stop), then its secrets, configs and
/// networks, and the stack object.
pub(crate) fn plan_remove(objects: &StackObjects, stack: &str) -> Result<StackPlan, ManagerError> {
    let mut plan = StackPlan::default();
    for service in objects
        .services
        .iter()
        .filter(|service| !service.pending_delete && belongs_to(service_labels(service), stack))
    {
        let mut removed = service.clone();
        removed.pending_delete = true;
        plan.changes.push(objects::update(&removed));
        let name = service.unique_name();
        plan.note("service", name, &service.id, Action::Remove);
    }
    for secret in objects
        .secrets
        .iter()
        .filter(|secret| belongs_to(secret.annotations().map(|a| &a.labels), stack))
    {
        plan.changes.push(objects::delete(secret));
        plan.note("secret", secret.name(), &secret.id, Action::Remove);
    }
    for config in objects
        .configs
        .iter()
        .filter(|config| belongs_to(config.annotations().map(|a| &a.labels), stack))
    {
        plan.changes.push(objects::delete(config));
        plan.note("config", config.name(), &config.id, Action::Remove);
    }
    for network in objects.networks.iter().filter(|network| {
        belongs_to(
            network
                .spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .map(|annotations| &annotations.labels),
            stack,
        )
    }) {
        plan.changes.push(objects::delete(network));
        let name = network.unique_name();
        plan.note("network", name, &network.id, Action::Remove);
    }
    if let Some(found) = stack_of(&objects.stacks, stack) {
        plan.changes.push(objects::delete(found));
    }
    if plan.changes.is_empty() {
        return Err(ManagerError::NotFound {
            kind: "stack",
            reference: stack.to_owned(),
        });
    }
    Ok(plan)
}

/// Puts the stack's namespace label on a spec's annotations.
fn label(annotations: &mut Option<shoal_proto::api::Annotations>, stack: &str) {
    annotations
        .get_or_insert_with(Default::default)
        .labels
        .insert(NAMESPACE_LABEL.to_owned(), stack.to_owned());
}

/// Creates the secrets (or configs) of the revision that do not exist yet. One that exists
/// with the same data is left alone; with other data the deploy is refused, since a secret's
/// data never changes. Returns every secret (or config) the services may bind to.
fn add_payloads<T: Payload>(
    plan: &mut StackPlan,
    existing: &[T],
    wanted: impl Iterator<Item = T>,
    stack: &str,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Vec<T>, ManagerError> {
    let mut all = existing.to_vec();
    let noun = T::PAYLOAD.noun();
    for mut payload in wanted {
        payloads::check_payload(T::PAYLOAD, payload.annotations(), payload.data())?;
        let name = payload.name().to_owned();
        if let Some(found) = all.iter().find(|known| known.name() == name) {
            if found.data() != payload.data() {
                let fix = match T::PAYLOAD {
                    PayloadKind::Secret => "a secret's data never changes",
                    PayloadKind::Config => "a config's data never changes",
                };
                return Err(ManagerError::FailedPrecondition(format!(
                    "{noun} {name} already exists with other data, and {fix}: give the new data a new name in the compose file (e.g. {name}_v2) and deploy again"
                )));
            }
            plan.note(noun, &name, found.id(), Action::Unchanged);
            continue;
        }
        payload.set_id(new_id());
        payload.set_label(NAMESPACE_LABEL, stack);
        plan.changes.push(objects::create(&payload));
        plan.note(noun, &name, payload.id(), Action::Create);
        all.push(payload);
    }
    Ok(all)
}

/// Binds a service spec's secrets, configs and networks, named in the compose file, to the ids
/// of the objects; an unknown one is refused.
fn bind(
    spec: &mut ServiceSpec,
    networks: &[Network],
    secrets: &[Secret],
    configs: &[Config],
) -> Result<(), ManagerError> {
    super::networks::bind_attachments(
        spec,
        networks,
        "declare it under the top-level networks: key of the compose file, or create it and mark it external",
    )?;
    let Some(task) = spec.task.as_mut() else {
        return Ok(());
    };
    if let Some(task_spec::Runtime::Container(container)) = task.runtime.as_mut() {
        payloads::bind_references(container, secrets, configs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{
        Annotations, ConfigReference, ContainerSpec, NetworkAttachmentConfig, NetworkSpec,
        ReplicatedService, SecretReference, TaskSpec, service_spec,
    };

    use super::*;
    use crate::objects::ClusterObject;

    fn named(name: &str) -> Option<Annotations> {
        Some(Annotations {
            name: name.to_owned(),
            ..Default::default()
        })
    }

    fn service(name: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            annotations: named(name),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: image.to_owned(),
                    secrets: vec![SecretReference {
                        secret_name: "app_pw".into(),
                        ..Default::default()
                    }],
                    configs: vec![ConfigReference {
                        config_name: "app_conf".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                networks: vec![NetworkAttachmentConfig {
                    target: "app_default".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 1,
            })),
            ..Default::default()
        }
    }

    fn revision(services: Vec<ServiceSpec>) -> StackSpec {
        StackSpec {
            annotations: named("app"),
            compose: "services: ...".into(),
            services,
            networks: vec![NetworkSpec {
                annotations: named("app_default"),
                ..Default::default()
            }],
            secrets: vec!["app_pw".into()],
            configs: vec!["app_conf".into()],
        }
    }

    fn secret(data: &str) -> SecretSpec {
        SecretSpec {
            annotations: named("app_pw"),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn config() -> ConfigSpec {
        ConfigSpec {
            annotations: named("app_conf"),
            data: b"port: 80".to_vec(),
            ..Default::default()
        }
    }

    fn deploy(
        objects: &StackObjects,
        services: Vec<ServiceSpec>,
        secret_data: &str,
        prune: bool,
    ) -> Result<StackPlan, ManagerError> {
        let mut counter = 0;
        let mut new_id = || {
            counter += 1;
            format!("id{counter}")
        };
        plan_deploy(
            objects,
            revision(services),
            vec![secret(secret_data)],
            vec![config()],
            prune,
            History::Push,
            &mut new_id,
        )
    }

    fn replace<T: ClusterObject>(all: &mut Vec<T>, id: &str, data: Option<&[u8]>, version: u64) {
        all.retain(|object| object.id() != id);
        if let Some(data) = data {
            let mut object = T::decode(data).expect("decodes");
            *object.meta_mut() = Some(shoal_proto::api::Meta {
                version: Some(shoal_proto::api::Version { index: version }),
                ..Default::default()
            });
            all.push(object);
        }
    }

    /// Applies a plan the way the store would.
    fn apply(objects: &mut StackObjects, plan: &StackPlan, version: u64) {
        for change in &plan.changes {
            let (kind, id, data) = match change {
                Change::Create { kind, id, data, .. } | Change::Update { kind, id, data, .. } => {
                    (kind.as_str(), id.as_str(), Some(&data[..]))
                }
                Change::Delete { kind, id, .. } => (kind.as_str(), id.as_str(), None),
            };
            match kind {
                "service" => replace(&mut objects.services, id, data, version),
                "network" => replace(&mut objects.networks, id, data, version),
                "secret" => replace(&mut objects.secrets, id, data, version),
                "config" => replace(&mut objects.configs, id, data, version),
                "stack" => replace(&mut objects.stacks, id, data, version),
                other => panic!("unexpected kind {other}"),
            }
        }
    }

    fn report(plan: &StackPlan) -> Vec<String> {
        plan.report
            .iter()
            .map(|change| {
                format!(
                    "{} {} {}",
                    change.action().as_str_name(),
                    change.kind,
                    change.name
                )
            })
            .collect()
    }

    #[test]
    fn a_first_deploy_creates_everything_bound_and_labelled_in_one_plan() {
        let objects = StackObjects::default();
        let plan = deploy(
            &objects,
            vec![service("app_web", "busybox")],
            "s3cret",
            false,
        )
        .unwrap();
        assert_eq!(
            report(&plan),
            [
                "ACTION_CREATE network app_default",
                "ACTION_CREATE secret app_pw",
                "ACTION_CREATE config app_conf",
                "ACTION_CREATE service app_web",
            ]
        );
        let mut stored = StackObjects::default();
        apply(&mut stored, &plan, 2);
        let web = &stored.services[0];
        let spec = web.spec.as_ref().unwrap();
        assert_eq!(
            spec.annotations
                .as_ref()
                .unwrap()
                .labels
                .get(NAMESPACE_LABEL),
            Some(&"app".to_owned())
        );
        let task = spec.task.as_ref().unwrap();
        assert_eq!(task.networks[0].target, stored.networks[0].id);
        let Some(task_spec::Runtime::Container(container)) = task.runtime.as_ref() else {
            panic!("a container");
        };
        assert_eq!(container.secrets[0].secret_id, stored.secrets[0].id);
        assert_eq!(container.configs[0].config_id, stored.configs[0].id);
        assert!(belongs_to(
            stored.secrets[0].annotations().map(|a| &a.labels),
            "app"
        ));
        assert_eq!(stored.stacks.len(), 1);
    }

    #[test]
    fn redeploys_change_only_what_changed_and_keep_the_revision_history() {
        let mut stored = StackObjects::default();
        let services = || vec![service("app_web", "busybox"), service("app_db", "busybox")];
        let first = deploy(&stored, services(), "s3cret", false).unwrap();
        apply(&mut stored, &first, 2);

        let unchanged = deploy(&stored, services(), "s3cret", false).unwrap();
        assert!(unchanged.changes.is_empty(), "{:?}", unchanged.changes);
        assert!(
            report(&unchanged)
                .iter()
                .all(|line| line.starts_with("ACTION_UNCHANGED"))
        );

        let web_before = stored
            .services
            .iter()
            .find(|s| s.id == "id4")
            .cloned()
            .unwrap();
        let changed = deploy(
            &stored,
            vec![
                service("app_web", "busybox:v2"),
                service("app_db", "busybox"),
            ],
            "s3cret",
            false,
        )
        .unwrap();
        assert_eq!(
            report(&changed)
                .into_iter()
                .filter(|line| !line.starts_with("ACTION_UNCHANGED"))
                .collect::<Vec<_>>(),
            ["ACTION_UPDATE service app_web"]
        );
        apply(&mut stored, &changed, 3);
        let web = stored.services.iter().find(|s| s.id == "id4").unwrap();
        assert!(web.spec_version.unwrap().index > web_before.spec_version.unwrap().index);
        assert_eq!(web.previous_spec, web_before.spec);
        assert_eq!(stored.stacks[0].previous_specs.len(), 1);
        let earlier = previous_revision(&stored, "app").unwrap();
        assert_eq!(earlier.services, services());
    }

    fn publishing(name: &str, published: u32) -> ServiceSpec {
        let mut spec = service(name, "busybox");
        spec.endpoint = Some(shoal_proto::api::EndpointSpec {
            ports: vec![shoal_proto::api::PortConfig {
                target_port: 80,
                published_port: published,
                ..Default::default()
            }],
            ..Default::default()
        });
        spec
    }

    fn published_numbers(stored: &StackObjects, name: &str) -> Vec<u32> {
        let service = service_of(&stored.services, name).unwrap();
        service
            .endpoint
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(|port| port.published_port)
            .collect()
    }

    #[test]
    fn a_deploy_gives_published_ports_and_refuses_a_taken_one_writing_nothing() {
        let mut stored = StackObjects {
            networks: vec![Network {
                id: "ing".into(),
                spec: Some(spec::defaults::ingress_network_spec(true)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let first = deploy(
            &stored,
            vec![publishing("app_web", 8080), publishing("app_api", 0)],
            "s3cret",
            false,
        )
        .unwrap();
        // The ingress network is rewritten at the version read, the guard against a concurrent
        // claim.
        assert!(first.changes.iter().any(|change| change.id() == "ing"));
        apply(&mut stored, &first, 2);
        assert_eq!(published_numbers(&stored, "app_web"), [8080]);
        assert_eq!(published_numbers(&stored, "app_api"), [30000]);

        // A redeploy keeps the chosen number, and an unchanged file writes nothing.
        let again = deploy(
            &stored,
            vec![publishing("app_web", 8080), publishing("app_api", 0)],
            "s3cret",
            false,
        )
        .unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);

        let error = deploy(
            &stored,
            vec![publishing("app_web", 8080), publishing("app_api", 8080)],
            "s3cret",
            false,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("port 8080/tcp is already published by service app_web"),
            "{error}"
        );
    }

    #[test]
    fn prune_removes_services_the_file_no_longer_has_and_rm_removes_everything() {
        let mut stored = StackObjects::default();
        let both = vec![service("app_web", "busybox"), service("app_db", "busybox")];
        let first = deploy(&stored, both, "s3cret", false).unwrap();
        apply(&mut stored, &first, 2);
        let kept = deploy(
            &stored,
            vec![service("app_web", "busybox")],
            "s3cret",
            false,
        )
        .unwrap();
        assert!(!report(&kept).iter().any(|line| line.contains("REMOVE")));
        let pruned = deploy(&stored, vec![service("app_web", "busybox")], "s3cret", true).unwrap();
        assert!(report(&pruned).contains(&"ACTION_REMOVE service app_db".to_owned()));

        let removed = plan_remove(&stored, "app").unwrap();
        assert_eq!(
            report(&removed),
            [
                "ACTION_REMOVE service app_web",
                "ACTION_REMOVE service app_db",
                "ACTION_REMOVE secret app_pw",
                "ACTION_REMOVE config app_conf",
                "ACTION_REMOVE network app_default",
            ]
        );
        apply(&mut stored, &removed, 3);
        assert!(stored.stacks.is_empty() && stored.secrets.is_empty());
        assert!(matches!(
            plan_remove(&StackObjects::default(), "app"),
            Err(ManagerError::NotFound { .. })
        ));
    }

    #[test]
    fn stack_networks_get_the_overlay_driver_and_the_checks_of_network_create() {
        let plan = deploy(
            &StackObjects::default(),
            vec![service("app_web", "busybox")],
            "s3cret",
            false,
        )
        .unwrap();
        let mut stored = StackObjects::default();
        apply(&mut stored, &plan, 2);
        let driver = stored.networks[0]
            .spec
            .as_ref()
            .and_then(|spec| spec.driver_config.as_ref())
            .map(|driver| driver.name.as_str());
        assert_eq!(driver, Some("overlay"));

        let taken = Network {
            id: "n0".into(),
            spec: Some(NetworkSpec {
                annotations: named("corp"),
                ..Default::default()
            }),
            ipam: Some(shoal_proto::api::IpamOptions {
                driver: None,
                configs: vec![shoal_proto::api::IpamConfig {
                    subnet: "10.0.1.0/24".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let objects = StackObjects {
            networks: vec![taken],
            ..Default::default()
        };
        let mut overlapping = revision(vec![service("app_web", "busybox")]);
        overlapping.networks[0].ipam = Some(shoal_proto::api::IpamOptions {
            driver: None,
            configs: vec![shoal_proto::api::IpamConfig {
                subnet: "10.0.0.0/16".into(),
                ..Default::default()
            }],
        });
        let error = plan_deploy(
            &objects,
            overlapping.clone(),
            vec![secret("s3cret")],
            vec![config()],
            false,
            History::Push,
            &mut || "id".to_owned(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("subnet 10.0.0.0/16 overlaps subnet 10.0.1.0/24 of network corp"),
            "{error}"
        );
        overlapping.networks[0].ipam.as_mut().unwrap().configs[0].subnet = "10.0.0.0/33".into();
        let error = plan_deploy(
            &objects,
            overlapping,
            vec![secret("s3cret")],
            vec![config()],
            false,
            History::Push,
            &mut || "id".to_owned(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("invalid subnet"), "{error}");
    }

    #[test]
    fn bad_deploys_are_refused_before_anything_is_written() {
        let mut stored = StackObjects::default();
        let first = deploy(
            &stored,
            vec![service("app_web", "busybox")],
            "s3cret",
            false,
        )
        .unwrap();
        apply(&mut stored, &first, 2);
        let error = deploy(&stored, vec![service("app_web", "busybox")], "other", false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("secret app_pw already exists with other data"),
            "{error}"
        );
        assert!(error.contains("app_pw_v2"), "{error}");

        let error = deploy(&stored, vec![service("web", "busybox")], "s3cret", false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("stack services are named app_SERVICE"),
            "{error}"
        );

        let mut unknown_network = service("app_web", "busybox");
        unknown_network.task.as_mut().unwrap().networks[0].target = "elsewhere".into();
        let error = deploy(&stored, vec![unknown_network], "s3cret", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("network elsewhere not found"), "{error}");

        assert!(check_stack_name("my stack").is_err());
        assert!(matches!(
            previous_revision(&stored, "app"),
            Err(ManagerError::FailedPrecondition(_))
        ));
    }
}

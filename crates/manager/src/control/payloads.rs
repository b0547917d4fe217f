//! Secrets and configs, the payloads services mount: the rules for their names and sizes, how
//! many one task may mount, and which services use one (so that removing it can be refused,
//! naming them). Pure.

use shoal_proto::api::{Annotations, Config, ContainerSpec, Secret, Service, task_spec};

/// An object's labels, as its annotations hold them.
pub(crate) type Labels = std::collections::HashMap<String, String>;

use crate::error::ManagerError;
use crate::objects::ClusterObject;

use spec::validate::MAX_PAYLOADS_PER_TASK;
pub(crate) use spec::validate::PayloadKind;

/// What the control API needs of a secret or a config.
pub(crate) trait Payload: ClusterObject {
    const PAYLOAD: PayloadKind;
    fn set_id(&mut self, id: String);
    fn annotations(&self) -> Option<&Annotations>;
    fn labels_mut(&mut self) -> &mut Labels;
    fn data(&self) -> &[u8];
    /// The object as reads return it: a secret without its data.
    fn into_read(self) -> Self;

    fn set_label(&mut self, key: &str, value: &str) {
        self.labels_mut().insert(key.to_owned(), value.to_owned());
    }

    fn name(&self) -> &str {
        self.annotations()
            .map_or("", |annotations| annotations.name.as_str())
    }
}

impl Payload for Secret {
    const PAYLOAD: PayloadKind = PayloadKind::Secret;

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn labels_mut(&mut self) -> &mut Labels {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .labels
    }

    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref()?.annotations.as_ref()
    }

    fn data(&self) -> &[u8] {
        self.spec.as_ref().map_or(&[], |spec| spec.data.as_slice())
    }

    fn into_read(mut self) -> Self {
        if let Some(spec) = self.spec.as_mut() {
            spec.data.clear();
        }
        self
    }
}

impl Payload for Config {
    const PAYLOAD: PayloadKind = PayloadKind::Config;

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn labels_mut(&mut self) -> &mut Labels {
        &mut self
            .spec
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .labels
    }

    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref()?.annotations.as_ref()
    }

    fn data(&self) -> &[u8] {
        self.spec.as_ref().map_or(&[], |spec| spec.data.as_slice())
    }

    fn into_read(self) -> Self {
        self
    }
}

/// Checks a new secret's or config's name and data, as Docker does: a name of letters, digits,
/// `-`, `_` and `.` that starts and ends with a letter or digit, at most 64 characters, and data
/// of 1 byte to 500 KiB.
pub(crate) fn check_payload(
    kind: PayloadKind,
    annotations: Option<&Annotations>,
    data: &[u8],
) -> Result<(), ManagerError> {
    let name = annotations.map_or("", |annotations| annotations.name.as_str());
    Ok(spec::validate::payload(kind, name, data)?)
}

/// The stored secret or config `current` with the labels of `requested`, refusing any other
/// change as Docker does: the name must stay, and the data must be absent or the same (a
/// second `stack deploy` sends the file again).
pub(crate) fn relabel<T: Payload>(current: &T, requested: &T) -> Result<T, ManagerError> {
    let noun = T::PAYLOAD.noun();
    if requested.name() != current.name() {
        return Err(ManagerError::InvalidArgument(format!(
            "only the labels of a {noun} can change, not its name ({} to {}): create a new {noun} under the new name",
            current.name(),
            requested.name()
        )));
    }
    // Digests are compared, not the data, so the time taken tells nothing of a secret.
    let digest = |data: &[u8]| ring::digest::digest(&ring::digest::SHA256, data);
    let same_data = requested.data().is_empty()
        || digest(requested.data()).as_ref() == digest(current.data()).as_ref();
    if !same_data {
        return Err(ManagerError::InvalidArgument(format!(
            "only the labels of a {noun} can change, not its data: create a new {noun} with the new data and point the services at it ('shoal service update --{noun}-rm OLD --{noun}-add NEW')"
        )));
    }
    let mut relabelled = current.clone();
    let labels = requested
        .annotations()
        .map(|annotations| annotations.labels.clone())
        .unwrap_or_default();
    *relabelled.labels_mut() = labels;
    Ok(relabelled)
}

/// Fills in the id (and name) of every secret and config a container spec references, by id
/// or by name, refusing one that does not exist, or more than [`MAX_PAYLOADS_PER_TASK`].
pub(crate) fn bind_references(
    container: &mut ContainerSpec,
    secrets: &[Secret],
    configs: &[Config],
) -> Result<(), ManagerError> {
    fn find<'a, T: Payload>(all: &'a [T], id: &str, name: &str) -> Result<&'a T, ManagerError> {
        all.iter()
            .find(|payload| (!id.is_empty() && payload.id() == id) || (id.is_empty() && payload.name() == name))
            .ok_or_else(|| {
                let noun = T::PAYLOAD.noun();
                let shown = if name.is_empty() { id } else { name };
                ManagerError::InvalidArgument(format!(
                    "{noun} {shown} not found: create it first with 'shoal {noun} create {shown} FILE'"
                ))
            })
    }
    let count = container.secrets.len() + container.configs.len();
    if count > MAX_PAYLOADS_PER_TASK {
        return Err(ManagerError::InvalidArgument(format!(
            "the service mounts {count} secrets and configs, over the limit of {MAX_PAYLOADS_PER_TASK} a task: combine several into one file"
        )));
    }
    for reference in &mut container.secrets {
        let found = find(secrets, &reference.secret_id, &reference.secret_name)?;
        reference.secret_id = found.id().to_owned();
        reference.secret_name = found.name().to_owned();
    }
    for reference in &mut container.configs {
        let found = find(configs, &reference.config_id, &reference.config_name)?;
        reference.config_id = found.id().to_owned();
        reference.config_name = found.name().to_owned();
    }
    Ok(())
}

/// The names of the services (not being removed) whose tasks mount the secret or config `id`.
pub(crate) fn services_using(kind: PayloadKind, id: &str, services: &[Service]) -> Vec<String> {
    let mut names: Vec<String> = services
        .iter()
        .filter(|service| !service.pending_delete)
        .filter(|service| {
            let container = service
                .spec
                .as_ref()
                .and_then(|spec| spec.task.as_ref())
                .and_then(|task| task.runtime.as_ref());
            let Some(task_spec::Runtime::Container(container)) = container else {
                return false;
            };
            match kind {
                PayloadKind::Secret => container.secrets.iter().any(|s| s.secret_id == id),
                PayloadKind::Config => container.configs.iter().any(|c| c.config_id == id),
            }
        })
        .map(|service| {
            service
                .spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .map_or_else(|| service.id.clone(), |a| a.name.clone())
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::api::{
        ConfigReference, ContainerSpec, SecretReference, ServiceSpec, TaskSpec,
    };

    fn named(name: &str) -> Annotations {
        Annotations {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_sizes_follow_dockers_rules() {
        let ok = |name: &str, size: usize| {
            check_payload(PayloadKind::Secret, Some(&named(name)), &vec![b'x'; size])
        };
        assert!(ok("db-password", 1).is_ok());
        assert!(ok("a.b_c-9", spec::validate::MAX_PAYLOAD_BYTES).is_ok());
        for (name, size, why) in [
            ("", 1, "needs a name"),
            ("-leading", 1, "invalid secret name"),
            ("trailing.", 1, "invalid secret name"),
            ("has space", 1, "invalid secret name"),
            (&"x".repeat(65), 1, "invalid secret name"),
            ("empty", 0, "has no data"),
            (
                "huge",
                spec::validate::MAX_PAYLOAD_BYTES + 1,
                "over the limit",
            ),
        ] {
            let error = ok(name, size).unwrap_err().to_string();
            assert!(error.contains(why), "{name:?}/{size}: {error}");
        }
        let config = check_payload(PayloadKind::Config, None, b"x").unwrap_err();
        assert!(
            config.to_string().contains("shoal config create"),
            "{config}"
        );
    }

    #[test]
    fn only_labels_change_on_an_update() {
        let secret = |name: &str, data: &[u8], label: &str| Secret {
            id: "s1".into(),
            spec: Some(shoal_proto::api::SecretSpec {
                annotations: Some(Annotations {
                    name: name.to_owned(),
                    labels: [("tier".to_owned(), label.to_owned())].into(),
                    ..Default::default()
                }),
                data: data.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stored = secret("pw", b"hunter2", "a");
        for requested in [secret("pw", b"hunter2", "b"), secret("pw", b"", "b")] {
            let updated = relabel(&stored, &requested).unwrap();
            assert_eq!(updated.annotations().unwrap().labels["tier"], "b");
            assert_eq!(updated.data(), b"hunter2", "the data stays");
        }
        let renamed = relabel(&stored, &secret("other", b"", "a")).unwrap_err();
        assert!(
            renamed.to_string().contains("not its name (pw to other)"),
            "{renamed}"
        );
        let new_data = relabel(&stored, &secret("pw", b"hunter3", "a")).unwrap_err();
        assert!(new_data.to_string().contains("not its data"), "{new_data}");
        assert!(new_data.to_string().contains("--secret-add"), "{new_data}");
    }

    #[test]
    fn references_bind_by_name_or_id_and_unknown_ones_are_refused() {
        let secret = Secret {
            id: "s1".into(),
            spec: Some(shoal_proto::api::SecretSpec {
                annotations: Some(named("pw")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut container = ContainerSpec {
            secrets: vec![SecretReference {
                secret_name: "pw".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        bind_references(&mut container, std::slice::from_ref(&secret), &[]).unwrap();
        assert_eq!(container.secrets[0].secret_id, "s1");
        container.secrets[0].secret_name.clear();
        bind_references(&mut container, std::slice::from_ref(&secret), &[]).unwrap();
        assert_eq!(container.secrets[0].secret_name, "pw");
        container.configs.push(ConfigReference {
            config_name: "missing".into(),
            ..Default::default()
        });
        let error = bind_references(&mut container, &[secret], &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("config missing not found"), "{error}");
        assert!(error.contains("shoal config create missing"), "{error}");
    }

    #[test]
    fn a_task_mounts_at_most_the_limit_of_secrets_and_configs() {
        let secrets: Vec<Secret> = (0..MAX_PAYLOADS_PER_TASK)
            .map(|index| Secret {
                id: format!("s{index}"),
                ..Default::default()
            })
            .collect();
        let configs = [Config {
            id: "c1".into(),
            ..Default::default()
        }];
        let mut container = ContainerSpec {
            secrets: secrets
                .iter()
                .map(|secret| SecretReference {
                    secret_id: secret.id.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        bind_references(&mut container, &secrets, &configs).unwrap();
        // One config more is one payload too many.
        container.configs.push(ConfigReference {
            config_id: "c1".into(),
            ..Default::default()
        });
        let error = bind_references(&mut container, &secrets, &configs)
            .unwrap_err()
            .to_string();
        assert!(error.contains("101 secrets and configs"), "{error}");
        assert!(error.contains("limit of 100"), "{error}");
    }

    #[test]
    fn services_using_a_payload_are_named_in_order() {
        let service = |name: &str, secret: &str, config: &str, going: bool| Service {
            id: format!("id-{name}"),
            pending_delete: going,
            spec: Some(ServiceSpec {
                annotations: Some(named(name)),
                task: Some(TaskSpec {
                    runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                        secrets: vec![SecretReference {
                            secret_id: secret.to_owned(),
                            ..Default::default()
                        }],
                        configs: vec![ConfigReference {
                            config_id: config.to_owned(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let services = vec![
            service("web", "s1", "c1", false),
            service("api", "s1", "c2", false),
            service("old", "s1", "c1", true),
        ];
        assert_eq!(
            services_using(PayloadKind::Secret, "s1", &services),
            vec!["api", "web"]
        );
        assert_eq!(
            services_using(PayloadKind::Config, "c1", &services),
            vec!["web"]
        );
        assert!(services_using(PayloadKind::Secret, "s2", &services).is_empty());
    }
}

//! Secrets and configs as Docker shapes them (`GET /secrets`, `GET /configs`, `docker secret
//! inspect`), and the specs `docker secret create` and `docker config create` send, their data
//! in standard base64. A secret's data is never shown; the manager never returns it anyway.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Map, Value, json};
use shoal_proto::api;

use super::ShapeError;
use super::common::{
    annotations_from_json, driver_from_json, driver_json, insert_meta, labels_json,
};
use super::read::Object;

/// `Spec` of a secret or config: name, labels, then what the kind adds.
fn spec_json(annotations: Option<&api::Annotations>) -> Map<String, Value> {
    let annotations = annotations.cloned().unwrap_or_default();
    let mut spec = Map::new();
    spec.insert("Name".into(), json!(annotations.name));
    spec.insert("Labels".into(), labels_json(&annotations.labels));
    spec
}

fn document(id: &str, meta: Option<&api::Meta>, spec: Map<String, Value>) -> Value {
    let mut object = Map::new();
    insert_meta(&mut object, id, meta);
    object.insert("Spec".into(), Value::Object(spec));
    Value::Object(object)
}

/// One secret in Docker's shape, without its data.
pub fn secret_json(secret: &api::Secret) -> Value {
    let stored = secret.spec.clone().unwrap_or_default();
    let mut spec = spec_json(stored.annotations.as_ref());
    if let Some(driver) = &stored.driver {
        spec.insert("Driver".into(), driver_json(driver));
    }
    if let Some(templating) = &stored.templating {
        spec.insert("Templating".into(), driver_json(templating));
    }
    document(&secret.id, secret.meta.as_ref(), spec)
}

/// One config in Docker's shape, its data in standard base64.
pub fn config_json(config: &api::Config) -> Value {
    let stored = config.spec.clone().unwrap_or_default();
    let mut spec = spec_json(stored.annotations.as_ref());
    spec.insert("Data".into(), json!(BASE64_STANDARD.encode(&stored.data)));
    if let Some(templating) = &stored.templating {
        spec.insert("Templating".into(), driver_json(templating));
    }
    document(&config.id, config.meta.as_ref(), spec)
}

/// The secret spec of Docker's `SecretSpec` (`POST /secrets/create`).
pub fn secret_spec_from_json(value: &Value) -> Result<api::SecretSpec, ShapeError> {
    let object = Object::root(value, "SecretSpec", "swarm.SecretSpec")?;
    Ok(api::SecretSpec {
        annotations: Some(annotations_from_json(&object)?),
        data: object.bytes("Data")?,
        templating: driver_from_json(&object, "Templating")?,
        driver: driver_from_json(&object, "Driver")?,
    })
}

/// The config spec of Docker's `ConfigSpec` (`POST /configs/create`).
pub fn config_spec_from_json(value: &Value) -> Result<api::ConfigSpec, ShapeError> {
    let object = Object::root(value, "ConfigSpec", "swarm.ConfigSpec")?;
    Ok(api::ConfigSpec {
        annotations: Some(annotations_from_json(&object)?),
        data: object.bytes("Data")?,
        templating: driver_from_json(&object, "Templating")?,
    })
}

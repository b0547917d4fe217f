//! Networks as Docker shapes them: the `NetworkResource` of `GET /networks` and `docker network
//! inspect`, the swarm `Network` a task's attachments show, and the `CreateRequest` of `POST
//! /networks/create` read into the spec `shoal network create` sends.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use shoal_proto::api;

use super::ShapeError;
use super::common::{
    annotations_from_json, driver_json, insert_meta, insert_nonempty, labels_json, rfc3339_nano,
};
use super::read::Object;

/// The scope of every network shoal has.
pub const SCOPE: &str = "swarm";

/// A network's driver: overlay when the spec names none, as the manager fills it in.
pub fn driver_name(network: &api::Network) -> String {
    match network
        .spec
        .as_ref()
        .and_then(|spec| spec.driver_config.as_ref())
    {
        Some(driver) if !driver.name.is_empty() => driver.name.clone(),
        _ => spec::network::OVERLAY_DRIVER.to_owned(),
    }
}

fn name_of(spec: &api::NetworkSpec) -> String {
    spec.annotations
        .as_ref()
        .map(|annotations| annotations.name.clone())
        .unwrap_or_default()
}

/// Docker's `NetworkResource`. IPAM shows what the allocator gave once it has, and what was
/// asked for until then; the options are the spec's with the allocator's (the VNI) over them.
/// `attachments` is what this node's overlay networking knows, when asked: its own tasks on the
/// network (`Containers`) and the nodes it shares the network with (`Peers`).
pub fn network_json(
    network: &api::Network,
    attachments: Option<&api::NetworkAttachmentsResponse>,
) -> Value {
    let spec = network.spec.clone().unwrap_or_default();
    let allocated = network
        .ipam
        .as_ref()
        .filter(|ipam| !ipam.configs.is_empty());
    let configs: Vec<Value> = allocated
        .or(spec.ipam.as_ref())
        .map(|ipam| ipam.configs.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|config| {
            let mut entry = json!({ "Subnet": config.subnet });
            if !config.gateway.is_empty() {
                entry["Gateway"] = json!(config.gateway);
            }
            if !config.range.is_empty() {
                entry["IPRange"] = json!(config.range);
            }
            entry
        })
        .collect();
    let ipam_driver = spec
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.driver.as_ref())
        .map(|driver| driver.name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| spec::network::DEFAULT_IPAM_DRIVER.to_owned());
    let mut options: BTreeMap<String, String> = spec
        .driver_config
        .as_ref()
        .map(|driver| driver.options.clone().into_iter().collect())
        .unwrap_or_default();
    if let Some(state) = network.driver_state.as_ref() {
        options.extend(state.options.clone());
    }
    let labels = spec
        .annotations
        .as_ref()
        .map_or_else(|| json!({}), |annotations| labels_json(&annotations.labels));
    let config_from = match &spec.config_from {
        Some(api::network_spec::ConfigFrom::Network(name)) => name.clone(),
        None => String::new(),
    };
    let attachments = attachments.cloned().unwrap_or_default();
    let containers: Map<String, Value> = attachments
        .endpoints
        .iter()
        .map(|endpoint| {
            (
                endpoint.container_id.clone(),
                json!({
                    "Name": endpoint.name,
                    "EndpointID": endpoint.endpoint_id,
                    "MacAddress": endpoint.mac_address,
                    "IPv4Address": endpoint.ipv4_address,
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let peers: Vec<Value> = attachments
        .peers
        .iter()
        .map(|peer| json!({ "Name": peer.name, "IP": peer.ip }))
        .collect();
    json!({
        "Name": name_of(&spec),
        "Id": network.id,
        "Created": rfc3339_nano(network.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        "Scope": SCOPE,
        "Driver": driver_name(network),
        "EnableIPv4": true,
        "EnableIPv6": spec.ipv6_enabled,
        "IPAM": {
            "Driver": ipam_driver,
            "Options": null,
            "Config": configs,
        },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": { "Network": config_from },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": labels,
        "Peers": peers,
    })
}

fn ipam_options_json(ipam: &api::IpamOptions) -> Value {
    let mut object = Map::new();
    object.insert(
        "Driver".into(),
        driver_json(&ipam.driver.clone().unwrap_or_default()),
    );
    let configs: Vec<Value> = ipam
        .configs
        .iter()
        .map(|config| {
            let mut entry = Map::new();
            insert_nonempty(&mut entry, "Subnet", json!(config.subnet));
            insert_nonempty(&mut entry, "Range", json!(config.range));
            insert_nonempty(&mut entry, "Gateway", json!(config.gateway));
            Value::Object(entry)
        })
        .collect();
    insert_nonempty(&mut object, "Configs", Value::Array(configs));
    Value::Object(object)
}

/// Docker's swarm `Network`, as a task's `NetworksAttachments` show it.
pub(crate) fn swarm_network_json(network: &api::Network) -> Value {
    let spec = network.spec.clone().unwrap_or_default();
    let mut spec_json = Map::new();
    insert_nonempty(&mut spec_json, "Name", json!(name_of(&spec)));
    spec_json.insert(
        "Labels".into(),
        labels_json(&spec.annotations.clone().unwrap_or_default().labels),
    );
    if let Some(driver) = &spec.driver_config {
        spec_json.insert("DriverConfiguration".into(), driver_json(driver));
    }
    insert_nonempty(&mut spec_json, "IPv6Enabled", json!(spec.ipv6_enabled));
    insert_nonempty(&mut spec_json, "Internal", json!(spec.internal));
    insert_nonempty(&mut spec_json, "Attachable", json!(spec.attachable));
    insert_nonempty(&mut spec_json, "Ingress", json!(spec.ingress));
    if let Some(ipam) = &spec.ipam {
        spec_json.insert("IPAMOptions".into(), ipam_options_json(ipam));
    }
    if let Some(api::network_spec::ConfigFrom::Network(name)) = &spec.config_from {
        spec_json.insert("ConfigFrom".into(), json!({"Network": name}));
    }
    spec_json.insert("Scope".into(), json!(SCOPE));
    let mut object = Map::new();
    insert_meta(&mut object, &network.id, network.meta.as_ref());
    object.insert("Spec".into(), Value::Object(spec_json));
    object.insert(
        "DriverState".into(),
        driver_json(&network.driver_state.clone().unwrap_or_default()),
    );
    if let Some(ipam) = &network.ipam {
        object.insert("IPAMOptions".into(), ipam_options_json(ipam));
    }
    Value::Object(object)
}

/// The IPAM of Docker's `IPAM`, as `shoal network create` builds it: none when it asks for no
/// subnet and the default driver with no options (what Docker's CLI sends without `--subnet`).
fn ipam_from_json(object: &Object<'_>) -> Result<Option<api::IpamOptions>, ShapeError> {
    let Some(ipam) = object.object("IPAM", "network.IPAM")? else {
        return Ok(None);
    };
    let driver = api::Driver {
        name: ipam.string("Driver")?,
        options: ipam.string_map("Options")?,
    };
    let plain_driver = (driver.name.is_empty()
        || driver.name == spec::network::DEFAULT_IPAM_DRIVER)
        && driver.options.is_empty();
    // AuxiliaryAddresses: Docker's daemon does not take them to the swarm either.
    let configs = ipam
        .objects("Config", "network.IPAMConfig")?
        .iter()
        .map(|config| {
            Ok(api::IpamConfig {
                subnet: config.string("Subnet")?,
                range: config.string("IPRange")?,
                gateway: config.string("Gateway")?,
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, ShapeError>>()?;
    if configs.is_empty() && plain_driver {
        return Ok(None);
    }
    Ok(Some(api::IpamOptions {
        driver: (!plain_driver).then_some(driver),
        configs,
    }))
}

/// The network spec of Docker's `CreateRequest` (`POST /networks/create`), as `shoal network
/// create` builds it from its flags; the manager checks it with spec's rules. `Scope` (every
/// network is the swarm's), `EnableIPv4` (overlays always have IPv4), `ConfigOnly` and
/// `CheckDuplicate` have no field in the proto and are not read.
pub fn network_spec_from_json(value: &Value) -> Result<api::NetworkSpec, ShapeError> {
    let object = Object::root(value, "CreateRequest", "network.CreateRequest")?;
    Ok(api::NetworkSpec {
        annotations: Some(annotations_from_json(&object)?),
        driver_config: Some(api::Driver {
            name: object.string("Driver")?,
            options: object.string_map("Options")?,
        }),
        ipv6_enabled: object.boolean("EnableIPv6")?,
        internal: object.boolean("Internal")?,
        ipam: ipam_from_json(&object)?,
        attachable: object.boolean("Attachable")?,
        ingress: object.boolean("Ingress")?,
        config_from: object
            .object("ConfigFrom", "network.ConfigReference")?
            .map(|from| from.string("Network"))
            .transpose()?
            .map(api::network_spec::ConfigFrom::Network),
    })
}

//! `shoal network`: create, ls, inspect, rm and prune, as the docker CLI has them for swarm
//! networks. The spec a create sends is built and checked here with spec's rules (the manager
//! checks again); rows and inspect documents are built by pure functions.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};

use clap::Subcommand;
use serde_json::{Value, json};
use shoal_proto::api;
use spec::network::Subnet;

use crate::client::{Daemon, api_error};
use crate::service::format::{ListRow, go_time_string, print_rows, rfc3339_nano, truncate_id};

#[derive(Subcommand)]
pub(crate) enum NetworkCommand {
    /// Creates a swarm network.
    Create {
        /// The driver: swarm networks use overlay.
        #[arg(short = 'd', long, default_value = spec::network::OVERLAY_DRIVER)]
        driver: String,
        /// A subnet in CIDR form, such as 10.0.9.0/24 (repeatable); without one the network
        /// gets one from the swarm's address pool.
        #[arg(long = "subnet")]
        subnets: Vec<String>,
        /// The gateway of a subnet (repeatable).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// The part of a subnet tasks' addresses come from, in CIDR form (repeatable).
        #[arg(long = "ip-range")]
        ip_ranges: Vec<String>,
        /// Lets standalone containers attach too.
        #[arg(long)]
        attachable: bool,
        /// Keeps the network from the outside: no egress through the node.
        #[arg(long)]
        internal: bool,
        /// Makes the swarm's routing-mesh network (refused while one exists: remove it first).
        #[arg(long)]
        ingress: bool,
        /// Asks for IPv6, which overlays don't support (refused, with why).
        #[arg(long)]
        ipv6: bool,
        /// A driver option, key=value or a bare key such as `encrypted` (repeatable).
        #[arg(short = 'o', long = "opt")]
        options: Vec<String>,
        /// A label, key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// Lists networks.
    #[command(alias = "list")]
    Ls {
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Shows full IDs.
        #[arg(long)]
        no_trunc: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
        /// name=, id=, label=, driver=, scope= or type= (repeatable).
        #[arg(short = 'f', long = "filter")]
        filters: Vec<String>,
    },
    /// Shows networks in detail, as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes networks; refused while a service uses one.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes every network no service uses.
    Prune {
        /// Does not ask for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// label=KEY[=VALUE] or label!=KEY[=VALUE] (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
    },
}

/// What `network create`'s flags ask for.
#[derive(Debug, Default)]
pub(crate) struct CreateFlags {
    pub(crate) name: String,
    pub(crate) driver: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) gateways: Vec<String>,
    pub(crate) ip_ranges: Vec<String>,
    pub(crate) attachable: bool,
    pub(crate) internal: bool,
    pub(crate) ingress: bool,
    pub(crate) ipv6: bool,
    pub(crate) options: Vec<String>,
    pub(crate) labels: Vec<String>,
}

/// `key=value` flags as a map; a bare key has an empty value (docker's `--opt encrypted`).
fn key_values(
    flag: &str,
    entries: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    entries
        .iter()
        .map(|entry| {
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            if key.trim().is_empty() {
                anyhow::bail!("{flag}: invalid value {entry:?}: use key=value");
            }
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The subnet of `subnets` that holds `address` (a gateway or an IP range), as docker pairs
/// them.
fn owning_subnet(
    flag: &str,
    address: &str,
    subnets: &[(Subnet, api::IpamConfig)],
) -> anyhow::Result<usize> {
    if subnets.is_empty() {
        anyhow::bail!("{flag} {address} needs a subnet: give --subnet too");
    }
    let holds = |subnet: Subnet| -> bool {
        if flag == "--gateway" {
            address.parse().is_ok_and(|ip| subnet.contains(ip))
        } else {
            Subnet::parse(address, "ip range").is_ok_and(|range| subnet.covers(range))
        }
    };
    let found = subnets.iter().position(|(subnet, _)| holds(*subnet));
    match (found, subnets) {
        (Some(index), _) => Ok(index),
        // With one subnet, spec's rule says what is wrong with the address.
        (None, [_]) => Ok(0),
        (None, _) => anyhow::bail!("{flag} {address} is in none of the subnets given"),
    }
}

/// The network spec `network create` sends, checked with spec's rules.
pub(crate) fn create_spec(flags: CreateFlags) -> anyhow::Result<api::NetworkSpec> {
    let mut pools: Vec<(Subnet, api::IpamConfig)> = Vec::new();
    for subnet in &flags.subnets {
        let parsed =
            Subnet::parse(subnet, "subnet").map_err(|e| anyhow::anyhow!("--subnet: {e}"))?;
        pools.push((
            parsed,
            api::IpamConfig {
                subnet: subnet.clone(),
                ..Default::default()
            },
        ));
    }
    for gateway in &flags.gateways {
        let index = owning_subnet("--gateway", gateway, &pools)?;
        let config = &mut pools[index].1;
        if !config.gateway.is_empty() {
            anyhow::bail!(
                "--gateway: subnet {} has two gateways, {} and {gateway}: give one",
                config.subnet,
                config.gateway
            );
        }
        config.gateway = gateway.clone();
    }
    for range in &flags.ip_ranges {
        let index = owning_subnet("--ip-range", range, &pools)?;
        let config = &mut pools[index].1;
        if !config.range.is_empty() {
            anyhow::bail!(
                "--ip-range: subnet {} has two ranges, {} and {range}: give one",
                config.subnet,
                config.range
            );
        }
        config.range = range.clone();
    }
    let spec = api::NetworkSpec {
        annotations: Some(api::Annotations {
            name: flags.name,
            labels: key_values("--label", &flags.labels)?,
            ..Default::default()
        }),
        driver_config: Some(api::Driver {
            name: flags.driver,
            options: key_values("--opt", &flags.options)?,
        }),
        ipv6_enabled: flags.ipv6,
        internal: flags.internal,
        ipam: (!pools.is_empty()).then(|| api::IpamOptions {
            driver: None,
            configs: pools.into_iter().map(|(_, config)| config).collect(),
        }),
        attachable: flags.attachable,
        ingress: flags.ingress,
        config_from: None,
    };
    spec::validate::network_spec(&spec)?;
    Ok(spec)
}

fn spec_of(network: &api::Network) -> api::NetworkSpec {
    network.spec.clone().unwrap_or_default()
}

fn name_of(network: &api::Network) -> String {
    spec_of(network)
        .annotations
        .map(|annotations| annotations.name)
        .unwrap_or_default()
}

fn driver_of(network: &api::Network) -> String {
    match spec_of(network).driver_config {
        Some(driver) if !driver.name.is_empty() => driver.name,
        _ => spec::network::OVERLAY_DRIVER.to_owned(),
    }
}

/// One line of `network ls`.
pub(crate) struct NetworkRow {
    network: api::Network,
    no_trunc: bool,
}

const NETWORK_HEADER: [&str; 4] = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
const SCOPE: &str = "swarm";

impl NetworkRow {
    fn shown_id(&self) -> &str {
        if self.no_trunc {
            &self.network.id
        } else {
            truncate_id(&self.network.id)
        }
    }
}

impl ListRow for NetworkRow {
    fn id(&self) -> &str {
        self.shown_id()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.shown_id().to_owned(),
            name_of(&self.network),
            driver_of(&self.network),
            SCOPE.to_owned(),
        ]
    }

    fn json(&self) -> Value {
        let spec = spec_of(&self.network);
        let labels: BTreeMap<String, String> = spec
            .annotations
            .map(|annotations| annotations.labels.into_iter().collect())
            .unwrap_or_default();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        json!({
            "CreatedAt": go_time_string(self.network.meta.as_ref().and_then(|m| m.created_at.as_ref())),
            "Driver": driver_of(&self.network),
            "ID": self.shown_id(),
            "IPv4": "true",
            "IPv6": spec.ipv6_enabled.to_string(),
            "Internal": spec.internal.to_string(),
            "Labels": labels.join(","),
            "Name": name_of(&self.network),
            "Scope": SCOPE,
        })
    }
}

/// Rows in the order the manager lists them (by name).
pub(crate) fn rows(networks: Vec<api::Network>, no_trunc: bool) -> Vec<NetworkRow> {
    networks
        .into_iter()
        .map(|network| NetworkRow { network, no_trunc })
        .collect()
}

/// The document `network inspect` prints, in docker's NetworkResource shape. IPAM shows what the
/// allocator gave once it has, and what was asked for until then; the options are the spec's
/// with the allocator's (the VNI) over them. Containers and Peers are what this node's overlay
/// networking knows: its own tasks on the network, and the nodes it shares the network with.
pub(crate) fn inspect_json(
    network: &api::Network,
    attachments: &api::NetworkAttachmentsResponse,
) -> Value {
    let spec = spec_of(network);
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
    let labels: BTreeMap<String, String> = spec
        .annotations
        .as_ref()
        .map(|annotations| annotations.labels.clone().into_iter().collect())
        .unwrap_or_default();
    let config_from = match &spec.config_from {
        Some(api::network_spec::ConfigFrom::Network(name)) => name.clone(),
        None => String::new(),
    };
    let containers: serde_json::Map<String, Value> = attachments
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
        "Name": name_of(network),
        "Id": network.id,
        "Created": rfc3339_nano(network.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        "Scope": SCOPE,
        "Driver": driver_of(network),
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

/// What `network prune` prints of the networks it removed.
pub(crate) fn prune_report(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut text = "Deleted Networks:\n".to_owned();
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// docker's prune prompt; true when the answer is yes.
fn confirm_prune() -> anyhow::Result<bool> {
    print!(
        "WARNING! This will remove all custom networks not used by at least one service.\nAre you sure you want to continue? [y/N] "
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub(crate) async fn run(host: &str, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create {
            driver,
            subnets,
            gateways,
            ip_ranges,
            attachable,
            internal,
            ingress,
            ipv6,
            options,
            labels,
            name,
        } => {
            let spec = create_spec(CreateFlags {
                name,
                driver,
                subnets,
                gateways,
                ip_ranges,
                attachable,
                internal,
                ingress,
                ipv6,
                options,
                labels,
            })?;
            let mut daemon = Daemon::connect(host).await?;
            let network = daemon
                .control
                .create_network(api::CreateNetworkRequest { spec: Some(spec) })
                .await
                .map_err(api_error)?
                .into_inner()
                .network
                .unwrap_or_default();
            println!("{}", network.id);
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            format,
            filters,
        } => {
            let json = crate::output::json_format(format)?;
            let mut daemon = Daemon::connect(host).await?;
            let networks = daemon
                .control
                .list_networks(api::ListNetworksRequest { filters })
                .await
                .map_err(api_error)?
                .into_inner()
                .networks;
            print_rows(&rows(networks, no_trunc), &NETWORK_HEADER, quiet, json);
        }
        NetworkCommand::Inspect { names } => {
            let mut daemon = Daemon::connect(host).await?;
            let mut documents = Vec::new();
            for name in names {
                let network = daemon
                    .control
                    .get_network(api::GetNetworkRequest {
                        network: name.clone(),
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner()
                    .network
                    .ok_or_else(|| anyhow::anyhow!("the daemon returned no network for {name}"))?;
                let attachments = daemon
                    .swarm
                    .network_attachments(api::NetworkAttachmentsRequest {
                        network_id: network.id.clone(),
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner();
                documents.push(inspect_json(&network, &attachments));
            }
            println!(
                "{}",
                crate::service::format::pretty_json(&Value::Array(documents))?
            );
        }
        NetworkCommand::Rm { names } => {
            let mut daemon = Daemon::connect(host).await?;
            let mut failed = Vec::new();
            for name in names {
                let removed = daemon
                    .control
                    .remove_network(api::RemoveNetworkRequest {
                        network: name.clone(),
                    })
                    .await;
                match removed {
                    Ok(_) => println!("{name}"),
                    Err(status) => failed.push(format!("{name}: {}", status.message())),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("\n"));
            }
        }
        NetworkCommand::Prune { force, filters } => {
            if !force && !confirm_prune()? {
                return Ok(());
            }
            let mut daemon = Daemon::connect(host).await?;
            let removed = daemon
                .control
                .prune_networks(api::PruneNetworksRequest { filters })
                .await
                .map_err(api_error)?
                .into_inner()
                .networks_deleted;
            print!("{}", prune_report(&removed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(subnets: &[&str], gateways: &[&str], ranges: &[&str]) -> CreateFlags {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        CreateFlags {
            name: "backend".into(),
            driver: "overlay".into(),
            subnets: owned(subnets),
            gateways: owned(gateways),
            ip_ranges: owned(ranges),
            options: vec![
                "encrypted".into(),
                "com.docker.network.driver.mtu=1400".into(),
            ],
            labels: vec!["tier=db".into()],
            ..Default::default()
        }
    }

    #[test]
    fn an_ingress_network_is_marked_and_never_attachable() {
        let ingress = |attachable| CreateFlags {
            ingress: true,
            attachable,
            ..flags(&[], &[], &[])
        };
        assert!(create_spec(ingress(false)).unwrap().ingress);
        assert!(
            create_spec(ingress(true))
                .unwrap_err()
                .to_string()
                .contains("leave out --attachable")
        );
    }

    #[test]
    fn create_pairs_gateways_and_ranges_with_their_subnets() {
        let spec = create_spec(flags(
            &["10.1.0.0/24", "10.2.0.0/16"],
            &["10.2.0.1", "10.1.0.254"],
            &["10.2.5.0/24"],
        ))
        .unwrap();
        let configs = &spec.ipam.as_ref().unwrap().configs;
        assert_eq!(
            configs
                .iter()
                .map(|c| format!("{} {} {}", c.subnet, c.gateway, c.range))
                .collect::<Vec<_>>(),
            [
                "10.1.0.0/24 10.1.0.254 ",
                "10.2.0.0/16 10.2.0.1 10.2.5.0/24"
            ]
        );
        let driver = spec.driver_config.as_ref().unwrap();
        assert_eq!(driver.options["encrypted"], "");
        assert_eq!(driver.options["com.docker.network.driver.mtu"], "1400");
        assert_eq!(spec.annotations.as_ref().unwrap().labels["tier"], "db");
        assert!(create_spec(flags(&[], &[], &[])).unwrap().ipam.is_none());
    }

    #[test]
    fn create_refuses_what_spec_refuses_before_calling_the_daemon() {
        let message = |flags| create_spec(flags).unwrap_err().to_string();
        assert!(message(flags(&[], &["10.1.0.1"], &[])).contains("needs a subnet"));
        assert!(message(flags(&["10.1.0.0/24"], &["10.9.0.1"], &[])).contains("not inside subnet"));
        assert!(
            message(flags(&["10.1.0.0/24", "10.2.0.0/24"], &["10.9.0.1"], &[]))
                .contains("in none of the subnets")
        );
        assert!(message(flags(&["10.1.0.0/33"], &[], &[])).contains("--subnet: invalid subnet"));
        let mut bridge = flags(&[], &[], &[]);
        bridge.driver = "bridge".into();
        assert!(message(bridge).contains("use the overlay driver"));
        let mut typo = flags(&[], &[], &[]);
        typo.options = vec!["encrpyted".into()];
        assert!(message(typo).contains("unknown network option"));
    }

    fn allocated_network() -> api::Network {
        api::Network {
            id: "0123456789abcdef0123".into(),
            meta: Some(api::Meta {
                created_at: Some(api::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(create_spec(flags(&["10.1.0.0/24"], &[], &["10.1.0.128/25"])).unwrap()),
            driver_state: Some(api::Driver {
                name: "overlay".into(),
                options: [(
                    "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
                    "4097".to_owned(),
                )]
                .into(),
            }),
            ipam: Some(api::IpamOptions {
                driver: None,
                configs: vec![api::IpamConfig {
                    subnet: "10.1.0.0/24".into(),
                    gateway: "10.1.0.1".into(),
                    range: "10.1.0.128/25".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ls_shows_dockers_columns() {
        let row = &rows(vec![allocated_network()], false)[0];
        assert_eq!(row.cells(), ["0123456789ab", "backend", "overlay", "swarm"]);
        assert_eq!(row.json()["Labels"], "tier=db");
        assert_eq!(row.json()["Scope"], "swarm");
        assert_eq!(
            rows(vec![allocated_network()], true)[0].id(),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn inspect_follows_dockers_network_resource() {
        let known = api::NetworkAttachmentsResponse {
            endpoints: vec![api::network_attachments_response::Endpoint {
                container_id: "c0ffee".into(),
                name: "web.1.t1".into(),
                endpoint_id: "t1".into(),
                mac_address: "02:42:0a:01:00:05".into(),
                ipv4_address: "10.1.0.5/24".into(),
            }],
            peers: vec![api::network_attachments_response::Peer {
                name: "node1".into(),
                ip: "192.0.2.1".into(),
            }],
        };
        let document = inspect_json(&allocated_network(), &known);
        assert_eq!(document["Name"], "backend");
        assert_eq!(document["Id"], "0123456789abcdef0123");
        assert_eq!(document["Created"], "2023-11-14T22:13:20Z");
        assert_eq!(document["Scope"], "swarm");
        assert_eq!(document["Driver"], "overlay");
        assert_eq!(
            document["IPAM"],
            json!({
                "Driver": "default",
                "Options": null,
                "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1", "IPRange": "10.1.0.128/25"}],
            })
        );
        assert_eq!(
            document["Options"],
            json!({
                "com.docker.network.driver.mtu": "1400",
                "com.docker.network.driver.overlay.vxlanid_list": "4097",
                "encrypted": "",
            })
        );
        assert_eq!(document["Labels"], json!({"tier": "db"}));
        assert_eq!(
            document["Containers"],
            json!({"c0ffee": {
                "Name": "web.1.t1",
                "EndpointID": "t1",
                "MacAddress": "02:42:0a:01:00:05",
                "IPv4Address": "10.1.0.5/24",
                "IPv6Address": "",
            }})
        );
        assert_eq!(
            document["Peers"],
            json!([{"Name": "node1", "IP": "192.0.2.1"}])
        );
        // Before allocation, IPAM shows what was asked for.
        let mut unallocated = allocated_network();
        unallocated.ipam = None;
        assert_eq!(
            inspect_json(&unallocated, &api::NetworkAttachmentsResponse::default())["IPAM"]["Config"],
            json!([{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25"}])
        );
        assert_eq!(prune_report(&[]), "");
        assert_eq!(
            prune_report(&["a".into(), "b".into()]),
            "Deleted Networks:\na\nb\n"
        );
    }
}

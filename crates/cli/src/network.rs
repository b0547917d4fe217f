//! `shoal network`: create, ls, inspect, rm and prune, as the docker CLI has them for swarm
//! networks. The spec a create sends is built and checked here with spec's rules (the manager
//! checks again); rows are built by pure functions here, inspect documents by `docker_api::shape`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};

use clap::Subcommand;
use docker_api::shape::network::{SCOPE, driver_name, network_json};
use serde_json::{Value, json};
use shoal_proto::api;
use spec::network::Subnet;

use crate::client::{Daemon, api_error};
use crate::service::format::{ListRow, go_time_string, print_rows, truncate_id};

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

/// One line of `network ls`.
pub(crate) struct NetworkRow {
    network: api::Network,
    no_trunc: bool,
}

const NETWORK_HEADER: [&str; 4] = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];

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
            driver_name(&self.network),
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
            "Driver": driver_name(&self.network),
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
                documents.push(network_json(&network, Some(&attachments)));
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
    fn prune_reports_the_removed_networks() {
        assert_eq!(prune_report(&[]), "");
        assert_eq!(
            prune_report(&["a".into(), "b".into()]),
            "Deleted Networks:\na\nb\n"
        );
    }

    /// Docker's CLI and `shoal network create` ask for the same network the same way.
    #[test]
    fn dockers_create_request_reads_as_the_flags_make_it() {
        // `docker network create -d overlay --subnet 10.1.0.0/24 --gateway 10.1.0.1
        // --ip-range 10.1.0.128/25 -o encrypted -o com.docker.network.driver.mtu=1400
        // --label tier=db backend`.
        let body = json!({
            "Name": "backend", "Driver": "overlay", "Scope": "",
            "IPAM": {"Driver": "default", "Options": {}, "Config": [
                {"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25", "Gateway": "10.1.0.1"},
            ]},
            "Internal": false, "Attachable": false, "Ingress": false, "ConfigOnly": false,
            "Options": {"encrypted": "", "com.docker.network.driver.mtu": "1400"},
            "Labels": {"tier": "db"},
        });
        assert_eq!(
            docker_api::shape::network::network_spec_from_json(&body).ok(),
            create_spec(flags(&["10.1.0.0/24"], &["10.1.0.1"], &["10.1.0.128/25"])).ok()
        );
        // `docker network create -d overlay --attachable --internal front`.
        let body = json!({
            "Name": "front", "Driver": "overlay", "Scope": "",
            "IPAM": {"Driver": "default", "Options": {}, "Config": []},
            "Internal": true, "Attachable": true, "Ingress": false, "ConfigOnly": false,
            "Options": {}, "Labels": {},
        });
        let flags = CreateFlags {
            name: "front".into(),
            driver: "overlay".into(),
            attachable: true,
            internal: true,
            ..Default::default()
        };
        assert_eq!(
            docker_api::shape::network::network_spec_from_json(&body).ok(),
            create_spec(flags).ok()
        );
    }
}

//! `shoal stack`: compose files deployed as stacks. The compose crate turns the files into specs
//! on this side (this module reads the files and the environment it needs); the manager applies a
//! deploy as one transaction and keeps the stack's revisions. The commands print what changed in
//! docker's words.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Subcommand};
use compose::convert;
use serde_json::json;
use shoal_proto::api::{self, stack_change::Action};
use spec::validate::PayloadKind;

use crate::client::{Daemon, api_error};
use crate::service::{self, format};

#[derive(Subcommand)]
pub(crate) enum StackCommand {
    /// Deploys a new stack or updates an existing one from compose files.
    #[command(alias = "up")]
    Deploy {
        /// A compose file, or - for stdin (repeatable; later files override earlier ones).
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_files: Vec<String>,
        /// Removes the stack's services that are no longer in the files.
        #[arg(long)]
        prune: bool,
        /// Checks images on this node: always, changed (new or changed services only) or never.
        #[arg(long, default_value = "always")]
        resolve_image: String,
        /// Exits once the stack is written; --detach=false waits for every service to converge.
        #[arg(short = 'd', long, action = ArgAction::Set, num_args = 0..=1,
              default_value_t = true, default_missing_value = "true", require_equals = true)]
        detach: bool,
        /// Suppresses progress output.
        #[arg(short = 'q', long)]
        quiet: bool,
        stack: String,
    },
    /// Lists stacks.
    #[command(alias = "list")]
    Ls {
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Lists the tasks of a stack.
    Ps {
        stack: String,
        #[command(flatten)]
        listing: service::TaskListArgs,
    },
    /// Lists the services of a stack.
    Services {
        stack: String,
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Removes stacks: their services, secrets, configs and networks.
    #[command(aliases = ["remove", "down"])]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
    /// Deploys the stack's previous revision again.
    Rollback {
        stack: String,
        /// Exits once the stack is written; --detach=false waits for every service to converge.
        #[arg(short = 'd', long, action = ArgAction::Set, num_args = 0..=1,
              default_value_t = true, default_missing_value = "true", require_equals = true)]
        detach: bool,
        /// Suppresses progress output.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Prints the merged, interpolated and checked compose files (needs no daemon).
    Config {
        /// A compose file, or - for stdin (repeatable; later files override earlier ones).
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_files: Vec<String>,
        /// Leaves ${VAR} references as written.
        #[arg(long)]
        skip_interpolation: bool,
    },
}

/// How `stack deploy` checks images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResolveImage {
    Always,
    Changed,
    Never,
}

fn parse_resolve_image(text: &str) -> anyhow::Result<ResolveImage> {
    match text {
        "always" => Ok(ResolveImage::Always),
        "changed" => Ok(ResolveImage::Changed),
        "never" => Ok(ResolveImage::Never),
        _ => bail!("--resolve-image: invalid value {text:?}: use always, changed or never"),
    }
}

pub(crate) async fn run(host: &str, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Config {
            compose_files,
            skip_interpolation,
        } => {
            let loaded = read_project(&compose_files, skip_interpolation)?;
            print!("{}", compose::emit::to_yaml(&loaded.project));
            Ok(())
        }
        StackCommand::Deploy {
            compose_files,
            prune,
            resolve_image,
            detach,
            quiet,
            stack,
        } => {
            // Everything about the files is checked before anything is sent.
            let resolve_image = parse_resolve_image(&resolve_image)?;
            let (request, external_networks) = deploy_request(&compose_files, &stack, prune)?;
            let mut daemon = Daemon::connect(host).await?;
            check_external_networks(&mut daemon, &external_networks).await?;
            check_images(&mut daemon, &request, resolve_image).await?;
            let response = daemon
                .control
                .deploy_stack(request)
                .await
                .map_err(api_error)?
                .into_inner();
            print_changes(&response.changes);
            if !detach {
                wait_for_stack(&mut daemon, &response.changes, quiet).await?;
            }
            Ok(())
        }
        StackCommand::Ls { format } => {
            let json = crate::output::json_format(format)?;
            ls(&mut Daemon::connect(host).await?, json).await
        }
        StackCommand::Ps { stack, listing } => {
            let listing = listing.check()?;
            let mut daemon = Daemon::connect(host).await?;
            let services = stack_services(&mut daemon, &stack).await?;
            let ids = services.iter().map(|service| service.id.clone()).collect();
            service::ps(&mut daemon, ids, listing).await
        }
        StackCommand::Services {
            stack,
            quiet,
            format,
        } => {
            let json = crate::output::json_format(format)?;
            let mut daemon = Daemon::connect(host).await?;
            let response = daemon
                .control
                .list_services(api::ListServicesRequest {})
                .await
                .map_err(api_error)?
                .into_inner();
            let (services, statuses): (Vec<api::Service>, Vec<api::ServiceStatus>) = response
                .services
                .into_iter()
                .zip(response.statuses)
                .filter(|(service, _)| in_stack(service, &stack))
                .unzip();
            if services.is_empty() {
                bail!("nothing found in stack: {stack}; see 'shoal stack ls'");
            }
            let rows = format::service_rows(&services, &statuses);
            format::print_rows(&rows, &format::SERVICE_HEADER, quiet, json);
            Ok(())
        }
        StackCommand::Rm { stacks } => {
            let mut daemon = Daemon::connect(host).await?;
            let mut errors = Vec::new();
            for stack in stacks {
                match daemon
                    .control
                    .remove_stack(api::RemoveStackRequest {
                        name: stack.clone(),
                    })
                    .await
                {
                    Ok(response) => print_changes(&response.into_inner().changes),
                    Err(status) => errors.push(format!("{stack}: {:#}", api_error(status))),
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                bail!("{}", errors.join("\n"))
            }
        }
        StackCommand::Rollback {
            stack,
            detach,
            quiet,
        } => {
            let mut daemon = Daemon::connect(host).await?;
            let response = daemon
                .control
                .rollback_stack(api::RollbackStackRequest { name: stack })
                .await
                .map_err(api_error)?
                .into_inner();
            print_changes(&response.changes);
            if !detach {
                wait_for_stack(&mut daemon, &response.changes, quiet).await?;
            }
            Ok(())
        }
    }
}

/// Reads the compose files (`-` is standard input), the `.env` file next to the first one and the
/// process environment, and loads them; prints the warnings on stderr.
fn read_project(files: &[String], skip_interpolation: bool) -> anyhow::Result<compose::Loaded> {
    use std::io::Read;

    let mut sources = Vec::new();
    for name in files {
        let text = if name == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        } else {
            std::fs::read_to_string(name)
                .map_err(|e| anyhow::anyhow!("cannot read compose file {name}: {e}"))?
        };
        sources.push(compose::SourceFile {
            name: if name == "-" {
                "<stdin>".to_owned()
            } else {
                name.clone()
            },
            text,
        });
    }
    let first = files.first().map(String::as_str).unwrap_or("-");
    let base_dir = if first == "-" {
        std::env::current_dir()?
    } else {
        let absolute = std::path::absolute(first)?;
        absolute
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    let dotenv_path = base_dir.join(".env");
    let dotenv = if dotenv_path.is_file() {
        Some(compose::SourceFile {
            name: dotenv_path.display().to_string(),
            text: std::fs::read_to_string(&dotenv_path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dotenv_path.display()))?,
        })
    } else {
        None
    };
    let env = compose::environment(dotenv.as_ref(), std::env::vars())?;
    let loaded = compose::load(
        &sources,
        &env,
        &compose::LoadOptions {
            interpolate: !skip_interpolation,
            base_dir: base_dir.display().to_string(),
            sources: &|path: &str| std::fs::read_to_string(path),
        },
    )?;
    for warning in &loaded.warnings {
        eprintln!("WARNING: {warning}");
    }
    Ok(loaded)
}

/// Checks that the external networks the stack's services use exist, as docker's deploy does
/// before it changes anything.
async fn check_external_networks(
    daemon: &mut Daemon,
    names: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    for name in names {
        let found = daemon
            .control
            .get_network(api::GetNetworkRequest {
                network: name.clone(),
            })
            .await;
        match found {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => anyhow::bail!(
                "network {name:?} is declared as external, but could not be found: create it first with 'shoal network create -d overlay {name}'"
            ),
            Err(status) => return Err(api_error(status)),
        }
    }
    Ok(())
}

/// Loads and converts the compose files, and reads the secret and config files the stack
/// creates (each at most 500 KiB). Also returns the external networks the services use.
fn deploy_request(
    files: &[String],
    stack: &str,
    prune: bool,
) -> anyhow::Result<(api::DeployStackRequest, std::collections::BTreeSet<String>)> {
    let loaded = read_project(files, false)?;
    let specs = convert::to_specs(stack, &loaded.project);
    let external_networks = specs.external_networks.clone();
    let mut secrets = Vec::new();
    for (name, path) in &specs.secret_files {
        secrets.push(api::SecretSpec {
            annotations: Some(annotations(name)),
            data: read_payload_file(PayloadKind::Secret, name, path)?,
            ..Default::default()
        });
    }
    let mut configs = Vec::new();
    for (name, path) in &specs.config_files {
        configs.push(api::ConfigSpec {
            annotations: Some(annotations(name)),
            data: read_payload_file(PayloadKind::Config, name, path)?,
            ..Default::default()
        });
    }
    let request = api::DeployStackRequest {
        spec: Some(api::StackSpec {
            annotations: Some(annotations(stack)),
            compose: compose::emit::to_yaml(&loaded.project),
            services: specs.services.into_values().collect(),
            networks: specs.networks.into_values().collect(),
            secrets: specs.secret_files.into_keys().collect(),
            configs: specs.config_files.into_keys().collect(),
        }),
        secrets,
        configs,
        prune,
    };
    Ok((request, external_networks))
}

/// A secret's or config's file, refused by its size before it is read when spec's limit (the
/// manager's) would refuse it.
fn read_payload_file(kind: PayloadKind, name: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let unreadable = || format!("{} {name}: cannot read its file {path}", kind.noun());
    let size = std::fs::metadata(path).with_context(unreadable)?.len();
    spec::validate::payload_size(kind, name, size)
        .with_context(|| format!("{path} is too large"))?;
    std::fs::read(path).with_context(unreadable)
}

fn annotations(name: &str) -> api::Annotations {
    api::Annotations {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn image_of(spec: &api::ServiceSpec) -> &str {
    format::container(spec.task.as_ref()).map_or("", |container| container.image.as_str())
}

/// Checks that the images the deploy needs are on this node, as `service create` does; with
/// `changed`, only for services that are new or change image.
async fn check_images(
    daemon: &mut Daemon,
    request: &api::DeployStackRequest,
    mode: ResolveImage,
) -> anyhow::Result<()> {
    if mode == ResolveImage::Never {
        return Ok(());
    }
    let current: BTreeMap<String, String> = if mode == ResolveImage::Changed {
        daemon
            .control
            .list_services(api::ListServicesRequest {})
            .await
            .map_err(api_error)?
            .into_inner()
            .services
            .iter()
            .filter_map(|service| {
                let spec = service.spec.as_ref()?;
                Some((
                    format::service_name(service).to_owned(),
                    image_of(spec).to_owned(),
                ))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut images = BTreeSet::new();
    for spec in request.spec.iter().flat_map(|spec| &spec.services) {
        let name = spec.annotations.as_ref().map_or("", |a| a.name.as_str());
        let image = image_of(spec);
        if mode == ResolveImage::Always || current.get(name).map(String::as_str) != Some(image) {
            images.insert(image.to_owned());
        }
    }
    for image in images {
        service::resolve_image(daemon, &image).await?;
    }
    Ok(())
}

fn action_verb(action: Action) -> Option<&'static str> {
    match action {
        Action::Create => Some("Creating"),
        Action::Update => Some("Updating"),
        Action::Remove => Some("Removing"),
        Action::Unchanged => None,
    }
}

/// Prints what changed, in docker's words; unchanged objects go unmentioned.
fn print_changes(changes: &[api::StackChange]) {
    for change in changes {
        let Some(verb) = action_verb(change.action()) else {
            continue;
        };
        if change.action() == Action::Update {
            println!("{verb} {} {} (id: {})", change.kind, change.name, change.id);
        } else {
            println!("{verb} {} {}", change.kind, change.name);
        }
    }
}

/// Waits for every service the deploy kept to converge, one after the other, with the progress
/// display of `service create`.
async fn wait_for_stack(
    daemon: &mut Daemon,
    changes: &[api::StackChange],
    quiet: bool,
) -> anyhow::Result<()> {
    for change in changes
        .iter()
        .filter(|change| change.kind == "service" && change.action() != Action::Remove)
    {
        if !quiet {
            println!("{}", change.name);
        }
        service::wait_for_service(
            &mut daemon.control,
            &change.id,
            quiet,
            service::progress::Expecting::Update,
        )
        .await
        .with_context(|| format!("stack service {} did not converge", change.name))?;
    }
    Ok(())
}

fn in_stack(service: &api::Service, stack: &str) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .and_then(|annotations| annotations.labels.get(convert::NAMESPACE_LABEL))
        .is_some_and(|namespace| namespace == stack)
}

async fn stack_services(daemon: &mut Daemon, stack: &str) -> anyhow::Result<Vec<api::Service>> {
    let services: Vec<api::Service> = daemon
        .control
        .list_services(api::ListServicesRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .services
        .into_iter()
        .filter(|service| in_stack(service, stack))
        .collect();
    if services.is_empty() {
        bail!("nothing found in stack: {stack}; see 'shoal stack ls'");
    }
    Ok(services)
}

/// `stack ls`: each stack with how many services it has.
async fn ls(daemon: &mut Daemon, json: bool) -> anyhow::Result<()> {
    let stacks = daemon
        .control
        .list_stacks(api::ListStacksRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .stacks;
    let services = daemon
        .control
        .list_services(api::ListServicesRequest {})
        .await
        .map_err(api_error)?
        .into_inner()
        .services;
    let mut names: Vec<String> = stacks
        .iter()
        .filter_map(|stack| Some(stack.spec.as_ref()?.annotations.as_ref()?.name.clone()))
        .collect();
    names.sort();
    let rows: Vec<(String, usize)> = names
        .into_iter()
        .map(|name| {
            let count = services.iter().filter(|s| in_stack(s, &name)).count();
            (name, count)
        })
        .collect();
    if json {
        for (name, count) in &rows {
            println!("{}", json!({"Name": name, "Services": count.to_string()}));
        }
    } else {
        print!("{}", stack_table(&rows));
    }
    Ok(())
}

/// `stack ls`'s table, padded as every list's (docker's tabwriter).
fn stack_table(rows: &[(String, usize)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, count)| vec![name.clone(), count.to_string()])
        .collect();
    format::table(&["NAME", "SERVICES"], &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stack ls` pads its columns as every other list does (issue 13: tables differed in
    /// their minimum column width).
    #[test]
    fn stack_ls_pads_as_every_list() {
        assert_eq!(
            stack_table(&[("app".to_owned(), 2)]),
            format::table(&["NAME", "SERVICES"], &[vec!["app".into(), "2".into()]])
        );
        assert_eq!(
            stack_table(&[("app".to_owned(), 2)]),
            "NAME      SERVICES\napp       2\n"
        );
    }

    /// A stack's secret file over the limit is refused before it is read, with the message the
    /// manager gives a secret of that size (issue 13: the 500 KiB limit was written twice).
    #[test]
    fn payload_files_over_specs_limit_are_refused_as_the_manager_refuses_them() {
        let dir = std::env::temp_dir().join(format!("shoal-stack-payload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let limit = spec::validate::MAX_PAYLOAD_BYTES;
        let (fits, over) = (dir.join("fits"), dir.join("over"));
        std::fs::write(&fits, vec![b'x'; limit]).expect("fits");
        std::fs::write(&over, vec![b'x'; limit + 1]).expect("over");
        let read = |path: &std::path::Path| {
            read_payload_file(PayloadKind::Secret, "big", &path.display().to_string())
        };
        let (read_fits, read_over) = (read(&fits), read(&over));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read_fits.map(|data| data.len()).ok(), Some(limit));
        let manager = spec::validate::payload(PayloadKind::Secret, "big", &vec![b'x'; limit + 1])
            .unwrap_err()
            .to_string();
        let refused = read_over
            .map(|_| ())
            .map_err(|error| error.root_cause().to_string());
        assert_eq!(refused, Err(manager));
    }
}

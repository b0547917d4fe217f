//! `shoal secret` and `shoal config`: create, ls, inspect and rm, as the docker CLI has them.
//! Both kinds share one command shape; what differs (a secret's data is never shown, a config's
//! is) is decided by the manager and by [`Kind`]. Rows and pretty text are built by pure functions
//! here, inspect documents by `docker_api::shape`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::Subcommand;
use docker_api::shape::payload as shape;
use serde_json::{Value, json};
use shoal_proto::api;

use crate::client::{Daemon, api_error};
use crate::service::format::{ListRow, print_rows, rfc3339_nano, system_time};

#[derive(Subcommand)]
pub(crate) enum PayloadCommand {
    /// Creates one from a file, or from standard input with `-`.
    Create {
        /// A label, key=value (repeatable).
        #[arg(short = 'l', long = "label")]
        labels: Vec<String>,
        name: String,
        file: PathBuf,
    },
    /// Lists them.
    #[command(alias = "list")]
    Ls {
        /// Prints only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// `json` prints one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Shows them in detail, as JSON.
    Inspect {
        /// Prints a human-readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes them; refused while a service uses one.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Secrets or configs: spec's kinds, whose nouns its messages use.
pub(crate) use spec::validate::PayloadKind as Kind;

/// A secret or a config as the CLI shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PayloadView {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
    created: Option<api::Timestamp>,
    updated: Option<api::Timestamp>,
    /// Configs only; the manager never returns a secret's data.
    data: Option<Vec<u8>>,
}

fn view(
    id: String,
    meta: Option<api::Meta>,
    annotations: Option<api::Annotations>,
    data: Option<Vec<u8>>,
) -> PayloadView {
    let meta = meta.unwrap_or_default();
    let annotations = annotations.unwrap_or_default();
    PayloadView {
        id,
        name: annotations.name,
        labels: annotations.labels.into_iter().collect(),
        created: meta.created_at,
        updated: meta.updated_at,
        data,
    }
}

impl From<api::Secret> for PayloadView {
    fn from(secret: api::Secret) -> Self {
        let spec = secret.spec.unwrap_or_default();
        view(secret.id, secret.meta, spec.annotations, None)
    }
}

impl From<api::Config> for PayloadView {
    fn from(config: api::Config) -> Self {
        let spec = config.spec.unwrap_or_default();
        view(config.id, config.meta, spec.annotations, Some(spec.data))
    }
}

/// "2 minutes ago", as docker's lists say when something happened.
pub(crate) fn ago(timestamp: Option<&api::Timestamp>, now: SystemTime) -> String {
    let since = system_time(timestamp)
        .and_then(|time| now.duration_since(time).ok())
        .unwrap_or_default();
    spec::human::ago(since)
}

/// One line of `secret ls` or `config ls`.
pub(crate) struct PayloadRow {
    kind: Kind,
    view: PayloadView,
    now: SystemTime,
}

const SECRET_HEADER: [&str; 5] = ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"];
const CONFIG_HEADER: [&str; 4] = ["ID", "NAME", "CREATED", "UPDATED"];

impl ListRow for PayloadRow {
    fn id(&self) -> &str {
        &self.view.id
    }

    fn cells(&self) -> Vec<String> {
        let mut cells = vec![self.view.id.clone(), self.view.name.clone()];
        if self.kind == Kind::Secret {
            cells.push(String::new());
        }
        cells.push(ago(self.view.created.as_ref(), self.now));
        cells.push(ago(self.view.updated.as_ref(), self.now));
        cells
    }

    fn json(&self) -> Value {
        let mut object = json!({
            "ID": self.view.id,
            "Name": self.view.name,
            "CreatedAt": rfc3339_nano(self.view.created.as_ref()),
            "UpdatedAt": rfc3339_nano(self.view.updated.as_ref()),
            "Labels": self.view.labels,
        });
        if self.kind == Kind::Secret {
            object["Driver"] = json!("");
        }
        object
    }
}

/// Rows sorted by name, as docker lists them.
pub(crate) fn rows(kind: Kind, mut views: Vec<PayloadView>, now: SystemTime) -> Vec<PayloadRow> {
    views.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    views
        .into_iter()
        .map(|view| PayloadRow { kind, view, now })
        .collect()
}

/// `inspect --pretty`.
pub(crate) fn inspect_pretty(view: &PayloadView) -> String {
    let mut text = format!(
        "ID:              {}\nName:            {}\n",
        view.id, view.name
    );
    if !view.labels.is_empty() {
        text.push_str("Labels:\n");
        for (key, value) in &view.labels {
            text.push_str(&format!(" - {key}={value}\n"));
        }
    }
    text.push_str(&format!(
        "Created at:      {}\nUpdated at:      {}\n",
        rfc3339_nano(view.created.as_ref()),
        rfc3339_nano(view.updated.as_ref())
    ));
    if let Some(data) = &view.data {
        text.push_str(&format!("Data:\n{}\n", String::from_utf8_lossy(data)));
    }
    text
}

/// The labels of `--label key=value` flags.
fn parse_labels(labels: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    labels
        .iter()
        .map(|label| {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            if key.is_empty() {
                anyhow::bail!("--label: invalid label {label:?}: use key=value");
            }
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

fn read_data(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|error| anyhow::anyhow!("reading standard input: {error}"))?;
        return Ok(data);
    }
    std::fs::read(file).map_err(|error| anyhow::anyhow!("reading {}: {error}", file.display()))
}

async fn list(daemon: &mut Daemon, kind: Kind) -> anyhow::Result<Vec<PayloadView>> {
    Ok(match kind {
        Kind::Secret => daemon
            .control
            .list_secrets(api::ListSecretsRequest {})
            .await
            .map_err(api_error)?
            .into_inner()
            .secrets
            .into_iter()
            .map(PayloadView::from)
            .collect(),
        Kind::Config => daemon
            .control
            .list_configs(api::ListConfigsRequest {})
            .await
            .map_err(api_error)?
            .into_inner()
            .configs
            .into_iter()
            .map(PayloadView::from)
            .collect(),
    })
}

/// One secret or config: what `inspect --pretty` shows, and the document `inspect` prints in
/// Docker's shape.
async fn get(
    daemon: &mut Daemon,
    kind: Kind,
    reference: String,
) -> anyhow::Result<(PayloadView, Value)> {
    let missing = || anyhow::anyhow!("the daemon returned no {} for {reference}", kind.noun());
    Ok(match kind {
        Kind::Secret => {
            let secret = daemon
                .control
                .get_secret(api::GetSecretRequest {
                    secret: reference.clone(),
                })
                .await
                .map_err(api_error)?
                .into_inner()
                .secret
                .ok_or_else(missing)?;
            let document = shape::secret_json(&secret);
            (secret.into(), document)
        }
        Kind::Config => {
            let config = daemon
                .control
                .get_config(api::GetConfigRequest {
                    config: reference.clone(),
                })
                .await
                .map_err(api_error)?
                .into_inner()
                .config
                .ok_or_else(missing)?;
            let document = shape::config_json(&config);
            (config.into(), document)
        }
    })
}

pub(crate) async fn run(host: &str, kind: Kind, command: PayloadCommand) -> anyhow::Result<()> {
    if let PayloadCommand::Ls { format, .. } = &command {
        crate::output::json_format(format.clone())?;
    }
    match command {
        PayloadCommand::Create { labels, name, file } => {
            let labels = parse_labels(&labels)?;
            let data = read_data(&file)?;
            let annotations = Some(api::Annotations {
                name,
                labels,
                ..Default::default()
            });
            let mut daemon = Daemon::connect(host).await?;
            let id = match kind {
                Kind::Secret => daemon
                    .control
                    .create_secret(api::CreateSecretRequest {
                        spec: Some(api::SecretSpec {
                            annotations,
                            data,
                            ..Default::default()
                        }),
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner()
                    .secret
                    .map(|secret| secret.id),
                Kind::Config => daemon
                    .control
                    .create_config(api::CreateConfigRequest {
                        spec: Some(api::ConfigSpec {
                            annotations,
                            data,
                            ..Default::default()
                        }),
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner()
                    .config
                    .map(|config| config.id),
            };
            println!("{}", id.unwrap_or_default());
        }
        PayloadCommand::Ls { quiet, format } => {
            let json = crate::output::json_format(format)?;
            let mut daemon = Daemon::connect(host).await?;
            let rows = rows(kind, list(&mut daemon, kind).await?, SystemTime::now());
            match kind {
                Kind::Secret => print_rows(&rows, &SECRET_HEADER, quiet, json),
                Kind::Config => print_rows(&rows, &CONFIG_HEADER, quiet, json),
            }
        }
        PayloadCommand::Inspect { pretty, names } => {
            let mut daemon = Daemon::connect(host).await?;
            let mut views = Vec::new();
            let mut documents = Vec::new();
            for name in names {
                let (view, document) = get(&mut daemon, kind, name).await?;
                views.push(view);
                documents.push(document);
            }
            if pretty {
                let pages: Vec<String> = views.iter().map(inspect_pretty).collect();
                print!("{}", pages.join("\n"));
            } else {
                println!(
                    "{}",
                    crate::service::format::pretty_json(&Value::Array(documents))?
                );
            }
        }
        PayloadCommand::Rm { names } => {
            let mut daemon = Daemon::connect(host).await?;
            let mut failed = Vec::new();
            for name in names {
                let removed = match kind {
                    Kind::Secret => daemon
                        .control
                        .remove_secret(api::RemoveSecretRequest {
                            secret: name.clone(),
                        })
                        .await
                        .map(drop),
                    Kind::Config => daemon
                        .control
                        .remove_config(api::RemoveConfigRequest {
                            config: name.clone(),
                        })
                        .await
                        .map(drop),
                };
                match removed {
                    Ok(()) => println!("{name}"),
                    Err(status) => failed.push(format!("{name}: {}", status.message())),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("\n"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: Option<&[u8]>) -> PayloadView {
        PayloadView {
            id: "abc123".into(),
            name: "db-password".into(),
            labels: BTreeMap::from([("tier".into(), "db".into())]),
            created: Some(api::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            updated: Some(api::Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            data: data.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn configs_show_their_data() {
        assert!(inspect_pretty(&sample(Some(b"port=80"))).contains("Data:\nport=80"));
        assert!(!inspect_pretty(&sample(None)).contains("Data:"));
    }

    #[test]
    fn lists_follow_dockers_columns() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_120);
        let secrets = rows(Kind::Secret, vec![sample(None)], now);
        assert_eq!(
            secrets[0].cells(),
            vec![
                "abc123",
                "db-password",
                "",
                "2 minutes ago",
                "About a minute ago"
            ]
        );
        assert_eq!(secrets[0].json()["Driver"], "");
        let configs = rows(Kind::Config, vec![sample(Some(b"x"))], now);
        assert_eq!(configs[0].cells().len(), CONFIG_HEADER.len());
        assert!(configs[0].json().get("Driver").is_none());
    }
}

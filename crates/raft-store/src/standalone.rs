//! A store member as a process of its own, for the multi-process tests and `raft-bench`: real
//! processes that can be killed with `kill -9`. Managers embed [`Store`](crate::Store) instead.
//!
//! Arguments: `--id N --data-dir DIR --listen IP:PORT --tls-dir DIR --data-key FILE
//! [--bootstrap ID=ADDR,...] [--snapshot-interval N]`. The TLS folder holds `ca.pem`,
//! `member-N.pem` and `member-N.key`; the data key file holds the 32 bytes of the member's
//! [`DataKey`], and must be the same at every start.
//! The process prints `ready` once it serves, and stops cleanly on SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::data_key::DataKey;
use crate::error::StoreError;
use crate::store::{Store, StoreConfig};
use crate::tls::TlsIdentity;
use crate::types::MemberId;

/// A member's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberArgs {
    pub id: MemberId,
    pub data_dir: PathBuf,
    pub listen: String,
    pub tls_dir: PathBuf,
    pub data_key_file: PathBuf,
    /// When set, this member founds the cluster with these voters (id to address).
    pub bootstrap: BTreeMap<MemberId, String>,
    pub snapshot_interval: Option<u64>,
}

impl MemberArgs {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let (mut id, mut data_dir, mut listen, mut tls_dir) = (None, None, None, None);
        let mut data_key_file = None;
        let (mut bootstrap, mut snapshot_interval) = (BTreeMap::new(), None);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--id" => id = Some(value()?.parse().map_err(|e| format!("--id: {e}"))?),
                "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
                "--listen" => listen = Some(value()?),
                "--tls-dir" => tls_dir = Some(PathBuf::from(value()?)),
                "--data-key" => data_key_file = Some(PathBuf::from(value()?)),
                "--snapshot-interval" => {
                    snapshot_interval = Some(
                        value()?
                            .parse()
                            .map_err(|e| format!("--snapshot-interval: {e}"))?,
                    )
                }
                "--bootstrap" => {
                    for member in value()?.split(',') {
                        let (member_id, addr) = member
                            .split_once('=')
                            .ok_or(format!("--bootstrap wants ID=ADDR pairs, got {member:?}"))?;
                        let member_id = member_id
                            .parse()
                            .map_err(|e| format!("--bootstrap id {member_id:?}: {e}"))?;
                        bootstrap.insert(member_id, addr.to_owned());
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(MemberArgs {
            id: id.ok_or("--id is required")?,
            data_dir: data_dir.ok_or("--data-dir is required")?,
            listen: listen.ok_or("--listen is required")?,
            tls_dir: tls_dir.ok_or("--tls-dir is required")?,
            data_key_file: data_key_file.ok_or("--data-key is required")?,
            bootstrap,
            snapshot_interval,
        })
    }
}

/// Reads `ca.pem`, `member-N.pem` and `member-N.key` from `dir`.
pub fn read_tls_dir(dir: &std::path::Path, member: MemberId) -> Result<TlsIdentity, StoreError> {
    let read = |name: String| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|error| StoreError::io(path, error))
    };
    Ok(TlsIdentity {
        ca_pem: read("ca.pem".to_owned())?,
        cert_pem: read(format!("member-{member}.pem"))?,
        key_pem: read(format!("member-{member}.key"))?,
    })
}

/// Reads a data key file: exactly the key's 32 bytes.
pub fn read_data_key_file(path: &std::path::Path) -> Result<DataKey, StoreError> {
    let bytes = std::fs::read(path).map_err(|error| StoreError::io(path, error))?;
    let bytes: [u8; DataKey::LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
        StoreError::io(
            path,
            format!(
                "a data key file holds {} bytes, not {}; give the file this member was first started with",
                bytes.len(),
                DataKey::LEN
            ),
        )
    })?;
    Ok(DataKey::from_bytes(bytes))
}

/// Runs a member until SIGTERM or SIGINT.
pub async fn run_member(args: MemberArgs) -> Result<(), StoreError> {
    let tls = read_tls_dir(&args.tls_dir, args.id)?;
    let data_key = read_data_key_file(&args.data_key_file)?;
    let mut config = StoreConfig::new(args.id, &args.data_dir, &args.listen, tls, data_key);
    if let Some(interval) = args.snapshot_interval {
        config.snapshot_interval = interval;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|error| {
            StoreError::io(&args.data_dir, format!("binding {}: {error}", args.listen))
        })?;
    let store = Store::open(config).await?;
    store.serve(listener)?;
    if !args.bootstrap.is_empty() {
        store.bootstrap_with(args.bootstrap.clone()).await?;
    }
    println!("ready");
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|error| StoreError::io(&args.data_dir, error))?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    store.shutdown().await
}

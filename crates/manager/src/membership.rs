//! What a node keeps on its own disk about its place in a swarm: its ids, role and addresses
//! (`state.json`) and its certificates, in `<data-root>/swarm/`, and on managers the Raft store
//! (`raft/`) and the data key that seals it (`raft-data-key.json`, see [`crate::data_key`]).
//! Files are replaced atomically (temporary file, fsync, rename), and the state file is written
//! last, so a node that crashed while joining has either a whole membership or none.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use raft_store::{DataKey, TlsIdentity};
use serde::{Deserialize, Serialize};

use crate::data_key::{StoredDataKey, UnlockKey, decode_data_key_file, encode_data_key_file};
use crate::error::ManagerError;

const STATE_FILE: &str = "state.json";
const CERTIFICATES_DIR: &str = "certificates";
const ROOT_CA_FILE: &str = "swarm-root-ca.crt";
const NODE_CERT_FILE: &str = "swarm-node.crt";
const NODE_KEY_FILE: &str = "swarm-node.key";
const RAFT_DIR: &str = "raft";
const DATA_KEY_FILE: &str = "raft-data-key.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipRole {
    Manager,
    Worker,
}

/// This node's membership, as `state.json` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub node_id: String,
    pub cluster_id: String,
    pub role: MembershipRole,
    /// The node's id in the managers' Raft group; 0 on workers.
    pub raft_member_id: u64,
    /// Where this node's cluster port listens (managers), as IP:PORT.
    pub listen_addr: String,
    /// Where other nodes reach this one, as IP:PORT.
    pub advertise_addr: String,
    /// Where this node reaches the managers' dispatcher.
    pub manager_addrs: Vec<String>,
}

/// The `swarm` folder of a data root.
#[derive(Clone, Debug)]
pub struct SwarmDir {
    root: PathBuf,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError {
    let path = path.to_path_buf();
    move |source| ManagerError::Io { what, path, source }
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the new one.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), ManagerError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io_error("creating", &temporary))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("replacing", path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("syncing", parent))?;
    }
    Ok(())
}

impl SwarmDir {
    pub fn new(data_root: &Path) -> SwarmDir {
        SwarmDir {
            root: data_root.join("swarm"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.root.join(RAFT_DIR)
    }

    fn certificates(&self) -> PathBuf {
        self.root.join(CERTIFICATES_DIR)
    }

    /// The node's membership and TLS identity; `None` when the node is in no swarm.
    pub fn load(&self) -> Result<Option<(Membership, TlsIdentity)>, ManagerError> {
        let state_path = self.root.join(STATE_FILE);
        let bytes = match fs::read(&state_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ManagerError::Io {
                    what: "reading",
                    path: state_path,
                    source,
                });
            }
        };
        let membership: Membership = serde_json::from_slice(&bytes).map_err(|error| {
            ManagerError::FailedPrecondition(format!(
                "{} is damaged ({error}): restore it from a backup, or leave the swarm by removing {} with the daemon stopped",
                state_path.display(),
                self.root.display()
            ))
        })?;
        let certificates = self.certificates();
        let read = |name: &str| {
            let path = certificates.join(name);
            fs::read(&path).map_err(io_error("reading", &path))
        };
        let identity = TlsIdentity {
            ca_pem: read(ROOT_CA_FILE)?,
            cert_pem: read(NODE_CERT_FILE)?,
            key_pem: read(NODE_KEY_FILE)?,
        };
        Ok(Some((membership, identity)))
    }

    /// Saves the certificates, then the membership.
    pub fn save(
        &self,
        membership: &Membership,
        identity: &TlsIdentity,
    ) -> Result<(), ManagerError> {
        let certificates = self.certificates();
        fs::create_dir_all(&certificates).map_err(io_error("creating", &certificates))?;
        write_atomically(&certificates.join(ROOT_CA_FILE), &identity.ca_pem, 0o644)?;
        write_atomically(
            &certificates.join(NODE_CERT_FILE),
            &identity.cert_pem,
            0o644,
        )?;
        write_atomically(&certificates.join(NODE_KEY_FILE), &identity.key_pem, 0o600)?;
        let state = serde_json::to_vec_pretty(membership).map_err(|error| {
            ManagerError::FailedPrecondition(format!("encoding the swarm state: {error}"))
        })?;
        write_atomically(&self.root.join(STATE_FILE), &state, 0o600)
    }

    /// Writes the manager's data key file: `key` in clear, or sealed by `unlock_key` (autolock).
    pub(crate) fn save_data_key(
        &self,
        key: &DataKey,
        unlock_key: Option<&UnlockKey>,
    ) -> Result<(), ManagerError> {
        fs::create_dir_all(&self.root).map_err(io_error("creating", &self.root))?;
        let contents = encode_data_key_file(key, unlock_key)?;
        write_atomically(&self.root.join(DATA_KEY_FILE), &contents, 0o600)
    }

    /// A new data key for a manager whose role starts for the first time (a join as a manager,
    /// a promotion), saved in clear: the manager seals it once it reads the swarm's autolock
    /// setting from its store. A store left by an earlier, interrupted start is removed, since
    /// it was sealed by a key that is gone.
    pub fn new_manager_data_key(&self) -> Result<DataKey, ManagerError> {
        self.remove_manager_data()?;
        let key = DataKey::generate()?;
        self.save_data_key(&key, None)?;
        Ok(key)
    }

    /// The manager's data key file, in clear or sealed.
    pub fn load_data_key(&self) -> Result<StoredDataKey, ManagerError> {
        let path = self.root.join(DATA_KEY_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManagerError::FailedPrecondition(format!(
                    "this manager's data key file {} is missing, and its Raft store can't be read without it: restore the file from a backup, or leave the swarm by removing {} with the daemon stopped and join it again",
                    path.display(),
                    self.root.display()
                )));
            }
            Err(source) => {
                return Err(ManagerError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        decode_data_key_file(&bytes).map_err(|detail| {
            ManagerError::FailedPrecondition(format!(
                "this manager's data key file {} is damaged ({detail}), and its Raft store can't be read without it: restore the file from a backup, or leave the swarm by removing {} with the daemon stopped and join it again",
                path.display(),
                self.root.display()
            ))
        })
    }

    /// Whether the data key file is as `unlock_key` wants it: sealed by that key, or in clear
    /// for `None`. An unreadable file is not.
    pub(crate) fn data_key_sealed_by(&self, unlock_key: Option<&UnlockKey>) -> bool {
        match (self.load_data_key(), unlock_key) {
            (Ok(StoredDataKey::Clear(_)), None) => true,
            (Ok(StoredDataKey::Sealed(sealed)), Some(unlock_key)) => {
                sealed.unseal(unlock_key).is_ok()
            }
            _ => false,
        }
    }

    /// Removes what only a manager keeps: the Raft store and its data key (a demotion, a
    /// promotion that failed).
    pub fn remove_manager_data(&self) -> Result<(), ManagerError> {
        let raft = self.raft_dir();
        match fs::remove_dir_all(&raft) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(ManagerError::Io {
                    what: "removing",
                    path: raft,
                    source: error,
                });
            }
            _ => {}
        }
        let key = self.root.join(DATA_KEY_FILE);
        match fs::remove_file(&key) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(ManagerError::Io {
                what: "removing",
                path: key,
                source: error,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets the swarm: removes the whole folder.
    pub fn remove(&self) -> Result<(), ManagerError> {
        match fs::remove_dir_all(&self.root) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(ManagerError::Io {
                what: "removing",
                path: self.root.clone(),
                source: error,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_and_absence_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let swarm = SwarmDir::new(dir.path());
        assert!(swarm.load().unwrap().is_none());
        let membership = Membership {
            node_id: "n".repeat(25),
            cluster_id: "c".repeat(25),
            role: MembershipRole::Manager,
            raft_member_id: 42,
            listen_addr: "0.0.0.0:2377".into(),
            advertise_addr: "10.0.0.1:2377".into(),
            manager_addrs: vec!["10.0.0.1:2377".into()],
        };
        let identity = TlsIdentity {
            ca_pem: b"ca".to_vec(),
            cert_pem: b"cert".to_vec(),
            key_pem: b"key".to_vec(),
        };
        swarm.save(&membership, &identity).unwrap();
        let (loaded, loaded_identity) = swarm.load().unwrap().unwrap();
        assert_eq!(loaded, membership);
        assert_eq!(loaded_identity.key_pem, b"key");
        swarm.remove().unwrap();
        assert!(swarm.load().unwrap().is_none());
    }

    #[test]
    fn the_data_key_file_is_private_and_reads_back_clear_or_sealed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let swarm = SwarmDir::new(dir.path());
        let error = swarm.load_data_key().unwrap_err().to_string();
        assert!(
            error.contains("data key file") && error.contains("is missing"),
            "{error}"
        );

        let key = swarm.new_manager_data_key().unwrap();
        let path = swarm.path().join(DATA_KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let StoredDataKey::Clear(read) = swarm.load_data_key().unwrap() else {
            panic!("a new manager's data key is in clear");
        };
        assert_eq!(read.as_bytes(), key.as_bytes());

        let unlock_key = UnlockKey::generate().unwrap();
        swarm.save_data_key(&key, Some(&unlock_key)).unwrap();
        let StoredDataKey::Sealed(sealed) = swarm.load_data_key().unwrap() else {
            panic!("sealed by the unlock key");
        };
        assert_eq!(
            sealed.unseal(&unlock_key).unwrap().as_bytes(),
            key.as_bytes()
        );
        assert!(swarm.data_key_sealed_by(Some(&unlock_key)));
        assert!(!swarm.data_key_sealed_by(Some(&UnlockKey::generate().unwrap())));
        assert!(!swarm.data_key_sealed_by(None));
        swarm.save_data_key(&key, None).unwrap();
        assert!(swarm.data_key_sealed_by(None));

        fs::write(&path, b"{}").unwrap();
        let error = swarm.load_data_key().unwrap_err().to_string();
        assert!(error.contains("is damaged"), "{error}");

        fs::create_dir_all(swarm.raft_dir()).unwrap();
        swarm.remove_manager_data().unwrap();
        assert!(!path.exists() && !swarm.raft_dir().exists());
        // Nothing left to remove is not an error.
        swarm.remove_manager_data().unwrap();
    }

    #[test]
    fn a_damaged_state_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let swarm = SwarmDir::new(dir.path());
        fs::create_dir_all(swarm.path()).unwrap();
        fs::write(swarm.path().join(STATE_FILE), b"{not json").unwrap();
        let error = swarm.load().unwrap_err().to_string();
        assert!(error.contains("is damaged"), "{error}");
    }
}

//! A manager's data encryption key and the swarm's unlock key, as SwarmKit has them. Each
//! manager seals its Raft store on disk with its own data key (DEK), made when its manager role
//! first starts and kept in its swarm folder. Without autolock that file holds the key in clear;
//! with autolock it holds the key sealed (AES-256-GCM) by the swarm's unlock key, the key
//! encryption key, which lives in the cluster object (inside the Raft store, itself sealed by the
//! managers' data keys) and which a restarted manager needs from its operator (`swarm unlock`).
//!
//! Everything here is pure but for the random keys and nonces: the file's encoding, the unlock
//! key's text form, and the cluster's unlock keys kept in step with its autolock setting.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use raft_store::DataKey;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use shoal_proto::api::{Cluster, EncryptionKey};

use crate::error::ManagerError;

/// What the daemon answers, while its manager is locked, to anything that needs the swarm;
/// Docker's words.
pub const SWARM_LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it.";

/// The unlock key's text form: Docker's prefix, then the key in base64 without padding.
const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";
/// The subsystem SwarmKit files the managers' unlock key under in the cluster object.
const MANAGER_UNLOCK_SUBSYSTEM: &str = "swarm-manager";
/// What a sealed data key is bound to, so that no other sealed value passes for one.
const SEALED_DATA_KEY_BINDING: &[u8] = b"shoal manager raft data key";
const KEY_LEN: usize = 32;

/// What to do with a key that is not accepted.
const UNLOCK_KEY_HINT: &str =
    "give the whole key 'shoal swarm unlock-key' prints on a manager that is not locked";

/// The swarm's unlock key: 32 random bytes that seal every manager's data key under autolock.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; KEY_LEN]);

impl UnlockKey {
    pub fn generate() -> Result<UnlockKey, ManagerError> {
        Ok(UnlockKey(random_bytes()?))
    }

    /// Reads the key from its text form, `SWMKEY-1-` and base64; surrounding whitespace (a
    /// pasted line) is ignored.
    pub fn parse(text: &str) -> Result<UnlockKey, ManagerError> {
        let invalid = |why: String| {
            ManagerError::InvalidArgument(format!("invalid unlock key: {why}; {UNLOCK_KEY_HINT}"))
        };
        let encoded = text
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or_else(|| invalid(format!("it does not start with {UNLOCK_KEY_PREFIX}")))?;
        let bytes = STANDARD_NO_PAD.decode(encoded).map_err(|error| {
            invalid(format!(
                "what follows {UNLOCK_KEY_PREFIX} is not base64 ({error})"
            ))
        })?;
        let length = bytes.len();
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            invalid(format!(
                "it holds {length} bytes where an unlock key holds {KEY_LEN}"
            ))
        })?;
        Ok(UnlockKey(bytes))
    }

    fn cipher(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes any 32-byte key"));
        LessSafeKey::new(unbound)
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNLOCK_KEY_PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ManagerError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        ManagerError::Crypto(
            "the system's random source failed; check that the kernel's getrandom works".into(),
        )
    })?;
    Ok(bytes)
}

/// The data key file, as JSON beside `state.json`.
#[derive(Serialize, Deserialize)]
struct DataKeyFile {
    /// Whether `key` is sealed by the swarm's unlock key (autolock) or is the key itself.
    sealed_by_unlock_key: bool,
    /// Base64: the 32-byte key, or the nonce, the sealed key and its tag.
    key: String,
}

/// A data key file as read from disk.
#[derive(Debug)]
pub enum StoredDataKey {
    Clear(DataKey),
    /// Sealed by the unlock key: the manager is locked until someone gives it.
    Sealed(SealedDataKey),
}

/// A data key sealed by the swarm's unlock key.
#[derive(Clone)]
pub struct SealedDataKey(Vec<u8>);

impl SealedDataKey {
    /// Opens the data key with `unlock_key`; refused, in Docker's words, when it is not the key
    /// that sealed it.
    pub fn unseal(&self, unlock_key: &UnlockKey) -> Result<DataKey, ManagerError> {
        let refused = || {
            ManagerError::InvalidArgument(format!(
                "swarm could not be unlocked: invalid key provided; {UNLOCK_KEY_HINT} (after a rotation, a manager that was down still takes the key from before it)"
            ))
        };
        let (nonce, sealed) = self
            .0
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(refused)?;
        let mut opened = sealed.to_vec();
        let key = unlock_key
            .cipher()
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(SEALED_DATA_KEY_BINDING),
                &mut opened,
            )
            .map_err(|_| refused())?;
        let key: [u8; KEY_LEN] = (&*key).try_into().map_err(|_| refused())?;
        Ok(DataKey::from_bytes(key))
    }
}

impl fmt::Debug for SealedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedDataKey(..)")
    }
}

/// The data key file's contents: `key` in clear, or sealed by `unlock_key`.
pub(crate) fn encode_data_key_file(
    key: &DataKey,
    unlock_key: Option<&UnlockKey>,
) -> Result<Vec<u8>, ManagerError> {
    let stored = match unlock_key {
        None => key.as_bytes().to_vec(),
        Some(unlock_key) => {
            let nonce = random_bytes::<NONCE_LEN>()?;
            let mut sealed = nonce.to_vec();
            sealed.extend_from_slice(key.as_bytes());
            let tag = unlock_key
                .cipher()
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(SEALED_DATA_KEY_BINDING),
                    &mut sealed[NONCE_LEN..],
                )
                .map_err(|_| ManagerError::Crypto("sealing the data key failed".into()))?;
            sealed.extend_from_slice(tag.as_ref());
            sealed
        }
    };
    let file = DataKeyFile {
        sealed_by_unlock_key: unlock_key.is_some(),
        key: STANDARD_NO_PAD.encode(stored),
    };
    serde_json::to_vec_pretty(&file)
        .map_err(|error| ManagerError::Crypto(format!("encoding the data key file: {error}")))
}

/// Reads the data key file's contents; the error says what is wrong with them.
pub(crate) fn decode_data_key_file(bytes: &[u8]) -> Result<StoredDataKey, String> {
    let file: DataKeyFile =
        serde_json::from_slice(bytes).map_err(|error| format!("not a data key file: {error}"))?;
    let stored = STANDARD_NO_PAD
        .decode(&file.key)
        .map_err(|error| format!("the key is not base64: {error}"))?;
    if file.sealed_by_unlock_key {
        let expected = NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len();
        if stored.len() != expected {
            return Err(format!(
                "the sealed key holds {} bytes, not {expected}",
                stored.len()
            ));
        }
        return Ok(StoredDataKey::Sealed(SealedDataKey(stored)));
    }
    let length = stored.len();
    let key: [u8; KEY_LEN] = stored
        .try_into()
        .map_err(|_| format!("the key holds {length} bytes, not {KEY_LEN}"))?;
    Ok(StoredDataKey::Clear(DataKey::from_bytes(key)))
}

fn autolock(cluster: &Cluster) -> bool {
    cluster
        .spec
        .as_ref()
        .and_then(|spec| spec.encryption_config.as_ref())
        .is_some_and(|encryption| encryption.auto_lock_managers)
}

/// The unlock key that must seal the managers' data keys: the cluster's while autolock is on,
/// none while it is off.
pub(crate) fn cluster_unlock_key(cluster: &Cluster) -> Result<Option<UnlockKey>, ManagerError> {
    if !autolock(cluster) {
        return Ok(None);
    }
    let stored = cluster
        .unlock_keys
        .iter()
        .find(|key| key.subsystem == MANAGER_UNLOCK_SUBSYSTEM)
        .ok_or_else(|| {
            ManagerError::FailedPrecondition(
                "autolock is on but the cluster holds no unlock key: run 'shoal swarm unlock-key --rotate' to make one".into(),
            )
        })?;
    let key: [u8; KEY_LEN] = stored.key.as_slice().try_into().map_err(|_| {
        ManagerError::FailedPrecondition(format!(
            "the cluster's unlock key holds {} bytes, not {KEY_LEN}: run 'shoal swarm unlock-key --rotate' to replace it",
            stored.key.len()
        ))
    })?;
    Ok(Some(UnlockKey(key)))
}

/// Brings the cluster's unlock keys in line with its autolock setting, as a cluster update
/// writes them: a key made with `new_key` when autolock comes on or a rotation is asked for,
/// none while autolock is off.
pub(crate) fn settle_unlock_keys(
    cluster: &mut Cluster,
    rotate: bool,
    new_key: impl FnOnce() -> Result<UnlockKey, ManagerError>,
) -> Result<(), ManagerError> {
    if !autolock(cluster) {
        if rotate {
            return Err(ManagerError::FailedPrecondition(
                "cannot rotate because autolock is not turned on: turn it on with 'shoal swarm update --autolock=true'".into(),
            ));
        }
        cluster.unlock_keys.clear();
        return Ok(());
    }
    let has_key = cluster
        .unlock_keys
        .iter()
        .any(|key| key.subsystem == MANAGER_UNLOCK_SUBSYSTEM);
    if rotate || !has_key {
        cluster.unlock_keys = vec![EncryptionKey {
            subsystem: MANAGER_UNLOCK_SUBSYSTEM.to_owned(),
            key: new_key()?.0.to_vec(),
            ..Default::default()
        }];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{ClusterSpec, EncryptionConfig};

    use super::*;

    fn key(byte: u8) -> UnlockKey {
        UnlockKey([byte; KEY_LEN])
    }

    fn cluster(autolock: bool) -> Cluster {
        Cluster {
            spec: Some(ClusterSpec {
                encryption_config: Some(EncryptionConfig {
                    auto_lock_managers: autolock,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_unlock_key_reads_back_from_its_text_form() {
        let original = UnlockKey::generate().unwrap();
        let text = original.to_string();
        assert!(text.starts_with("SWMKEY-1-"), "{text}");
        // 32 bytes in unpadded base64.
        assert_eq!(text.len(), "SWMKEY-1-".len() + 43, "{text}");
        assert!(!text.ends_with('='));
        assert_eq!(UnlockKey::parse(&format!("  {text}\n")).unwrap(), original);
        assert_eq!(
            key(0xfb).to_string(),
            "SWMKEY-1-+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s"
        );
    }

    #[test]
    fn malformed_unlock_keys_say_what_is_wrong() {
        let cases = [
            ("SWMTKN-1-abc", "does not start with SWMKEY-1-"),
            ("", "does not start with SWMKEY-1-"),
            ("SWMKEY-1-not*base64", "is not base64"),
            (
                "SWMKEY-1-AAAA",
                "holds 3 bytes where an unlock key holds 32",
            ),
        ];
        for (text, problem) in cases {
            let error = UnlockKey::parse(text).unwrap_err().to_string();
            assert!(error.contains("invalid unlock key"), "{error}");
            assert!(error.contains(problem), "{text:?}: {error}");
            assert!(error.contains("shoal swarm unlock-key"), "{error}");
        }
        let padded = format!("{}=", key(1));
        assert!(UnlockKey::parse(&padded).is_err());
    }

    #[test]
    fn a_clear_data_key_file_holds_the_key() {
        let data_key = DataKey::from_bytes([9; KEY_LEN]);
        let bytes = encode_data_key_file(&data_key, None).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"sealed_by_unlock_key\": false"), "{text}");
        let StoredDataKey::Clear(read) = decode_data_key_file(&bytes).unwrap() else {
            panic!("a clear file reads as clear");
        };
        assert_eq!(read.as_bytes(), data_key.as_bytes());
    }

    #[test]
    fn a_sealed_data_key_file_opens_only_with_its_unlock_key() {
        let data_key = DataKey::from_bytes([9; KEY_LEN]);
        let bytes = encode_data_key_file(&data_key, Some(&key(1))).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"sealed_by_unlock_key\": true"), "{text}");
        assert!(!text.contains(&STANDARD_NO_PAD.encode(data_key.as_bytes())));
        let StoredDataKey::Sealed(sealed) = decode_data_key_file(&bytes).unwrap() else {
            panic!("a sealed file reads as sealed");
        };
        assert_eq!(
            sealed.unseal(&key(1)).unwrap().as_bytes(),
            data_key.as_bytes()
        );
        let refused = sealed.unseal(&key(2)).unwrap_err().to_string();
        assert!(
            refused.contains("swarm could not be unlocked: invalid key provided")
                && refused.contains("shoal swarm unlock-key"),
            "{refused}"
        );
        // Each sealing takes a fresh nonce.
        assert_ne!(
            encode_data_key_file(&data_key, Some(&key(1))).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_damaged_data_key_file_says_what_is_wrong() {
        let cases: [(&[u8], &str); 4] = [
            (b"{not json", "not a data key file"),
            (
                br#"{"sealed_by_unlock_key": false, "key": "***"}"#,
                "not base64",
            ),
            (
                br#"{"sealed_by_unlock_key": false, "key": "AAAA"}"#,
                "holds 3 bytes, not 32",
            ),
            (
                br#"{"sealed_by_unlock_key": true, "key": "AAAA"}"#,
                "sealed key holds 3 bytes, not 60",
            ),
        ];
        for (bytes, problem) in cases {
            let error = decode_data_key_file(bytes).unwrap_err();
            assert!(error.contains(problem), "{error}");
        }
    }

    #[test]
    fn the_cluster_names_the_unlock_key_only_under_autolock() {
        let mut locked = cluster(true);
        settle_unlock_keys(&mut locked, false, || Ok(key(1))).unwrap();
        assert_eq!(cluster_unlock_key(&locked).unwrap(), Some(key(1)));
        // Settling again keeps the key; a rotation replaces it.
        settle_unlock_keys(&mut locked, false, || Ok(key(2))).unwrap();
        assert_eq!(cluster_unlock_key(&locked).unwrap(), Some(key(1)));
        settle_unlock_keys(&mut locked, true, || Ok(key(3))).unwrap();
        assert_eq!(cluster_unlock_key(&locked).unwrap(), Some(key(3)));
        assert_eq!(locked.unlock_keys.len(), 1);

        // Turning autolock off drops the key.
        locked.spec = cluster(false).spec;
        settle_unlock_keys(&mut locked, false, || Ok(key(4))).unwrap();
        assert!(locked.unlock_keys.is_empty());
        assert_eq!(cluster_unlock_key(&locked).unwrap(), None);
    }

    #[test]
    fn rotating_without_autolock_is_refused() {
        let mut unlocked = cluster(false);
        let error = settle_unlock_keys(&mut unlocked, true, || Ok(key(1)))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("autolock is not turned on") && error.contains("--autolock=true"),
            "{error}"
        );
    }

    #[test]
    fn autolock_without_a_key_is_reported() {
        let error = cluster_unlock_key(&cluster(true)).unwrap_err().to_string();
        assert!(error.contains("holds no unlock key"), "{error}");
    }
}

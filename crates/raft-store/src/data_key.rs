//! Encryption at rest: every record the store writes that carries object data (log entries,
//! snapshot contents) is sealed with AES-256-GCM under the member's data key. Each record gets
//! a fresh random nonce and is bound, as associated data, to what it is (the log index it sits
//! at, the snapshot metadata it belongs to), so sealed records can't be swapped around in a file.
//!
//! A random 96-bit nonce per record keeps the chance of a repeat below 2^-32 for the first 2^32
//! records under one key, far more than a member writes; Docker's data key rotation, which would
//! bound it, is not done here.

use std::fmt;
use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::StoreError;

/// A member's data encryption key: 32 bytes that seal what the store writes to disk. The caller
/// keeps it (managers keep it in their swarm folder, sealed by the unlock key under autolock);
/// the same key must be given every time the member's data directory is opened.
#[derive(Clone)]
pub struct DataKey {
    bytes: [u8; DataKey::LEN],
    /// The expanded key schedule, shared by the clones (the log, the snapshots, the config).
    key: Arc<LessSafeKey>,
}

/// A sealed record did not open: the key is not the one it was sealed with, or the record was
/// altered after its checksum was computed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Undecryptable;

impl DataKey {
    pub const LEN: usize = 32;

    /// A new random key from the system's secure random source.
    pub fn generate() -> Result<DataKey, StoreError> {
        let mut bytes = [0u8; DataKey::LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| {
            StoreError::Crypto("the system's random source failed while making a data key".into())
        })?;
        Ok(DataKey::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: [u8; DataKey::LEN]) -> DataKey {
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes any 32-byte key"));
        DataKey {
            bytes,
            key: Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// The key itself, for its keeper to store.
    pub fn as_bytes(&self) -> &[u8; DataKey::LEN] {
        &self.bytes
    }

    /// Seals `plaintext` bound to `associated`: nonce, then ciphertext, then tag.
    pub(crate) fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            StoreError::Crypto("the system's random source failed while sealing a record".into())
        })?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| StoreError::Crypto("a record too large to seal".into()))?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    /// Opens what [`DataKey::seal`] made with the same `associated` data.
    pub(crate) fn open(&self, associated: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Undecryptable> {
        let (nonce, ciphertext) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(Undecryptable)?;
        let mut plaintext = ciphertext.to_vec();
        let opened = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(associated),
                &mut plaintext,
            )
            .map_err(|_| Undecryptable)?
            .len();
        plaintext.truncate(opened);
        Ok(plaintext)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_with_its_key_and_its_associated_data() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"entry 7", b"the payload").unwrap();
        assert!(!sealed.windows(7).any(|window| window == b"payload"));
        assert_eq!(key.open(b"entry 7", &sealed).unwrap(), b"the payload");
        assert_eq!(key.open(b"entry 8", &sealed), Err(Undecryptable));
        let other = DataKey::generate().unwrap();
        assert_eq!(other.open(b"entry 7", &sealed), Err(Undecryptable));
        let mut altered = sealed.clone();
        altered[NONCE_LEN + 2] ^= 1;
        assert_eq!(key.open(b"entry 7", &altered), Err(Undecryptable));
        assert_eq!(key.open(b"entry 7", &sealed[..5]), Err(Undecryptable));
    }

    #[test]
    fn each_seal_takes_a_fresh_nonce() {
        let key = DataKey::from_bytes([7; DataKey::LEN]);
        let first = key.seal(b"", b"same").unwrap();
        let second = key.seal(b"", b"same").unwrap();
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_ne!(first, second);
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = DataKey::from_bytes([0xAB; DataKey::LEN]);
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }
}

//! Sealing of gossip datagrams and stream frames: AES-256-GCM under a keyring the managers hand out.
//!
//! Every byte the gossip sends, on UDP or TCP, goes out sealed under the keyring's primary key,
//! and a receiver opens it with whichever key of its ring the frame names; anything else is
//! dropped. So nobody without a current key can inject members or endpoints.
//!
//! Nonces never repeat for a key: a sender does not encrypt under the shared key itself but under
//! a subkey derived (HKDF-SHA256) from the shared key and a 128-bit salt the sender draws once
//! when it starts. The nonce is a 64-bit counter that only goes up for the life of that salt.
//! Two senders (or one sender before and after a restart) would share a subkey only if they drew
//! the same 128-bit salt, and one sender never reuses a counter value, so no (subkey, nonce) pair
//! is used twice. The counter cannot run out in practice (2^64 frames); if it ever did, sealing
//! fails rather than wrapping.

use std::collections::HashMap;
use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

/// Length of a gossip key's secret: AES-256.
pub const KEY_LEN: usize = 32;
/// Length of the per-sender salt the subkeys are derived with.
pub const SALT_LEN: usize = 16;

const FORMAT_VERSION: u8 = 1;
const HKDF_INFO: &[u8] = b"shoal overlay gossip v1";
/// version, channel, key id, salt, counter.
const HEADER_LEN: usize = 1 + 1 + 4 + SALT_LEN + 8;
const TAG_LEN: usize = 16;
/// Bytes sealing adds to a payload.
pub(crate) const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// One gossip key, named by the id the managers gave it.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey {
    id: u32,
    secret: [u8; KEY_LEN],
}

impl GossipKey {
    /// A key with its id and 32-byte secret.
    pub fn new(id: u32, secret: [u8; KEY_LEN]) -> Self {
        Self { id, secret }
    }

    /// The id frames sealed under this key carry.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn subkey(&self, salt: &[u8; SALT_LEN]) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.secret);
        // An expansion to one AES-256 key is far below HKDF's length limit, so it cannot fail.
        let okm = prk
            .expand(&[HKDF_INFO], &AES_256_GCM)
            .expect("HKDF expands to one AES-256 key");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys a node accepts, and the one it sends with.
///
/// Rotation without loss is the managers' order of operations: a new key is first added to
/// every ring as a non-primary key, then made primary, and the old one removed only after every
/// node sends with the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    primary: GossipKey,
    others: Vec<GossipKey>,
}

impl Keyring {
    /// A ring sending with `primary` and also accepting `others`. Two keys with one id are
    /// refused: a receiver could not tell which one a frame means.
    pub fn new(primary: GossipKey, others: Vec<GossipKey>) -> Result<Self, super::GossipError> {
        let mut ids: Vec<u32> = others.iter().map(GossipKey::id).collect();
        ids.push(primary.id);
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(super::GossipError::DuplicateKeyId(pair[0]));
        }
        Ok(Self { primary, others })
    }

    /// The id of the key frames are sealed with.
    pub fn primary_id(&self) -> u32 {
        self.primary.id
    }

    fn find(&self, id: u32) -> Option<&GossipKey> {
        std::iter::once(&self.primary)
            .chain(&self.others)
            .find(|key| key.id == id)
    }
}

/// Which transport a frame was sealed for, bound into its authentication so a datagram cannot
/// be replayed as a stream frame or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// A UDP datagram.
    Datagram = 1,
    /// A TCP frame (push-pull).
    Stream = 2,
}

/// Why a received frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short, a format this node does not speak, or the wrong channel.
    Malformed,
    /// Sealed under a key id not in this node's ring.
    UnknownKey,
    /// The key id is known but the frame does not authenticate under it.
    Forged,
}

/// Seals this node's outgoing frames; holds the salt and the counter that make its nonces unique.
pub(crate) struct Sealer {
    keyring: Keyring,
    salt: [u8; SALT_LEN],
    counter: u64,
    /// The subkey for the primary key and this sender's salt, derived once per key.
    primary_subkey: (u32, LessSafeKey),
    /// Subkeys of the senders heard from, so a frame costs one HKDF per sender and key rather
    /// than one per frame. Cleared when the ring changes or it grows past its bound.
    opening_subkeys: HashMap<(u32, [u8; SALT_LEN]), LessSafeKey>,
}

/// Senders' subkeys kept at most: a cluster's nodes, with room for restarts.
const OPENING_SUBKEYS_MAX: usize = 4096;

impl Sealer {
    /// A sealer for `keyring`; `salt` must be freshly random for every process (see the module
    /// comment on why that keeps nonces unique).
    pub(crate) fn new(keyring: Keyring, salt: [u8; SALT_LEN]) -> Self {
        let primary_subkey = (keyring.primary.id, keyring.primary.subkey(&salt));
        Self {
            keyring,
            salt,
            counter: 0,
            primary_subkey,
            opening_subkeys: HashMap::new(),
        }
    }

    /// Replaces the ring; the counter goes on, so nonces stay unique under a reused key.
    pub(crate) fn set_keyring(&mut self, keyring: Keyring) {
        self.primary_subkey = (keyring.primary.id, keyring.primary.subkey(&self.salt));
        self.keyring = keyring;
        self.opening_subkeys.clear();
    }

    /// Seals `payload` for `channel` under the primary key. `None` only once 2^64 frames have
    /// been sealed with this salt.
    pub(crate) fn seal(&mut self, channel: Channel, payload: &[u8]) -> Option<Vec<u8>> {
        let counter = self.counter;
        self.counter = self.counter.checked_add(1)?;
        let mut frame = Vec::with_capacity(SEAL_OVERHEAD + payload.len());
        frame.push(FORMAT_VERSION);
        frame.push(channel as u8);
        frame.extend_from_slice(&self.primary_subkey.0.to_be_bytes());
        frame.extend_from_slice(&self.salt);
        frame.extend_from_slice(&counter.to_be_bytes());
        let mut body = payload.to_vec();
        let tag = self
            .primary_subkey
            .1
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&frame[..]), &mut body)
            .ok()?;
        frame.extend_from_slice(&body);
        frame.extend_from_slice(tag.as_ref());
        Some(frame)
    }

    /// Opens a frame received on `channel` with whichever key of the ring it names.
    pub(crate) fn open(&mut self, channel: Channel, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        if frame.len() < SEAL_OVERHEAD || frame[0] != FORMAT_VERSION || frame[1] != channel as u8 {
            return Err(OpenError::Malformed);
        }
        let (header, sealed) = frame.split_at(HEADER_LEN);
        let key_id = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[6..6 + SALT_LEN]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&header[6 + SALT_LEN..]);
        let key = self.keyring.find(key_id).ok_or(OpenError::UnknownKey)?;
        if self.opening_subkeys.len() >= OPENING_SUBKEYS_MAX {
            self.opening_subkeys.clear();
        }
        let subkey = match self.opening_subkeys.remove(&(key_id, salt)) {
            Some(subkey) => subkey,
            None => key.subkey(&salt),
        };
        let mut body = sealed.to_vec();
        let plain_len = subkey
            .open_in_place(
                nonce(u64::from_be_bytes(counter)),
                Aad::from(header),
                &mut body,
            )
            .map_err(|_| OpenError::Forged)?
            .len();
        body.truncate(plain_len);
        // Kept only once a frame authenticated, so forged frames cannot fill the cache.
        self.opening_subkeys.insert((key_id, salt), subkey);
        Ok(body)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[NONCE_LEN - 8..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32, byte: u8) -> GossipKey {
        GossipKey::new(id, [byte; KEY_LEN])
    }

    fn ring(primary: GossipKey, others: Vec<GossipKey>) -> Keyring {
        Keyring::new(primary, others).expect("distinct ids")
    }

    #[test]
    fn a_frame_opens_under_any_key_of_the_receivers_ring() {
        let mut sender = Sealer::new(ring(key(2, 2), vec![]), [7; SALT_LEN]);
        let mut receiver = Sealer::new(ring(key(1, 1), vec![key(2, 2)]), [8; SALT_LEN]);
        let frame = sender.seal(Channel::Datagram, b"hello").expect("sealed");
        assert_eq!(
            receiver.open(Channel::Datagram, &frame),
            Ok(b"hello".to_vec())
        );
    }

    #[test]
    fn a_frame_under_a_key_not_in_the_ring_is_refused() {
        let mut sender = Sealer::new(ring(key(3, 3), vec![]), [7; SALT_LEN]);
        let mut receiver = Sealer::new(ring(key(1, 1), vec![]), [8; SALT_LEN]);
        let frame = sender.seal(Channel::Datagram, b"hello").expect("sealed");
        assert_eq!(
            receiver.open(Channel::Datagram, &frame),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn a_frame_under_a_known_id_but_another_secret_is_forged() {
        let mut sender = Sealer::new(ring(key(1, 9), vec![]), [7; SALT_LEN]);
        let mut receiver = Sealer::new(ring(key(1, 1), vec![]), [8; SALT_LEN]);
        let frame = sender.seal(Channel::Datagram, b"hello").expect("sealed");
        assert_eq!(
            receiver.open(Channel::Datagram, &frame),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn a_changed_byte_or_the_other_channel_is_refused() {
        let mut sender = Sealer::new(ring(key(1, 1), vec![]), [7; SALT_LEN]);
        let mut receiver = Sealer::new(ring(key(1, 1), vec![]), [8; SALT_LEN]);
        let frame = sender.seal(Channel::Datagram, b"hello").expect("sealed");
        for at in [6, HEADER_LEN + 1, frame.len() - 1] {
            let mut tampered = frame.clone();
            tampered[at] ^= 1;
            assert_eq!(
                receiver.open(Channel::Datagram, &tampered),
                Err(OpenError::Forged)
            );
        }
        assert_eq!(
            receiver.open(Channel::Stream, &frame),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            receiver.open(Channel::Datagram, &frame[..10]),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn nonces_count_up_and_survive_a_key_change() {
        let mut sender = Sealer::new(ring(key(1, 1), vec![]), [7; SALT_LEN]);
        let first = sender.seal(Channel::Datagram, b"a").expect("sealed");
        sender.set_keyring(ring(key(2, 2), vec![key(1, 1)]));
        sender.set_keyring(ring(key(1, 1), vec![]));
        let second = sender.seal(Channel::Datagram, b"a").expect("sealed");
        let counter = |frame: &[u8]| frame[HEADER_LEN - 8..HEADER_LEN].to_vec();
        assert_eq!(counter(&first), 0u64.to_be_bytes());
        assert_eq!(counter(&second), 1u64.to_be_bytes());
        assert_ne!(first, second);
    }

    #[test]
    fn two_keys_with_one_id_are_refused() {
        assert!(Keyring::new(key(1, 1), vec![key(1, 2)]).is_err());
    }
}

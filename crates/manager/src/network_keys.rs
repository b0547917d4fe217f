//! The network keys' life, pure: the keys that seal node gossip and the IPsec of encrypted
//! overlays, which the leader makes, keeps in the cluster object and rotates, and the dispatcher
//! hands to every node in its session.
//!
//! As Docker's keymanager: each subsystem ([`SUBSYSTEMS`]) holds a ring of
//! [`KEYS_PER_SUBSYSTEM`] AES-256-GCM keys of 32 random bytes, each stamped with the next tick
//! of the cluster's lamport clock; the newest is the primary. Every rotation interval each ring
//! gains a new key and drops its oldest, so the keys a node got one rotation ago are still in
//! the ring. Unlike Docker, the time of the last rotation is kept in the cluster object rather
//! than the leader's memory, so a leader change neither restarts nor skips the period.
//!
//! Everything here is decided from what is passed in (the cluster, the time, a random
//! generator); reading the clock, drawing from the system's generator and writing the cluster
//! object are the leader's (`role.rs`).

use std::time::{Duration, SystemTime};

use rand::CryptoRng;
use shoal_proto::api::{Cluster, EncryptionKey, Timestamp, encryption_key::Algorithm};
use spec::network::{
    KEY_SUBSYSTEM_GOSSIP, KEY_SUBSYSTEM_IPSEC, KEYS_PER_SUBSYSTEM, NETWORK_KEY_LEN,
};

/// The subsystems the leader keeps keys for, in the order their keys are made and stored.
pub const SUBSYSTEMS: [&str; 2] = [KEY_SUBSYSTEM_GOSSIP, KEY_SUBSYSTEM_IPSEC];

/// What [`settle_network_keys`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// Some subsystem had no keys (a new swarm, or one from before network keys) and got a
    /// full ring; the others were not due.
    Made,
    /// The rotation interval had passed: every ring gained a key and dropped its oldest (and
    /// any empty one got a full ring).
    Rotated,
}

/// Brings the cluster's network keys up to date at `now`: a subsystem without keys gets a full
/// ring, and once `interval` has passed since the last rotation every ring is rotated. Keys of
/// subsystems not in [`SUBSYSTEMS`] are kept as they are. New keys are drawn from `random`.
/// Answers what changed; `None` leaves the cluster untouched, so there is nothing to write.
pub fn settle_network_keys(
    cluster: &mut Cluster,
    now: SystemTime,
    interval: Duration,
    random: &mut impl CryptoRng,
) -> Option<KeyChange> {
    let due = rotation_due(cluster.network_keys_rotated_at.as_ref(), now, interval);
    let mut clock = cluster
        .network_bootstrap_keys
        .iter()
        .map(|key| key.lamport_time)
        .fold(cluster.encryption_key_lamport_clock, u64::max);
    let mut change = None;
    let mut settled = Vec::with_capacity(SUBSYSTEMS.len() * KEYS_PER_SUBSYSTEM);
    for subsystem in SUBSYSTEMS {
        let mut ring: Vec<EncryptionKey> = cluster
            .network_bootstrap_keys
            .iter()
            .filter(|key| key.subsystem == subsystem)
            .cloned()
            .collect();
        ring.sort_by_key(|key| key.lamport_time);
        let new_keys = if ring.is_empty() {
            change.get_or_insert(KeyChange::Made);
            KEYS_PER_SUBSYSTEM
        } else if due {
            change = Some(KeyChange::Rotated);
            // The newest keys but one stay; the rest make room for the new primary.
            let dropped = ring.len().saturating_sub(KEYS_PER_SUBSYSTEM - 1);
            ring.drain(..dropped);
            1
        } else {
            0
        };
        for _ in 0..new_keys {
            clock += 1;
            ring.push(new_key(subsystem, clock, random));
        }
        settled.extend(ring);
    }
    // Only a changed ring means a write; then the rings come first, in a fixed order.
    let change = change?;
    settled.extend(
        cluster
            .network_bootstrap_keys
            .iter()
            .filter(|key| !SUBSYSTEMS.contains(&key.subsystem.as_str()))
            .cloned(),
    );
    cluster.network_bootstrap_keys = settled;
    cluster.encryption_key_lamport_clock = clock;
    cluster.network_keys_rotated_at = Some(Timestamp::from(now));
    Some(change)
}

/// Whether the rings are due for rotation at `now`: `interval` after the last rotation, or at
/// once when none is recorded, or when the record lies more than an interval ahead of `now`
/// (written by a manager whose clock was far ahead, it would otherwise hold rotation back).
fn rotation_due(rotated_at: Option<&Timestamp>, now: SystemTime, interval: Duration) -> bool {
    let Some(rotated_at) = rotated_at.and_then(|at| SystemTime::try_from(*at).ok()) else {
        return true;
    };
    match rotated_at.duration_since(now) {
        // Recorded in the future by this clock.
        Ok(ahead) => ahead > interval,
        Err(past) => past.duration() >= interval,
    }
}

fn new_key(subsystem: &str, lamport_time: u64, random: &mut impl CryptoRng) -> EncryptionKey {
    let mut key = vec![0; NETWORK_KEY_LEN];
    random.fill_bytes(&mut key);
    EncryptionKey {
        subsystem: subsystem.to_owned(),
        algorithm: Algorithm::Aes256Gcm as i32,
        key,
        lamport_time,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    const INTERVAL: Duration = spec::defaults::NETWORK_KEY_ROTATION_INTERVAL;
    const SEED: u64 = 14;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    /// The 32-byte secrets the seeded generator gives, in order.
    fn secrets(count: usize) -> Vec<Vec<u8>> {
        let mut random = StdRng::seed_from_u64(SEED);
        (0..count)
            .map(|_| {
                let mut key = vec![0; NETWORK_KEY_LEN];
                random.fill_bytes(&mut key);
                key
            })
            .collect()
    }

    /// The (subsystem, lamport time) of every key, in stored order.
    fn stamps(cluster: &Cluster) -> Vec<(&str, u64)> {
        cluster
            .network_bootstrap_keys
            .iter()
            .map(|key| (key.subsystem.as_str(), key.lamport_time))
            .collect()
    }

    fn key(subsystem: &str, lamport_time: u64, byte: u8) -> EncryptionKey {
        EncryptionKey {
            subsystem: subsystem.to_owned(),
            algorithm: Algorithm::Aes256Gcm as i32,
            key: vec![byte; NETWORK_KEY_LEN],
            lamport_time,
        }
    }

    /// A cluster as a new swarm starts with: keys made at `at(0)` from the seed.
    fn founded() -> Cluster {
        let mut cluster = Cluster::default();
        let mut random = StdRng::seed_from_u64(SEED);
        settle_network_keys(&mut cluster, at(0), INTERVAL, &mut random);
        cluster
    }

    #[test]
    fn a_cluster_without_keys_gets_three_per_subsystem() {
        let mut cluster = Cluster::default();
        let mut random = StdRng::seed_from_u64(SEED);
        let change = settle_network_keys(&mut cluster, at(0), INTERVAL, &mut random);
        assert_eq!(change, Some(KeyChange::Made));
        assert_eq!(
            stamps(&cluster),
            [
                ("networking:gossip", 1),
                ("networking:gossip", 2),
                ("networking:gossip", 3),
                ("networking:ipsec", 4),
                ("networking:ipsec", 5),
                ("networking:ipsec", 6),
            ]
        );
        let made: Vec<Vec<u8>> = cluster
            .network_bootstrap_keys
            .iter()
            .map(|key| key.key.clone())
            .collect();
        assert_eq!(made, secrets(6));
        assert!(
            cluster
                .network_bootstrap_keys
                .iter()
                .all(|key| key.algorithm() == Algorithm::Aes256Gcm)
        );
        assert_eq!(cluster.encryption_key_lamport_clock, 6);
        assert_eq!(
            cluster.network_keys_rotated_at,
            Some(Timestamp::from(at(0)))
        );
    }

    #[test]
    fn nothing_changes_before_the_interval_has_passed() {
        let mut cluster = founded();
        let before = cluster.clone();
        let mut random = StdRng::seed_from_u64(SEED + 1);
        let just_before = at(0) + INTERVAL - Duration::from_nanos(1);
        assert_eq!(
            settle_network_keys(&mut cluster, just_before, INTERVAL, &mut random),
            None
        );
        assert_eq!(cluster, before);
    }

    #[test]
    fn each_interval_every_ring_gains_a_key_and_drops_its_oldest() {
        let mut cluster = founded();
        let first = cluster.network_bootstrap_keys.clone();
        let mut random = StdRng::seed_from_u64(SEED + 1);
        let change = settle_network_keys(&mut cluster, at(0) + INTERVAL, INTERVAL, &mut random);
        assert_eq!(change, Some(KeyChange::Rotated));
        assert_eq!(
            stamps(&cluster),
            [
                ("networking:gossip", 2),
                ("networking:gossip", 3),
                ("networking:gossip", 7),
                ("networking:ipsec", 5),
                ("networking:ipsec", 6),
                ("networking:ipsec", 8),
            ]
        );
        // The two newest keys of each ring are kept byte for byte: a node still holding the
        // previous ring shares them with the others.
        let keys = &cluster.network_bootstrap_keys;
        assert_eq!(keys[..2], first[1..3]);
        assert_eq!(keys[3..5], first[4..6]);
        let mut expected = StdRng::seed_from_u64(SEED + 1);
        for new in [&keys[2], &keys[5]] {
            let mut secret = vec![0; NETWORK_KEY_LEN];
            expected.fill_bytes(&mut secret);
            assert_eq!(new.key, secret);
        }
        assert_eq!(cluster.encryption_key_lamport_clock, 8);
        assert_eq!(
            cluster.network_keys_rotated_at,
            Some(Timestamp::from(at(0) + INTERVAL))
        );

        // The next interval counts from this rotation, not from the first keys.
        let later = at(0) + INTERVAL + INTERVAL - Duration::from_secs(1);
        assert_eq!(
            settle_network_keys(&mut cluster, later, INTERVAL, &mut random),
            None
        );
        let change = settle_network_keys(
            &mut cluster,
            later + Duration::from_secs(1),
            INTERVAL,
            &mut random,
        );
        assert_eq!(change, Some(KeyChange::Rotated));
        assert_eq!(
            stamps(&cluster),
            [
                ("networking:gossip", 3),
                ("networking:gossip", 7),
                ("networking:gossip", 9),
                ("networking:ipsec", 6),
                ("networking:ipsec", 8),
                ("networking:ipsec", 10),
            ]
        );
        // The first ring's primary lasts two rotations.
        assert_eq!(cluster.network_bootstrap_keys[0], first[2]);
    }

    #[test]
    fn a_leader_that_was_down_for_several_intervals_rotates_once() {
        let mut cluster = founded();
        let mut random = StdRng::seed_from_u64(SEED + 1);
        let long_after = at(0) + INTERVAL * 5;
        let change = settle_network_keys(&mut cluster, long_after, INTERVAL, &mut random);
        assert_eq!(change, Some(KeyChange::Rotated));
        assert_eq!(cluster.encryption_key_lamport_clock, 8);
        assert_eq!(
            settle_network_keys(&mut cluster, long_after, INTERVAL, &mut random),
            None
        );
    }

    #[test]
    fn keys_with_no_recorded_rotation_or_one_far_ahead_rotate_at_once() {
        let mut random = StdRng::seed_from_u64(SEED + 1);
        let mut unrecorded = founded();
        unrecorded.network_keys_rotated_at = None;
        assert_eq!(
            settle_network_keys(&mut unrecorded, at(0), INTERVAL, &mut random),
            Some(KeyChange::Rotated)
        );
        assert_eq!(
            unrecorded.network_keys_rotated_at,
            Some(Timestamp::from(at(0)))
        );

        // A record up to one interval ahead (a leader whose clock ran fast) is waited out...
        let mut ahead = founded();
        ahead.network_keys_rotated_at = Some(Timestamp::from(at(0) + INTERVAL));
        let now = at(0) + Duration::from_secs(1);
        assert_eq!(
            settle_network_keys(&mut ahead, now, INTERVAL, &mut random),
            None
        );
        // ...one further ahead is not.
        ahead.network_keys_rotated_at =
            Some(Timestamp::from(now + INTERVAL + Duration::from_secs(1)));
        assert_eq!(
            settle_network_keys(&mut ahead, now, INTERVAL, &mut random),
            Some(KeyChange::Rotated)
        );
        assert_eq!(ahead.network_keys_rotated_at, Some(Timestamp::from(now)));
    }

    #[test]
    fn a_missing_ring_is_made_without_rotating_the_others() {
        let gossip = vec![
            key(KEY_SUBSYSTEM_GOSSIP, 1, 1),
            key(KEY_SUBSYSTEM_GOSSIP, 2, 2),
            key(KEY_SUBSYSTEM_GOSSIP, 3, 3),
        ];
        let mut cluster = Cluster {
            network_bootstrap_keys: gossip.clone(),
            encryption_key_lamport_clock: 3,
            network_keys_rotated_at: Some(Timestamp::from(at(0))),
            ..Default::default()
        };
        let mut random = StdRng::seed_from_u64(SEED);
        let now = at(60);
        assert_eq!(
            settle_network_keys(&mut cluster, now, INTERVAL, &mut random),
            Some(KeyChange::Made)
        );
        assert_eq!(cluster.network_bootstrap_keys[..3], gossip[..]);
        assert_eq!(
            stamps(&cluster)[3..],
            [
                ("networking:ipsec", 4),
                ("networking:ipsec", 5),
                ("networking:ipsec", 6),
            ]
        );
        assert_eq!(cluster.network_keys_rotated_at, Some(Timestamp::from(now)));
    }

    #[test]
    fn new_keys_count_on_from_the_newest_stamp_and_other_subsystems_stay() {
        // Stored out of order, with the clock behind the keys and a fourth gossip key.
        let other = key("another:subsystem", 40, 9);
        let mut cluster = Cluster {
            network_bootstrap_keys: vec![
                other.clone(),
                key(KEY_SUBSYSTEM_IPSEC, 12, 5),
                key(KEY_SUBSYSTEM_GOSSIP, 11, 4),
                key(KEY_SUBSYSTEM_GOSSIP, 2, 1),
                key(KEY_SUBSYSTEM_GOSSIP, 9, 3),
                key(KEY_SUBSYSTEM_GOSSIP, 5, 2),
            ],
            encryption_key_lamport_clock: 7,
            network_keys_rotated_at: Some(Timestamp::from(at(0))),
            ..Default::default()
        };
        let mut random = StdRng::seed_from_u64(SEED);
        assert_eq!(
            settle_network_keys(&mut cluster, at(0) + INTERVAL, INTERVAL, &mut random),
            Some(KeyChange::Rotated)
        );
        assert_eq!(
            stamps(&cluster),
            [
                ("networking:gossip", 9),
                ("networking:gossip", 11),
                ("networking:gossip", 41),
                ("networking:ipsec", 12),
                ("networking:ipsec", 42),
                ("another:subsystem", 40),
            ]
        );
        assert_eq!(cluster.encryption_key_lamport_clock, 42);
    }
}

//! Fencing after a forced recovery. [`crate::force_new_cluster`] gives the survivor's cluster a
//! new epoch, one generation on from the old with a random nonce, saved beside its data. Every
//! Raft call between members carries the caller's epoch, and a member answers only calls of its
//! own epoch. So the members left behind, should they come back with their old data, can't
//! replicate into the new cluster (their leader's higher term would make the survivor drop
//! writes it acknowledged); the refusal tells them they are fenced out and how to rejoin, and
//! they refuse writes and reads from then on. A member with no state at all takes the epoch of
//! the first call it gets: that is how members added later join the new cluster.
//!
//! [`judge`] decides; [`Fence`] holds this member's epoch and carries the decisions out.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::error::StoreError;

const EPOCH_FILE: &str = "cluster-epoch";
/// The request header that carries the caller's epoch; a call without it is of epoch 0.0, the
/// epoch of a cluster never forced (and of clients that are not members).
const EPOCH_HEADER: &str = "shoal-cluster-epoch";
/// Set on a refusal that tells the caller it is fenced out.
const FENCED_HEADER: &str = "shoal-fenced";
const REJOIN: &str = "to rejoin, run 'shoal swarm leave --force' on this node, then 'shoal swarm join' with a token from a current manager";

/// Which cluster a member belongs to: the number of forced recoveries behind it, and which one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Epoch {
    pub(crate) generation: u64,
    pub(crate) nonce: u64,
}

impl Epoch {
    /// The epoch of a cluster forced from this one.
    pub(crate) fn forced(self, nonce: u64) -> Epoch {
        Epoch {
            generation: self.generation + 1,
            nonce,
        }
    }

    fn text(self) -> String {
        format!("{}.{}", self.generation, self.nonce)
    }

    fn parse(text: &str) -> Option<Epoch> {
        let (generation, nonce) = text.trim().split_once('.')?;
        Some(Epoch {
            generation: generation.parse().ok()?,
            nonce: nonce.parse().ok()?,
        })
    }
}

/// What a member does with a call of epoch `theirs`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit,
    /// This member holds no state yet: it joins the caller's cluster, epoch and all.
    Adopt(Epoch),
    /// The caller belongs to the cluster as it was before a forced recovery; the text is for it.
    CallerFenced(String),
    /// This member does: the caller's cluster was forced from this one's. The text is for this
    /// member.
    CalleeFenced(String),
    /// The two clusters were each forced from the same one.
    Unrelated(String),
}

fn fenced_out(current: Epoch, stale: Epoch) -> String {
    format!(
        "this member was fenced out: its cluster was re-founded on another manager with 'swarm init --force-new-cluster' (cluster epoch {}, this member's {}), and the data it holds is stale; {REJOIN}",
        current.text(),
        stale.text()
    )
}

/// Decides on a call of epoch `theirs` to a member of epoch `mine`; `fresh` when the member
/// holds no log, vote or snapshot yet.
pub(crate) fn judge(mine: Epoch, theirs: Epoch, fresh: bool) -> Verdict {
    if mine == theirs {
        return Verdict::Admit;
    }
    if fresh && mine == Epoch::default() {
        return Verdict::Adopt(theirs);
    }
    if theirs.generation < mine.generation {
        Verdict::CallerFenced(fenced_out(mine, theirs))
    } else if theirs.generation > mine.generation {
        Verdict::CalleeFenced(fenced_out(theirs, mine))
    } else {
        Verdict::Unrelated(format!(
            "refused: the caller and this member belong to two clusters each forced with 'swarm init --force-new-cluster' from the same one (epochs {} and {}); keep one, and on every manager of the other, {}",
            theirs.text(),
            mine.text(),
            REJOIN.trim_start_matches("to rejoin, ")
        ))
    }
}

/// The epoch saved in `dir`; 0.0 when there is none (a cluster never forced).
pub(crate) fn load(dir: &Path) -> Result<Epoch, StoreError> {
    let path = dir.join(EPOCH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Epoch::parse(&text).ok_or_else(|| {
            StoreError::io(
                &path,
                "the cluster epoch can't be read; restore the file from a backup, or move the data directory aside and rejoin the member",
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Epoch::default()),
        Err(error) => Err(StoreError::io(&path, error)),
    }
}

/// Saves `epoch` in `dir`: temporary file, fsync, rename, fsync the folder.
pub(crate) fn save(dir: &Path, epoch: Epoch) -> Result<(), StoreError> {
    let path = dir.join(EPOCH_FILE);
    let temporary = dir.join(format!("{EPOCH_FILE}.tmp"));
    let written = (|| {
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(format!("{}\n", epoch.text()).as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|error| StoreError::io(&path, error))
}

/// This member's epoch, and whether it knows itself fenced out.
pub(crate) struct Fence {
    dir: PathBuf,
    epoch: Mutex<Epoch>,
    fenced: Mutex<Option<String>>,
}

impl Fence {
    pub(crate) fn open(dir: &Path) -> Result<Fence, StoreError> {
        Ok(Fence {
            dir: dir.to_owned(),
            epoch: Mutex::new(load(dir)?),
            fenced: Mutex::new(None),
        })
    }

    /// The fence of a client that is no member: of no forced cluster, and never serving calls.
    pub(crate) fn of_client() -> Fence {
        Fence {
            dir: PathBuf::new(),
            epoch: Mutex::new(Epoch::default()),
            fenced: Mutex::new(None),
        }
    }

    fn epoch(&self) -> Epoch {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fence(&self, why: &str) {
        let mut fenced = self.fenced.lock().unwrap_or_else(|p| p.into_inner());
        if fenced.is_none() {
            tracing::error!(why, "this member is fenced out of its cluster");
        }
        *fenced = Some(why.to_owned());
    }

    /// Refuses what a fenced-out member must not serve: writes, linearizable reads, membership
    /// changes.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &*self.fenced.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(detail) => Err(StoreError::Fenced {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    /// `message` as a call to another member, with this member's epoch.
    pub(crate) fn tag<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = MetadataValue::try_from(self.epoch().text()) {
            request.metadata_mut().insert(EPOCH_HEADER, value);
        }
        request
    }

    /// A refusal from another member: when it says this member is fenced out, this member
    /// remembers, and the error to report is returned.
    pub(crate) fn note_refusal(&self, status: &Status) -> Option<StoreError> {
        if !status.metadata().contains_key(FENCED_HEADER) {
            return None;
        }
        self.fence(status.message());
        Some(StoreError::Fenced {
            detail: status.message().to_owned(),
        })
    }

    /// Admits a call from another member, or refuses it for its epoch. `fresh` says whether
    /// this member holds no state yet, and is asked only when it matters.
    pub(crate) fn admit<T>(
        &self,
        request: &Request<T>,
        fresh: impl FnOnce() -> bool,
    ) -> Result<(), Status> {
        let theirs = match request.metadata().get(EPOCH_HEADER) {
            None => Epoch::default(),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(Epoch::parse)
                .ok_or_else(|| Status::invalid_argument("an unreadable cluster epoch"))?,
        };
        let mut epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if *epoch == theirs {
            return Ok(());
        }
        match judge(*epoch, theirs, fresh()) {
            Verdict::Admit => Ok(()),
            Verdict::Adopt(adopted) => {
                save(&self.dir, adopted).map_err(|error| Status::unavailable(error.to_string()))?;
                tracing::info!(
                    epoch = adopted.text(),
                    "joined a cluster re-founded by a forced recovery"
                );
                *epoch = adopted;
                Ok(())
            }
            Verdict::CallerFenced(why) => {
                let mut status = Status::failed_precondition(why);
                status
                    .metadata_mut()
                    .insert(FENCED_HEADER, MetadataValue::from_static("1"));
                Err(status)
            }
            Verdict::CalleeFenced(why) => {
                drop(epoch);
                self.fence(&why);
                Err(Status::failed_precondition(
                    "refused: the member called holds the state of the cluster as it was before a forced recovery ('swarm init --force-new-cluster') and is fenced out of this one",
                ))
            }
            Verdict::Unrelated(why) => Err(Status::failed_precondition(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER_FORCED: Epoch = Epoch {
        generation: 0,
        nonce: 0,
    };

    #[test]
    fn members_of_one_epoch_talk() {
        assert_eq!(judge(NEVER_FORCED, NEVER_FORCED, false), Verdict::Admit);
        let forced = NEVER_FORCED.forced(7);
        assert_eq!(judge(forced, forced, false), Verdict::Admit);
    }

    #[test]
    fn the_old_cluster_is_fenced_out_of_the_forced_one_and_told_how_to_rejoin() {
        let forced = NEVER_FORCED.forced(7);
        let Verdict::CallerFenced(why) = judge(forced, NEVER_FORCED, false) else {
            panic!("an old member's call is admitted")
        };
        assert!(why.contains("--force-new-cluster"), "{why}");
        assert!(why.contains("shoal swarm leave --force"), "{why}");
        assert!(why.contains("shoal swarm join"), "{why}");
        // An old member called by the forced cluster learns it is the stale one.
        assert!(matches!(
            judge(NEVER_FORCED, forced, false),
            Verdict::CalleeFenced(_)
        ));
        // So does a cluster forced twice over.
        assert!(matches!(
            judge(forced.forced(9), forced, false),
            Verdict::CallerFenced(_)
        ));
    }

    #[test]
    fn a_member_with_no_state_joins_the_callers_epoch() {
        let forced = NEVER_FORCED.forced(7);
        assert_eq!(judge(NEVER_FORCED, forced, true), Verdict::Adopt(forced));
        // A member with state never changes sides.
        assert!(matches!(
            judge(NEVER_FORCED.forced(3), forced, true),
            Verdict::Unrelated(_)
        ));
    }

    #[test]
    fn two_clusters_forced_from_one_refuse_each_other() {
        let (one, other) = (NEVER_FORCED.forced(1), NEVER_FORCED.forced(2));
        let Verdict::Unrelated(why) = judge(one, other, false) else {
            panic!("two forced clusters talk")
        };
        assert!(why.contains("shoal swarm leave --force"), "{why}");
    }

    #[test]
    fn the_epoch_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), NEVER_FORCED);
        let forced = NEVER_FORCED.forced(u64::MAX);
        save(dir.path(), forced).unwrap();
        assert_eq!(load(dir.path()).unwrap(), forced);
        std::fs::write(dir.path().join(EPOCH_FILE), "garbage").unwrap();
        assert!(load(dir.path()).is_err());
    }
}

//! What can go wrong planning, reading or applying the mesh's table, each saying what to do next.

use crate::vip::VipError;

/// An error of the routing mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(
        "port {port}/{protocol} is published twice on one node: a published port belongs to one \
         service; remove it from the other"
    )]
    DuplicatePort { protocol: &'static str, port: u16 },
    #[error(
        "port {port}/{protocol} has {count} ready tasks, more than the {slots} slots of the mesh: \
         scale the service down"
    )]
    TooManyTasks {
        protocol: &'static str,
        port: u16,
        count: usize,
        slots: u32,
    },
    /// Running or reading nft, shared with the VIP tables.
    #[error(transparent)]
    Nft(#[from] VipError),
}

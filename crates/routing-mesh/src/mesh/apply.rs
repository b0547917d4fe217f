//! The apply shell: reads the mesh's table back through nft and applies the planned change as
//! one transaction (`table`), with the same nft runner as the VIP tables (`vip::Nft`). The table
//! is removed with `vip::remove_table`, which works for any table.
//!
//! Calls block for one or two short nft runs; async code calls them through `spawn_blocking`.

use std::path::Path;

use super::MeshError;
use super::plan::{Change, Mesh, Observed, desired_elements};
use crate::vip::{Nft, TableName};

/// Reads what the mesh's table in `netns` holds.
pub fn read_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<Observed, MeshError> {
    Ok(crate::table::read_table(nft, netns, table)?)
}

/// Makes the table in `netns` serve `mesh`: reads it, plans, and applies the change (when there
/// is one) in one transaction. Returns the change applied. Running it again with the same mesh
/// changes nothing, so it is also what a restarted daemon runs.
pub fn reconcile(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    mesh: &Mesh,
) -> Result<Change, MeshError> {
    Ok(crate::table::reconcile(
        nft,
        netns,
        table,
        &desired_elements(mesh)?,
    )?)
}

/// Brings the table from the mesh it was last made to serve (`applied`, which the caller knows)
/// to `mesh`, planned without reading it back: one nft run, or none when nothing changed. A
/// table changed behind the caller's back is put right only by [`reconcile`].
pub fn update(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    applied: &Mesh,
    mesh: &Mesh,
) -> Result<Change, MeshError> {
    Ok(crate::table::update(
        nft,
        netns,
        table,
        desired_elements(applied)?,
        &desired_elements(mesh)?,
    )?)
}

//! The apply shell: reads the mesh's table back through nft and applies the planned change as
//! one transaction, with the same nft runner as the VIP tables (`vip::Nft`). The table is
//! removed with `vip::remove_table`, which works for any table.
//!
//! Calls block for one or two short nft runs; async code calls them through `spawn_blocking`.

use std::path::Path;

use super::MeshError;
use super::observe::observe;
use super::plan::{Change, Observed, PublishedPort, desired_elements, plan};
use crate::vip::{Nft, TableName, VipError};

/// Reads what the table in `netns` holds.
pub fn read_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<Observed, MeshError> {
    match nft.list_table(netns, table)? {
        None => Ok(Observed::Absent),
        Some(listing) => observe(&listing).ok_or_else(|| {
            MeshError::Nft(VipError::Listing {
                table: table.as_str().to_owned(),
                netns: netns.to_owned(),
                detail: listing.chars().take(200).collect(),
            })
        }),
    }
}

/// Makes the table in `netns` serve `ports`: reads it, plans, and applies the change (when there
/// is one) in one transaction. Returns the change applied. Running it again with the same ports
/// changes nothing, so it is also what a restarted daemon runs.
pub fn reconcile(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    ports: &[PublishedPort],
) -> Result<Change, MeshError> {
    let desired = desired_elements(ports)?;
    let change = plan(&read_table(nft, netns, table)?, &desired);
    apply(nft, netns, table, &change)?;
    Ok(change)
}

/// Brings the table from the ports it was last made to serve (`applied`, which the caller knows)
/// to `ports`, planned without reading it back: one nft run, or none when nothing changed. A
/// table changed behind the caller's back is put right only by [`reconcile`].
pub fn update(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    applied: &[PublishedPort],
    ports: &[PublishedPort],
) -> Result<Change, MeshError> {
    let change = plan(
        &Observed::Layout(desired_elements(applied)?),
        &desired_elements(ports)?,
    );
    apply(nft, netns, table, &change)?;
    Ok(change)
}

fn apply(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    change: &Change,
) -> Result<(), MeshError> {
    if change.is_empty() {
        return Ok(());
    }
    Ok(nft.run(netns, &change.script(table))?)
}

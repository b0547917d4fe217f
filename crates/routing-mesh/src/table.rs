//! What the VIP tables and the mesh's table share: a table of fixed rules whose elements are all
//! that varies, read back from nft's JSON, planned as the element commands that make it hold
//! what is wanted, and applied as one nft transaction. Each table says what its elements are
//! ([`TableElements`]); the planning, the scripts and the apply steps are written once here.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::vip::{Nft, TableName, VipError};

/// The elements of one kind of table, and its fixed layout.
pub trait TableElements: Clone + Default + PartialEq {
    /// The table's sets, maps, chains and rules with no element; `{table}` stands for its name.
    const LAYOUT: &'static str;

    fn is_empty(&self) -> bool;

    /// What `self` holds and `other` does not (an element whose data differs counts as held only
    /// by the one it is read from).
    fn minus(&self, other: &Self) -> Self;

    /// Each set's or map's elements as nft writes them: with their data when `data`, keys only
    /// otherwise (what `delete element` takes).
    fn lines(&self, data: bool) -> Vec<(&'static str, Vec<String>)>;

    /// Reads the elements from nft's JSON objects of one table; `None` when the table's sets,
    /// maps and chains are not exactly the layout's.
    fn read_layout(objects: &[Value]) -> Option<Self>;
}

/// What a table holds now, as read back by the apply shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed<E> {
    /// No table of that name.
    Absent,
    /// A table whose sets, maps and rules are not exactly the layout's (an older layout, or
    /// edited by hand): it is replaced whole.
    OtherLayout,
    /// A table with this layout, holding these elements.
    Layout(E),
}

/// What happens to the table itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableAction {
    /// It is kept; only elements change.
    Keep,
    /// It is made.
    Create,
    /// It is deleted and made again in the same transaction.
    Replace,
}

/// The commands that turn what a table holds into what is wanted: one nft transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<E> {
    pub table: TableAction,
    pub delete: E,
    pub add: E,
}

impl<E: TableElements> Change<E> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.table == TableAction::Keep && self.delete.is_empty() && self.add.is_empty()
    }

    /// True when no rule, chain, set or table is touched: the change is element commands only.
    pub fn elements_only(&self) -> bool {
        self.table == TableAction::Keep
    }

    /// The `nft -f` script of the change, one transaction. Deletions come before additions, so
    /// an element's key can be handed to other data within one change.
    pub fn script(&self, table: &TableName) -> String {
        let name = table.as_str();
        let mut script = String::new();
        match self.table {
            TableAction::Keep => {}
            TableAction::Create => script.push_str(&E::LAYOUT.replace("{table}", name)),
            TableAction::Replace => {
                // `add table` first, so the delete cannot fail on a table gone meanwhile.
                let _ = writeln!(script, "add table inet {name}");
                let _ = writeln!(script, "delete table inet {name}");
                script.push_str(&E::LAYOUT.replace("{table}", name));
            }
        }
        for (verb, elements, data) in [("delete", &self.delete, false), ("add", &self.add, true)] {
            for (set, items) in elements.lines(data) {
                if !items.is_empty() {
                    let _ = writeln!(
                        script,
                        "{verb} element inet {name} {set} {{ {} }}",
                        items.join(", ")
                    );
                }
            }
        }
        script
    }
}

/// The change from what a table holds (`observed`) to `desired`.
pub fn plan<E: TableElements>(observed: &Observed<E>, desired: &E) -> Change<E> {
    match observed {
        Observed::Absent => Change {
            table: TableAction::Create,
            delete: E::default(),
            add: desired.clone(),
        },
        Observed::OtherLayout => Change {
            table: TableAction::Replace,
            delete: E::default(),
            add: desired.clone(),
        },
        Observed::Layout(current) => Change {
            table: TableAction::Keep,
            delete: current.minus(desired),
            add: desired.minus(current),
        },
    }
}

/// Reads nft's JSON listing of one table. `None` when it is not JSON of nft's shape at all.
pub(crate) fn observe<E: TableElements>(listing: &str) -> Option<Observed<E>> {
    let root: Value = serde_json::from_str(listing).ok()?;
    let objects = root.get("nftables")?.as_array()?;
    Some(E::read_layout(objects).map_or(Observed::OtherLayout, Observed::Layout))
}

/// Reads what the table in `netns` holds.
pub(crate) fn read_table<E: TableElements>(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
) -> Result<Observed<E>, VipError> {
    match nft.list_table(netns, table)? {
        None => Ok(Observed::Absent),
        Some(listing) => observe(&listing).ok_or_else(|| VipError::Listing {
            table: table.as_str().to_owned(),
            netns: netns.to_owned(),
            detail: listing.chars().take(200).collect(),
        }),
    }
}

/// Makes the table in `netns` hold `desired`: reads it, plans, and applies the change (when there
/// is one) in one transaction. Returns the change applied. Running it again changes nothing, so
/// it is also what a restarted daemon runs.
pub(crate) fn reconcile<E: TableElements>(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    desired: &E,
) -> Result<Change<E>, VipError> {
    let change = plan(&read_table(nft, netns, table)?, desired);
    apply(nft, netns, table, &change)?;
    Ok(change)
}

/// Brings a table from the elements it was last given (`applied`, which the caller knows) to
/// `desired`, planned without reading it back: one nft run, or none when they are the same. A
/// table changed behind the caller's back is put right only by [`reconcile`].
pub(crate) fn update<E: TableElements>(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    applied: E,
    desired: &E,
) -> Result<Change<E>, VipError> {
    let change = plan(&Observed::Layout(applied), desired);
    apply(nft, netns, table, &change)?;
    Ok(change)
}

/// Applies a planned change, when there is one, as one nft run.
pub fn apply<E: TableElements>(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    change: &Change<E>,
) -> Result<(), VipError> {
    if change.is_empty() {
        return Ok(());
    }
    nft.run(netns, &change.script(table))
}

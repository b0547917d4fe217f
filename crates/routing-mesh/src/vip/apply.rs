//! The apply shell: runs nft inside a task's network namespace (`nsenter --net=PATH nft`, through
//! overlay-net's runner), reads the table back, and applies the planned change as one
//! transaction.
//!
//! Calls block for one or two short nft runs; async code calls them through `spawn_blocking`.

use std::path::Path;

use overlay_net::nft::{NftError, NftRunner};

use super::VipError;
use super::plan::{Change, Observed, TableName, VipService, desired_elements};

/// nft as the apply step sees it: a script run as one transaction, and a table listed as JSON.
/// [`NftInNamespace`] is the real one.
pub trait Nft {
    /// Runs `script` with `nft -f -` inside the namespace at `netns`.
    fn run(&self, netns: &Path, script: &str) -> Result<(), VipError>;
    /// `nft -j list table inet NAME` inside the namespace; `None` when there is no such table.
    fn list_table(&self, netns: &Path, table: &TableName) -> Result<Option<String>, VipError>;
}

/// Runs the `nft` binary through `nsenter --net=PATH` (overlay-net's runner, the node's one way
/// to run nft), so nothing of this process enters the namespace.
pub use overlay_net::nft::NftRunner as NftInNamespace;

fn vip_error(error: NftError) -> VipError {
    match error {
        NftError::Spawn { program, source } => VipError::Spawn { program, source },
        NftError::Failed { netns, stderr } => VipError::Nft {
            netns: netns.unwrap_or_default(),
            stderr,
        },
    }
}

impl Nft for NftInNamespace {
    fn run(&self, netns: &Path, script: &str) -> Result<(), VipError> {
        NftRunner::run(self, Some(netns), script).map_err(vip_error)
    }

    fn list_table(&self, netns: &Path, table: &TableName) -> Result<Option<String>, VipError> {
        self.list(Some(netns), true, &["table", "inet", table.as_str()])
            .map_err(vip_error)
    }
}

/// Reads what the VIP table in `netns` holds.
pub fn read_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<Observed, VipError> {
    crate::table::read_table(nft, netns, table)
}

/// Makes the table in `netns` balance `services`: reads it, plans, and applies the change (when
/// there is one) in one transaction. Returns the change applied. Running it again with the same
/// services changes nothing, so it is also what a restarted daemon runs.
pub fn reconcile(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    services: &[VipService],
) -> Result<Change, VipError> {
    crate::table::reconcile(nft, netns, table, &desired_elements(services)?)
}

/// Brings a table from the services it was last made to balance (`applied`, which the caller
/// knows) to `services`, planned without reading it back: one nft run, or none when the
/// elements are the same. A table changed behind the caller's back is put right only by
/// [`reconcile`].
pub fn update(
    nft: &impl Nft,
    netns: &Path,
    table: &TableName,
    applied: &[VipService],
    services: &[VipService],
) -> Result<Change, VipError> {
    crate::table::update(
        nft,
        netns,
        table,
        desired_elements(applied)?,
        &desired_elements(services)?,
    )
}

/// Removes the table from `netns`, if it is there.
pub fn remove_table(nft: &impl Nft, netns: &Path, table: &TableName) -> Result<(), VipError> {
    let name = table.as_str();
    // `add` first makes `delete` succeed when the table is already gone.
    nft.run(
        netns,
        &format!("add table inet {name}\ndelete table inet {name}\n"),
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::vip::{TableAction, VipPorts};

    /// nft 1.0.6's listing of the layout with no element.
    const EMPTY_LAYOUT: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "shoal", "handle": 1}}, {"map": {"family": "inet", "name": "backends", "table": "shoal", "type": ["ipv4_addr", "integer"], "handle": 3, "map": "ipv4_addr", "flags": ["interval"]}}, {"set": {"family": "inet", "name": "vip_ports", "table": "shoal", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 4}}, {"set": {"family": "inet", "name": "vip_any", "table": "shoal", "type": "ipv4_addr", "handle": 5}}, {"set": {"family": "inet", "name": "vips", "table": "shoal", "type": "ipv4_addr", "handle": 6}}, {"chain": {"family": "inet", "table": "shoal", "name": "nat_output", "handle": 1, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}}, {"chain": {"family": "inet", "table": "shoal", "name": "filter_output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": "inet", "table": "shoal", "chain": "nat_output", "handle": 7, "expr": [{"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"numgen": {"mode": "random", "mod": 720720, "offset": 0}}]}, "data": "@backends"}}}}]}}, {"rule": {"family": "inet", "table": "shoal", "chain": "nat_output", "handle": 8, "expr": [{"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"numgen": {"mode": "random", "mod": 720720, "offset": 0}}]}, "data": "@backends"}}}}]}}, {"rule": {"family": "inet", "table": "shoal", "chain": "filter_output", "handle": 9, "expr": []}}, {"rule": {"family": "inet", "table": "shoal", "chain": "filter_output", "handle": 10, "expr": []}}]}"#;

    /// Lists a fixed table and records the scripts it is given.
    struct RecordingNft {
        listing: Option<String>,
        scripts: RefCell<Vec<String>>,
    }

    impl RecordingNft {
        fn listing(listing: Option<&str>) -> RecordingNft {
            RecordingNft {
                listing: listing.map(str::to_owned),
                scripts: RefCell::new(Vec::new()),
            }
        }
    }

    impl Nft for RecordingNft {
        fn run(&self, _netns: &Path, script: &str) -> Result<(), VipError> {
            self.scripts.borrow_mut().push(script.to_owned());
            Ok(())
        }

        fn list_table(
            &self,
            _netns: &Path,
            _table: &TableName,
        ) -> Result<Option<String>, VipError> {
            Ok(self.listing.clone())
        }
    }

    fn one_service() -> Vec<VipService> {
        vec![VipService {
            vip: "10.0.1.2".parse().expect("address"),
            ports: VipPorts::All,
            backends: BTreeSet::from(["10.0.1.5".parse().expect("address")]),
        }]
    }

    fn table() -> TableName {
        TableName::new("shoal").expect("name")
    }

    #[test]
    fn a_table_already_as_wanted_is_left_alone() {
        let nft = RecordingNft::listing(Some(EMPTY_LAYOUT));
        let change = reconcile(&nft, Path::new("/run/netns/t"), &table(), &[]).expect("reconcile");
        assert!(change.is_empty());
        assert!(nft.scripts.borrow().is_empty(), "{:?}", nft.scripts);
    }

    #[test]
    fn a_found_table_gets_element_commands_and_a_missing_one_is_made() {
        let nft = RecordingNft::listing(Some(EMPTY_LAYOUT));
        reconcile(&nft, Path::new("/run/netns/t"), &table(), &one_service()).expect("reconcile");
        assert_eq!(
            nft.scripts.borrow().as_slice(),
            [
                "add element inet shoal backends { 10.0.1.2 . 0-720719 : 10.0.1.5 }\n\
              add element inet shoal vip_any { 10.0.1.2 }\n\
              add element inet shoal vips { 10.0.1.2 }\n"
            ]
        );

        let nft = RecordingNft::listing(None);
        let change = reconcile(&nft, Path::new("/run/netns/t"), &table(), &one_service())
            .expect("reconcile");
        assert_eq!(change.table, TableAction::Create);
        assert!(nft.scripts.borrow()[0].starts_with("table inet shoal {\n"));
    }

    #[test]
    fn an_update_from_known_elements_runs_only_the_difference_and_reads_nothing() {
        // A listing that would fail to parse: `update` must not read the table.
        let nft = RecordingNft::listing(Some("not read"));
        let mut moved = one_service();
        moved[0].backends = BTreeSet::from(["10.0.1.6".parse().expect("address")]);
        update(
            &nft,
            Path::new("/run/netns/t"),
            &table(),
            &one_service(),
            &moved,
        )
        .expect("update");
        assert_eq!(
            nft.scripts.borrow().as_slice(),
            [
                "delete element inet shoal backends { 10.0.1.2 . 0-720719 }\n\
              add element inet shoal backends { 10.0.1.2 . 0-720719 : 10.0.1.6 }\n"
            ]
        );

        let unchanged = RecordingNft::listing(None);
        let change = update(
            &unchanged,
            Path::new("/run/netns/t"),
            &table(),
            &moved,
            &moved,
        )
        .expect("update");
        assert!(change.is_empty());
        assert!(unchanged.scripts.borrow().is_empty());
    }

    #[test]
    fn a_listing_that_is_not_nft_json_is_an_error_and_nothing_runs() {
        let nft = RecordingNft::listing(Some("Error: something else"));
        let error = reconcile(&nft, Path::new("/run/netns/t"), &table(), &one_service())
            .expect_err("refused");
        assert!(matches!(error, VipError::Listing { .. }), "{error}");
        assert!(nft.scripts.borrow().is_empty());
    }
}

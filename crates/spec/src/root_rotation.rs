//! How far a root CA rotation has come: which nodes already show a certificate from the new
//! root. The leader finishes a rotation once none is left; `swarm ca --rotate` shows the count
//! while it waits. One rule over the stored cluster and nodes, read by both.

use shoal_proto::api::{Cluster, Node, node_status};

/// How far a root rotation has come, over the nodes that are not down (down nodes are not
/// waited for): the nodes (ids) whose last session showed a certificate from the new root, and
/// those still waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationProgress {
    pub moved: Vec<String>,
    pub left: Vec<String>,
}

/// Where the root rotation under way in `cluster` stands among `nodes`; `None` when there is
/// none.
pub fn root_rotation_progress(cluster: &Cluster, nodes: &[Node]) -> Option<RotationProgress> {
    let rotation = cluster
        .root_ca
        .as_ref()
        .and_then(|root| root.root_rotation.as_ref())?;
    let (moved, left): (Vec<&Node>, Vec<&Node>) = nodes
        .iter()
        .filter(|node| {
            node.status
                .as_ref()
                .is_none_or(|status| status.state() != node_status::State::Down)
        })
        .partition(|node| {
            node.certificate
                .as_ref()
                .is_some_and(|certificate| signed_by(&certificate.certificate, &rotation.ca_cert))
        });
    let ids = |nodes: Vec<&Node>| nodes.into_iter().map(|node| node.id.clone()).collect();
    Some(RotationProgress {
        moved: ids(moved),
        left: ids(left),
    })
}

/// Whether the first certificate in `cert_pem` carries a valid signature by the key of the
/// first certificate in `root_pem`; anything unreadable is not signed.
fn signed_by(cert_pem: &[u8], root_pem: &[u8]) -> bool {
    let (Ok((_, leaf_block)), Ok((_, root_block))) = (
        x509_parser::pem::parse_x509_pem(cert_pem),
        x509_parser::pem::parse_x509_pem(root_pem),
    ) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, root))) = (
        x509_parser::parse_x509_certificate(&leaf_block.contents),
        x509_parser::parse_x509_certificate(&root_block.contents),
    ) else {
        return false;
    };
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use rcgen::{Issuer, KeyPair};
    use shoal_proto::api::{Certificate, NodeStatus, RootCa, RootRotation};

    use super::*;
    use crate::test_ca::{leaf, root};

    fn node(id: &str, signer: &Issuer<'_, KeyPair>, state: node_status::State) -> Node {
        Node {
            id: id.to_owned(),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            certificate: Some(Certificate {
                certificate: leaf(id, signer).into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_root_rotation_waits_for_every_node_that_is_not_down() {
        let (old_pem, old) = root("old");
        let (next_pem, next) = root("next");
        let nodes = vec![
            node("moved", &next, node_status::State::Ready),
            node("behind", &old, node_status::State::Ready),
            node("down", &old, node_status::State::Down),
            Node {
                id: "no-certificate".to_owned(),
                ..Default::default()
            },
        ];
        let mut cluster = Cluster {
            root_ca: Some(RootCa {
                ca_cert: old_pem.into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(root_rotation_progress(&cluster, &nodes), None);

        if let Some(root) = cluster.root_ca.as_mut() {
            root.root_rotation = Some(RootRotation {
                ca_cert: next_pem.into_bytes(),
                ..Default::default()
            });
        }
        let progress = root_rotation_progress(&cluster, &nodes);
        assert_eq!(
            progress,
            Some(RotationProgress {
                moved: vec!["moved".to_owned()],
                left: vec!["behind".to_owned(), "no-certificate".to_owned()],
            })
        );
    }

    #[test]
    fn an_unreadable_certificate_has_not_moved() {
        let (root_pem, _) = root("next");
        assert!(!signed_by(b"not a certificate", root_pem.as_bytes()));
        assert!(!signed_by(root_pem.as_bytes(), b"not a root"));
    }
}

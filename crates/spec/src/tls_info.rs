//! Docker's TLS information: the roots a node trusts, and the subject and public key of the
//! authority that issued a certificate. The docker CLI shows a node's TLS status as ready when
//! the node's information equals the cluster's, and as needing rotation when it does not (a
//! node still on the old root during a root CA rotation).

use shoal_proto::api::{NodeTlsInfo, RootCa};
use x509_parser::certificate::X509Certificate;

/// The cluster's own: its root CA certificate, and that certificate's subject and public key.
/// `None` when the root is unreadable.
pub fn of_cluster(root_ca: &RootCa) -> Option<NodeTlsInfo> {
    let root = parse_pem(&root_ca.ca_cert)?;
    let root = parsed(&root)?;
    Some(NodeTlsInfo {
        trust_root: root_ca.ca_cert.clone(),
        cert_issuer_subject: root.tbs_certificate.subject.as_raw().to_vec(),
        cert_issuer_public_key: root.public_key().raw.to_vec(),
    })
}

/// A node's, from the certificate it presented (`leaf_pem`) and the roots it was given to trust
/// (`trust_root`, PEM): the issuer among `root_ca`'s certificates (the root and, during a
/// rotation, the new one) whose key signed the leaf. A leaf none of them signed keeps its
/// issuer's name and no key, so it never equals the cluster's. `None` when the leaf is
/// unreadable.
pub fn of_node(leaf_pem: &[u8], trust_root: &[u8], root_ca: &RootCa) -> Option<NodeTlsInfo> {
    let leaf = parse_pem(leaf_pem)?;
    let leaf = parsed(&leaf)?;
    let candidates = std::iter::once(&root_ca.ca_cert).chain(
        root_ca
            .root_rotation
            .as_ref()
            .map(|rotation| &rotation.ca_cert),
    );
    let issuer = candidates.filter_map(|pem| parse_pem(pem)).find_map(|der| {
        let issuer = parsed(&der)?;
        leaf.verify_signature(Some(issuer.public_key()))
            .is_ok()
            .then(|| {
                (
                    issuer.tbs_certificate.subject.as_raw().to_vec(),
                    issuer.public_key().raw.to_vec(),
                )
            })
    });
    let (cert_issuer_subject, cert_issuer_public_key) =
        issuer.unwrap_or_else(|| (leaf.tbs_certificate.issuer.as_raw().to_vec(), Vec::new()));
    Some(NodeTlsInfo {
        trust_root: trust_root.to_vec(),
        cert_issuer_subject,
        cert_issuer_public_key,
    })
}

/// The docker CLI's TLS status of a node: `Ready` when its information equals the cluster's,
/// `Needs Rotation` when it differs, `Unknown` when either is missing.
pub fn status(node: Option<&NodeTlsInfo>, cluster: Option<&NodeTlsInfo>) -> &'static str {
    let empty = NodeTlsInfo::default();
    match (
        node.filter(|info| **info != empty),
        cluster.filter(|info| **info != empty),
    ) {
        (Some(node), Some(cluster)) if node == cluster => "Ready",
        (Some(_), Some(_)) => "Needs Rotation",
        _ => "Unknown",
    }
}

/// The DER of the first certificate in `pem`.
fn parse_pem(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    Some(block.contents)
}

fn parsed(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, certificate)| certificate)
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::RootRotation;

    use super::*;
    use crate::test_ca::{leaf, root};

    #[test]
    fn a_node_signed_by_the_root_has_the_clusters_information_and_one_on_another_root_not() {
        let (old_pem, old) = root("swarm-ca");
        let (new_pem, new) = root("swarm-ca");
        let mut root_ca = RootCa {
            ca_cert: old_pem.clone().into_bytes(),
            ..Default::default()
        };
        let cluster = of_cluster(&root_ca).expect("the cluster's");
        assert_eq!(cluster.trust_root, old_pem.as_bytes());
        assert!(!cluster.cert_issuer_subject.is_empty());
        assert!(!cluster.cert_issuer_public_key.is_empty());

        let on_old = of_node(leaf("node", &old).as_bytes(), old_pem.as_bytes(), &root_ca);
        assert_eq!(on_old.as_ref(), Some(&cluster));

        // Same name, another key: not the cluster's issuer.
        let stranger = of_node(leaf("node", &new).as_bytes(), old_pem.as_bytes(), &root_ca)
            .expect("a readable leaf");
        assert_eq!(stranger.cert_issuer_subject, cluster.cert_issuer_subject);
        assert!(stranger.cert_issuer_public_key.is_empty());
        assert_ne!(stranger, cluster);

        // During a rotation to the new root, a node it signed names the new root's key.
        root_ca.root_rotation = Some(RootRotation {
            ca_cert: new_pem.clone().into_bytes(),
            ..Default::default()
        });
        let moved = of_node(leaf("node", &new).as_bytes(), old_pem.as_bytes(), &root_ca)
            .expect("a readable leaf");
        let new_root = of_cluster(&RootCa {
            ca_cert: new_pem.into_bytes(),
            ..Default::default()
        })
        .expect("the new root's");
        assert_eq!(
            moved.cert_issuer_public_key,
            new_root.cert_issuer_public_key
        );

        assert_eq!(status(on_old.as_ref(), Some(&cluster)), "Ready");
        assert_eq!(status(Some(&stranger), Some(&cluster)), "Needs Rotation");
        assert_eq!(status(None, Some(&cluster)), "Unknown");
        assert_eq!(status(Some(&cluster), None), "Unknown");
        assert_eq!(of_node(b"not a certificate", b"", &root_ca), None);
        assert_eq!(of_cluster(&RootCa::default()), None);
    }
}

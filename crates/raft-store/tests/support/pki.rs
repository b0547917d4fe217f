//! Test credentials: a throwaway root CA and member certificates shaped like Swarm's (CN = member
//! id, OU = swarm-manager, DNS name swarm-manager), and members' data keys.

use raft_store::{DataKey, MANAGER_SERVER_NAME, TlsIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Member `member`'s data key: the same at every call, so a restarted member opens its data.
pub fn data_key(member: u64) -> DataKey {
    let mut bytes = [0x5a; DataKey::LEN];
    bytes[..8].copy_from_slice(&member.to_le_bytes());
    DataKey::from_bytes(bytes)
}

pub struct TestPki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("generating a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "swarm-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_params
            .self_signed(&ca_key)
            .expect("self-signing the CA")
            .pem();
        TestPki {
            ca_params,
            ca_key,
            ca_pem,
        }
    }

    pub fn identity(&self, member: u64) -> TlsIdentity {
        let key = KeyPair::generate().expect("generating a member key");
        let mut params = CertificateParams::new(vec![MANAGER_SERVER_NAME.to_owned()])
            .expect("member parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, member.to_string());
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "swarm-manager");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("signing a member certificate");
        TlsIdentity {
            ca_pem: self.ca_pem.clone().into_bytes(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// Writes `ca.pem`, `member-N.pem` and `member-N.key` for members `1..=count` into `dir`, the
    /// layout `raft_store::standalone` reads, and each member's data key as `member-N.dek`.
    pub fn write_dir(&self, dir: &std::path::Path, count: u64) {
        std::fs::create_dir_all(dir).expect("creating the TLS folder");
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).expect("writing ca.pem");
        for member in 1..=count {
            let identity = self.identity(member);
            std::fs::write(dir.join(format!("member-{member}.pem")), identity.cert_pem)
                .expect("writing a certificate");
            std::fs::write(dir.join(format!("member-{member}.key")), identity.key_pem)
                .expect("writing a key");
            std::fs::write(
                dir.join(format!("member-{member}.dek")),
                data_key(member).as_bytes(),
            )
            .expect("writing a data key");
        }
    }
}

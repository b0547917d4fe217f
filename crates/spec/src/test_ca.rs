//! Certificates for the unit tests that read them: a root CA and the leaves it signs.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A root CA named `name`: its certificate (PEM) and the issuer that signs with its key.
pub(crate) fn root(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("root parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("a self-signed root");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate (PEM) for `name`, signed by `signer`.
pub(crate) fn leaf(name: &str, signer: &Issuer<'_, KeyPair>) -> String {
    let key = KeyPair::generate().expect("a key");
    let params = CertificateParams::new(vec![name.to_owned()]).expect("leaf parameters");
    params.signed_by(&key, signer).expect("a leaf").pem()
}

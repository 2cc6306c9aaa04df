//! The API server's TLS: a serving certificate signed by the cluster CA (SANs 127.0.0.1,
//! localhost and the in-cluster names kubeadm puts there), and client certificates verified
//! against that CA with rustls' `WebPkiClientVerifier` — on rustls' aws-lc-rs provider, never a
//! process-wide default. Offers HTTP/1.1 only over ALPN.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Sign the serving certificate for `kube-apiserver` with the CA (PEM): (certificate DER, key
/// DER).
fn serving_cert(ca_cert: &str, ca_key: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::from_pem(ca_key).expect("cluster CA key PEM");
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert, key).expect("cluster CA certificate PEM");
    let sans: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    let mut p = rcgen::CertificateParams::new(sans).expect("SANs");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = rcgen::KeyPair::generate().expect("serving key");
    let cert = p
        .signed_by(&leaf, &issuer)
        .expect("sign the serving certificate");
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.serialize_der())),
    )
}

/// The TLS acceptor: serving certificate by the CA, client certificates verified against the
/// CA. A client without a certificate completes the handshake (its requests get `401`, as the
/// real server answers an anonymous request when anonymous auth is off); one with a
/// certificate the CA did not sign fails the handshake.
pub(crate) fn acceptor(ca_cert: &str, ca_key: &str) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_cert.as_bytes()) {
        roots
            .add(der.expect("cluster CA certificate PEM"))
            .expect("a CA certificate rustls accepts");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
    let (cert, key) = serving_cert(ca_cert, ca_key);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .expect("serving certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

//! The cluster's PKI: CAs, the service-account key pair, client certificates for kubeconfigs,
//! and the `kubeadm join` discovery hash.
//!
//! kprov makes the CAs itself (at `kprov create` time, see [`crate::secrets::ensure`]) and hands
//! them to kubeadm on every control-plane node; kubeadm uses existing CAs as they are and signs
//! every other certificate with them. That way the discovery hash is known before any VM exists
//! and `kprov export kubeconfig` can sign admin certificates without touching a node.
//!
//! **Key algorithm:** RSA 2048 with PKCS#1 v1.5 / SHA-256 signatures ([`KEY_ALGORITHM`]) —
//! what kubeadm generates itself by default. rcgen can generate RSA keys with its `aws_lc_rs`
//! backend (which kprov links anyway, through the S3 store's TLS stack); private keys are stored
//! as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which kubeadm, the API server and the
//! controller manager all read.

use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, RsaKeySize, SerialNumber, PKCS_RSA_SHA256,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub mod token;

pub use token::{is_valid_token, new_bootstrap_token, new_certificate_key, BootstrapToken};

/// The key algorithm of every key kprov generates (CAs, service-account key, client certs).
pub const KEY_ALGORITHM: &str = "RSA 2048, PKCS#1 v1.5 with SHA-256";

/// Common name of the cluster CA (kubeadm's `ca.crt`).
pub const CLUSTER_CA_CN: &str = "kubernetes";
/// Common name of the front-proxy CA (kubeadm's `front-proxy-ca.crt`).
pub const FRONT_PROXY_CA_CN: &str = "front-proxy-ca";
/// Common name of the etcd CA (kubeadm's `etcd/ca.crt`).
pub const ETCD_CA_CN: &str = "etcd-ca";

/// Lifetime of the CAs kprov makes: 10 years, like kubeadm's.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);

/// How far back certificates are dated, so that nodes whose clocks lag a little accept them
/// (kubeadm backdates by the same amount).
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA: certificate and private key, PEM.
#[derive(Clone)]
pub struct CaPair {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8). Never printed.
    pub key_pem: String,
}

impl std::fmt::Debug for CaPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Errors of the PKI functions. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation failed.
    #[error("cannot generate a {KEY_ALGORITHM} key: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Building or signing a certificate failed.
    #[error("cannot sign the certificate for {cn:?}: {source}")]
    Sign {
        /// Subject common name.
        cn: String,
        /// What rcgen reported (it never includes key material).
        #[source]
        source: rcgen::Error,
    },
    /// A certificate does not parse.
    #[error("{what} is not a PEM X.509 certificate: {why}")]
    BadCertificate {
        /// Which certificate, e.g. `CA "kubernetes"`.
        what: String,
        /// The parser's message (never the certificate's bytes).
        why: String,
    },
    /// A private key does not parse. The key itself is never part of the message.
    #[error("{what} is not a PEM private key kprov can use (PKCS#8, PKCS#1 or SEC1 RSA/ECDSA/Ed25519 key)")]
    BadKey {
        /// Which key.
        what: String,
    },
    /// A CA's private key does not belong to its certificate.
    #[error("the private key of CA {cn:?} does not match its certificate")]
    KeyMismatch {
        /// The CA's common name.
        cn: String,
    },
    /// A certificate cannot be issued with these parameters.
    #[error("invalid certificate request: {0}")]
    Invalid(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Fill `buf` from the operating system's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), PkiError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| PkiError::Random(e.to_string()))
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(PkiError::KeyGeneration)
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    // Positive (MSB clear) and of fixed length (second-highest bit set).
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

/// `now - BACKDATE` and `now + validity`.
fn validity_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if validity < Duration::from_secs(60) {
        return Err(PkiError::Invalid(format!(
            "validity {}s is too short; give at least one minute",
            validity.as_secs()
        )));
    }
    let now = OffsetDateTime::now_utc();
    let not_after = now
        .checked_add(time::Duration::seconds(
            i64::try_from(validity.as_secs()).unwrap_or(i64::MAX),
        ))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| {
            PkiError::Invalid(format!("validity {}s is too long", validity.as_secs()))
        })?;
    let not_before = now - time::Duration::seconds(BACKDATE.as_secs() as i64);
    Ok((not_before, not_after))
}

/// Make a self-signed CA: RSA 2048, `CA:TRUE`, key usage keyCertSign, cRLSign and
/// digitalSignature, subject `CN=common_name`, valid for [`CA_VALIDITY`] (10 years).
pub fn new_ca(common_name: &str) -> Result<CaPair, PkiError> {
    let key = new_key()?;
    let cert_pem = self_signed_ca_cert(common_name, &key)?;
    Ok(CaPair {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Make the self-signed CA certificate for an existing CA key (PEM). Used when a store holds a
/// CA key whose certificate was never written (a run stopped in between).
pub fn ca_cert_for_key(common_name: &str, key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::BadKey {
        what: format!("the key of CA {common_name:?}"),
    })?;
    self_signed_ca_cert(common_name, &key)
}

fn self_signed_ca_cert(common_name: &str, key: &KeyPair) -> Result<String, PkiError> {
    let (not_before, not_after) = validity_window(CA_VALIDITY)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(key).map_err(|source| PkiError::Sign {
        cn: common_name.into(),
        source,
    })?;
    Ok(cert.pem())
}

/// Make the service-account signing key pair: `key_pem` is the private key (PKCS#8 PEM, kubeadm's
/// `sa.key`), `cert_pem` the public key (`-----BEGIN PUBLIC KEY-----`, kubeadm's `sa.pub`).
pub fn new_service_account_key() -> Result<CaPair, PkiError> {
    let key = new_key()?;
    Ok(CaPair {
        cert_pem: key.public_key_pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Sign a client certificate with `ca`: a new RSA 2048 key, subject `CN=cn` with one `O=` per
/// entry of `orgs` (Kubernetes reads them as groups; at most two), extended key usage
/// clientAuth, valid from five minutes ago for `validity` (at least one minute). Returns
/// `(cert_pem, key_pem)`.
pub fn sign_client_cert(
    ca: &CaPair,
    cn: &str,
    orgs: &[&str],
    validity: Duration,
) -> Result<(String, String), PkiError> {
    check_pair(ca)?;
    let ca_cn = common_name(&ca.cert_pem)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|_| PkiError::BadKey {
        what: format!("the key of CA {ca_cn:?}"),
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|e| PkiError::BadCertificate {
            what: format!("CA {ca_cn:?}"),
            why: e.to_string(),
        })?;
    let (not_before, not_after) = validity_window(validity)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // rcgen keeps one value per attribute type; a second organisation goes in as the same OID
    // under a custom type, which encodes identically (a second O= RDN).
    match orgs {
        [] => {}
        [o] => params.distinguished_name.push(DnType::OrganizationName, *o),
        [o1, o2] => {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *o1);
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), *o2);
        }
        _ => {
            return Err(PkiError::Invalid(format!(
                "{} organizations for {cn:?}; at most two are supported",
                orgs.len()
            )))
        }
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let key = new_key()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Sign {
            cn: cn.into(),
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The DER of the first certificate in a PEM text.
pub fn cert_der(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let bad = |why: String| PkiError::BadCertificate {
        what: "certificate".into(),
        why,
    };
    let block = pem::parse(cert_pem).map_err(|e| bad(e.to_string()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(bad(format!(
            "the PEM block is a {:?}, not a CERTIFICATE",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Run `f` on the parsed certificate of a PEM text.
fn with_cert<T>(
    cert_pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Result<T, PkiError> {
    let der = cert_der(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadCertificate {
            what: "certificate".into(),
            why: e.to_string(),
        })?;
    Ok(f(&cert))
}

/// The subject common name of a PEM certificate (empty if it has none).
pub fn common_name(cert_pem: &str) -> Result<String, PkiError> {
    with_cert(cert_pem, |c| {
        c.subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    })
}

/// The end of a PEM certificate's validity.
pub fn not_after(cert_pem: &str) -> Result<chrono::DateTime<chrono::Utc>, PkiError> {
    let ts = with_cert(cert_pem, |c| c.validity().not_after.timestamp())?;
    chrono::DateTime::from_timestamp(ts, 0).ok_or_else(|| PkiError::BadCertificate {
        what: "certificate".into(),
        why: "notAfter out of range".into(),
    })
}

/// The DER SubjectPublicKeyInfo of a PEM certificate.
pub fn spki_der(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    with_cert(cert_pem, |c| c.tbs_certificate.subject_pki.raw.to_vec())
}

/// The `kubeadm join --discovery-token-ca-cert-hash` value of a CA: `sha256:` and the lowercase
/// hex SHA-256 of the certificate's DER SubjectPublicKeyInfo.
pub fn discovery_hash(ca_cert_pem: &str) -> Result<String, PkiError> {
    let spki = spki_der(ca_cert_pem)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&spki))))
}

/// Check that a CA's private key belongs to its certificate.
pub fn check_pair(ca: &CaPair) -> Result<(), PkiError> {
    let cn = common_name(&ca.cert_pem)?;
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|_| PkiError::BadKey {
        what: format!("the key of CA {cn:?}"),
    })?;
    if key.subject_public_key_info() != spki_der(&ca.cert_pem)? {
        return Err(PkiError::KeyMismatch { cn });
    }
    Ok(())
}

/// Check that a service-account pair's private key (`key_pem`) belongs to its public key
/// (`cert_pem`, a `PUBLIC KEY` PEM).
pub fn check_public_key(pair: &CaPair) -> Result<(), PkiError> {
    let key = KeyPair::from_pem(&pair.key_pem).map_err(|_| PkiError::BadKey {
        what: "the service-account key".into(),
    })?;
    let public = pem::parse(&pair.cert_pem).map_err(|e| PkiError::BadCertificate {
        what: "the service-account public key".into(),
        why: e.to_string(),
    })?;
    if public.tag() != "PUBLIC KEY" || key.subject_public_key_info() != public.contents() {
        return Err(PkiError::KeyMismatch {
            cn: "service-account key".into(),
        });
    }
    Ok(())
}

/// The PEM public key of a private key PEM (to restore a lost `sa.pub`).
pub fn public_key_pem(key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::BadKey {
        what: "private key".into(),
    })?;
    Ok(key.public_key_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_rsa_ca_with_cn() {
        let ca = new_ca("kubernetes").unwrap();
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = cert_der(&ca.cert_pem).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(c.is_ca());
        assert_eq!(common_name(&ca.cert_pem).unwrap(), "kubernetes");
        assert_eq!(
            c.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
        );
        let years = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp())
            / (365 * 86400);
        assert_eq!(years, 10);
        check_pair(&ca).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn client_cert_has_groups_and_validity() {
        let ca = new_ca("kubernetes").unwrap();
        let (cert, key) = sign_client_cert(
            &ca,
            "kprov-admin",
            &["kubeadm:cluster-admins", "other"],
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let der = cert_der(&cert).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let orgs: Vec<_> = c
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(orgs, ["kubeadm:cluster-admins", "other"]);
        assert!(!c.is_ca());
        let left = not_after(&cert).unwrap() - chrono::Utc::now();
        assert!((left.num_seconds() - 3600).abs() < 60, "{left}");
        assert!(sign_client_cert(&ca, "x", &["a", "b", "c"], Duration::from_secs(3600)).is_err());
        assert!(sign_client_cert(&ca, "x", &[], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn mismatched_pair_is_rejected() {
        let a = new_ca("a").unwrap();
        let b = new_ca("b").unwrap();
        let mixed = CaPair {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
        };
        assert!(matches!(
            check_pair(&mixed),
            Err(PkiError::KeyMismatch { .. })
        ));
        let err = sign_client_cert(&mixed, "x", &[], Duration::from_secs(3600))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("PRIVATE"), "{err}");
        let cert = ca_cert_for_key("a", &a.key_pem).unwrap();
        check_pair(&CaPair {
            cert_pem: cert,
            key_pem: a.key_pem.clone(),
        })
        .unwrap();
    }

    #[test]
    fn service_account_pair() {
        let sa = new_service_account_key().unwrap();
        assert!(sa.cert_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        check_public_key(&sa).unwrap();
        assert_eq!(public_key_pem(&sa.key_pem).unwrap(), sa.cert_pem);
    }
}

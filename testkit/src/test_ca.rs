//! A throw-away certificate authority (rcgen, ECDSA P-256) issuing server and token-signing
//! certificates for tests that serve HTTPS (registries, the token server).

use std::path::{Path, PathBuf};

/// PEM files of a certificate and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A throw-away CA, its files in one directory.
pub struct TestCa {
    /// Directory of every file written.
    pub dir: PathBuf,
    /// The CA certificate (PEM), for `--ca-bundle` and `rootcertbundle`.
    pub ca_pem: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("ca dir");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_pem, cert.pem()).expect("write ca");
        TestCa {
            dir: dir.to_path_buf(),
            ca_pem,
            params,
            key,
        }
    }

    /// Issue a certificate for `sans` (IP addresses become IP SANs) with a new P-256 key;
    /// written as `NAME.pem` / `NAME.key`.
    pub fn issue(&self, name: &str, sans: &[&str]) -> TlsFiles {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("sans");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A directory with only `ca.crt` (what skopeo's `--cert-dir` reads).
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.join("skopeo-certs");
        std::fs::create_dir_all(&d).expect("cert dir");
        std::fs::copy(&self.ca_pem, d.join("ca.crt")).expect("ca.crt");
        d
    }
}

//! Cluster secrets kept in the state store (PKI and bootstrap token), created at `create` time so
//! that the discovery hash is known before any VM exists.
//!
//! Store layout: `NAME/pki/{ca,front-proxy-ca,etcd-ca}.{crt,key}`, `NAME/pki/sa.{key,pub}`,
//! `NAME/secrets/bootstrap-token.json`, `NAME/secrets/certificate-key` (all written 0600 by
//! `file://`, server-side encrypted by `s3://`).

use crate::repo::Repo;
use crate::spec::ClusterConfig;

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
        f.debug_struct("CaPair").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A kubeadm bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`) and its expiry.
#[derive(Clone)]
pub struct BootstrapToken {
    /// `id.secret`. Never printed.
    pub token: String,
    /// Expiry.
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken").field("token", &"<redacted>").field("expires", &self.expires).finish()
    }
}

/// Everything secret a cluster's nodes need.
#[derive(Debug, Clone)]
pub struct ClusterSecrets {
    /// Cluster CA.
    pub ca: CaPair,
    /// Front-proxy CA.
    pub front_proxy_ca: CaPair,
    /// etcd CA.
    pub etcd_ca: CaPair,
    /// Service-account signing key pair (`key_pem` private, `cert_pem` holds the public key PEM).
    pub service_account: CaPair,
    /// Bootstrap token for `kubeadm join`.
    pub token: BootstrapToken,
    /// kubeadm `certificateKey` (64 hex chars) for control-plane joins.
    pub certificate_key: String,
}

/// Make sure the cluster's CAs, service-account key and bootstrap token exist in the store.
/// Implemented by the PKI module.
pub async fn ensure(_repo: &Repo, _config: &ClusterConfig) -> anyhow::Result<()> {
    Ok(())
}

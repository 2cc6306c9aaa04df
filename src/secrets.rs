//! Cluster secrets kept in the state store (PKI and bootstrap token), created at `create` time so
//! that the discovery hash is known before any VM exists.
//!
//! Store layout: `NAME/pki/{ca,front-proxy-ca,etcd-ca}.{crt,key}`, `NAME/pki/sa.{key,pub}`,
//! `NAME/secrets/bootstrap-token.json`, `NAME/secrets/certificate-key` (all written 0600 by
//! `file://`, server-side encrypted by `s3://`).

use std::time::Duration;

use anyhow::{bail, Context};
use kprov_state::{Condition, StateError, StateStore};

use crate::pki;
use crate::repo::Repo;
use crate::spec::ClusterConfig;

// The key and token types are the PKI's (it makes them); this module stores them. Re-exported
// so `crate::secrets::{CaPair, BootstrapToken}` keep naming them.
pub use crate::pki::{BootstrapToken, CaPair};

/// Everything secret a cluster's nodes need. `Debug` redacts every secret.
#[derive(Clone)]
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

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("ca", &self.ca)
            .field("front_proxy_ca", &self.front_proxy_ca)
            .field("etcd_ca", &self.etcd_ca)
            .field("service_account", &self.service_account)
            .field("token", &self.token)
            .field("certificate_key", &"<redacted>")
            .finish()
    }
}

impl ClusterSecrets {
    /// The `kubeadm join --discovery-token-ca-cert-hash` of the cluster CA (`sha256:HEX`).
    pub fn discovery_hash(&self) -> Result<String, pki::PkiError> {
        pki::discovery_hash(&self.ca.cert_pem)
    }
}

/// The three CAs of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// The cluster CA (`ca.crt`, CN `kubernetes`).
    Cluster,
    /// The front-proxy CA (`front-proxy-ca.crt`, CN `front-proxy-ca`).
    FrontProxy,
    /// The etcd CA (`etcd-ca.crt`, CN `etcd-ca`; kubeadm's `etcd/ca.crt` on the nodes).
    Etcd,
}

impl CaKind {
    /// All three, in the order `ensure` makes them.
    pub const ALL: [CaKind; 3] = [CaKind::Cluster, CaKind::FrontProxy, CaKind::Etcd];

    /// File stem in the store (`ca`, `front-proxy-ca`, `etcd-ca`).
    pub fn stem(self) -> &'static str {
        match self {
            CaKind::Cluster => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        }
    }

    /// Subject common name.
    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Cluster => pki::CLUSTER_CA_CN,
            CaKind::FrontProxy => pki::FRONT_PROXY_CA_CN,
            CaKind::Etcd => pki::ETCD_CA_CN,
        }
    }
}

/// Store keys of a cluster's secrets.
pub mod keys {
    use super::CaKind;

    /// `NAME/pki/STEM.crt`.
    pub fn ca_cert(cluster: &str, ca: CaKind) -> String {
        format!("{cluster}/pki/{}.crt", ca.stem())
    }
    /// `NAME/pki/STEM.key`.
    pub fn ca_key(cluster: &str, ca: CaKind) -> String {
        format!("{cluster}/pki/{}.key", ca.stem())
    }
    /// `NAME/pki/sa.key` (service-account private key).
    pub fn sa_key(cluster: &str) -> String {
        format!("{cluster}/pki/sa.key")
    }
    /// `NAME/pki/sa.pub` (service-account public key).
    pub fn sa_pub(cluster: &str) -> String {
        format!("{cluster}/pki/sa.pub")
    }
    /// `NAME/secrets/bootstrap-token.json`.
    pub fn bootstrap_token(cluster: &str) -> String {
        format!("{cluster}/secrets/bootstrap-token.json")
    }
    /// `NAME/secrets/bootstrap-token-in-cluster`: the id (not the secret) of the bootstrap token
    /// the cluster is known to hold (put there by `kubeadm init`, or by kprov through the API).
    pub fn token_in_cluster(cluster: &str) -> String {
        format!("{cluster}/secrets/bootstrap-token-in-cluster")
    }
    /// `NAME/secrets/certificate-key`.
    pub fn certificate_key(cluster: &str) -> String {
        format!("{cluster}/secrets/certificate-key")
    }
}

/// How `bootstrap-token.json` is stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct TokenDoc {
    token: String,
    expires: chrono::DateTime<chrono::Utc>,
}

impl TokenDoc {
    fn encode(t: &BootstrapToken) -> Vec<u8> {
        let doc = TokenDoc {
            token: t.token.clone(),
            expires: t.expires,
        };
        let mut v = serde_json::to_vec_pretty(&doc).expect("token serialises");
        v.push(b'\n');
        v
    }

    fn decode(key: &str, bytes: &[u8]) -> anyhow::Result<BootstrapToken> {
        // serde_json's error names a position, never the input, so the token cannot leak.
        let doc: TokenDoc = serde_json::from_slice(bytes)
            .with_context(|| format!("{key} is not a bootstrap-token document"))?;
        if !pki::is_valid_token(&doc.token) {
            bail!("{key}: the token is not in kubeadm's format [a-z0-9]{{6}}.[a-z0-9]{{16}}");
        }
        Ok(BootstrapToken {
            token: doc.token,
            expires: doc.expires,
        })
    }
}

/// The cluster's bootstrap-token TTL from its spec.
fn token_ttl(config: &ClusterConfig) -> anyhow::Result<Duration> {
    let ttl = &config.cluster.spec.bootstrap.token_ttl;
    crate::spec::quantity::parse_duration(ttl)
        .map_err(|e| anyhow::anyhow!("spec.bootstrap.tokenTTL: {e}"))
}

/// Run CPU-heavy key generation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, pki::PkiError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .context("key generation task failed")??)
}

fn utf8(key: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{key} is not UTF-8 text"))
}

/// Write `bytes` under `key` unless something is there; returns what is stored afterwards
/// (ours, or what a concurrent writer stored first) and whether ours was written.
async fn put_if_absent(
    store: &dyn StateStore,
    key: &str,
    bytes: &[u8],
) -> anyhow::Result<(Vec<u8>, bool)> {
    match store.put(key, bytes, Condition::IfAbsent).await {
        Ok(_) => {
            tracing::debug!("generated {key}");
            Ok((bytes.to_vec(), true))
        }
        Err(StateError::Conflict { .. }) => match store
            .get(key)
            .await
            .with_context(|| format!("reading {key}"))?
        {
            Some(o) => Ok((o.bytes, false)),
            None => bail!("{key} was created by another kprov run and deleted again; re-run"),
        },
        Err(e) => Err(anyhow::Error::new(e).context(format!("writing {key}"))),
    }
}

async fn get_text(store: &dyn StateStore, key: &str) -> anyhow::Result<Option<String>> {
    match store
        .get(key)
        .await
        .with_context(|| format!("reading {key}"))?
    {
        Some(o) => Ok(Some(utf8(key, o.bytes)?)),
        None => Ok(None),
    }
}

async fn ensure_ca(store: &dyn StateStore, cluster: &str, ca: CaKind) -> anyhow::Result<()> {
    let (crt_key, key_key) = (keys::ca_cert(cluster, ca), keys::ca_key(cluster, ca));
    let cn = ca.common_name();
    let existing_crt = get_text(store, &crt_key).await?;
    let existing_key = get_text(store, &key_key).await?;
    // The key is the CA's identity: it is written first and never replaced. The certificate is
    // derived from it, so a run that stopped between the two writes is completed, not redone.
    let (key_pem, our_cert) = match (existing_crt, existing_key) {
        (Some(cert_pem), Some(key_pem)) => {
            return pki::check_pair(&CaPair { cert_pem, key_pem }).with_context(|| {
                format!("{crt_key} and {key_key} do not form a CA; restore both from a backup (kprov never replaces an existing CA)")
            });
        }
        (Some(_), None) => bail!(
            "{crt_key} exists but {key_key} is missing in {}; restore {key_key} from a backup (kprov never replaces an existing CA)",
            store.url()
        ),
        (None, Some(key_pem)) => (key_pem, None),
        (None, None) => {
            let pair = blocking(move || pki::new_ca(cn)).await?;
            let (stored, ours) = put_if_absent(store, &key_key, pair.key_pem.as_bytes()).await?;
            if ours {
                (pair.key_pem, Some(pair.cert_pem))
            } else {
                (utf8(&key_key, stored)?, None)
            }
        }
    };
    let cert_pem = match our_cert {
        Some(c) => c,
        None => {
            let k = key_pem.clone();
            blocking(move || pki::ca_cert_for_key(cn, &k))
                .await
                .with_context(|| format!("making the certificate for {key_key}"))?
        }
    };
    let (stored, _) = put_if_absent(store, &crt_key, cert_pem.as_bytes()).await?;
    pki::check_pair(&CaPair {
        cert_pem: utf8(&crt_key, stored)?,
        key_pem,
    })
    .with_context(|| format!("{crt_key} and {key_key} do not form a CA"))?;
    Ok(())
}

async fn ensure_service_account(store: &dyn StateStore, cluster: &str) -> anyhow::Result<()> {
    let (key_key, pub_key) = (keys::sa_key(cluster), keys::sa_pub(cluster));
    let key_pem = match get_text(store, &key_key).await? {
        Some(k) => k,
        None => {
            if store.get(&pub_key).await?.is_some() {
                bail!("{pub_key} exists but {key_key} is missing in {}; restore {key_key} from a backup", store.url());
            }
            let pair = blocking(pki::new_service_account_key).await?;
            utf8(
                &key_key,
                put_if_absent(store, &key_key, pair.key_pem.as_bytes())
                    .await?
                    .0,
            )?
        }
    };
    let public = match get_text(store, &pub_key).await? {
        Some(p) => p,
        None => {
            let public = pki::public_key_pem(&key_pem).with_context(|| key_key.clone())?;
            utf8(
                &pub_key,
                put_if_absent(store, &pub_key, public.as_bytes()).await?.0,
            )?
        }
    };
    pki::check_public_key(&CaPair {
        cert_pem: public,
        key_pem,
    })
    .with_context(|| {
        format!("{key_key} and {pub_key} do not form a key pair; restore both from a backup")
    })?;
    Ok(())
}

/// Make sure the cluster's CAs, service-account key pair, bootstrap token and certificate key
/// exist in the store, generating whatever is missing. Existing secrets are never regenerated.
/// Every object is written with [`Condition::IfAbsent`], so concurrent runs agree on one set:
/// the loser of a race reads back what the winner wrote.
pub async fn ensure(repo: &Repo, config: &ClusterConfig) -> anyhow::Result<()> {
    let store = repo.store.as_ref();
    let cluster = config.name();
    let ttl = token_ttl(config)?;
    for ca in CaKind::ALL {
        ensure_ca(store, cluster, ca).await?;
    }
    ensure_service_account(store, cluster).await?;
    let token_key = keys::bootstrap_token(cluster);
    if store.get(&token_key).await?.is_none() {
        let token = pki::new_bootstrap_token(ttl)?;
        put_if_absent(store, &token_key, &TokenDoc::encode(&token)).await?;
    }
    let cert_key = keys::certificate_key(cluster);
    if store.get(&cert_key).await?.is_none() {
        put_if_absent(store, &cert_key, pki::new_certificate_key()?.as_bytes()).await?;
    }
    Ok(())
}

async fn require(store: &dyn StateStore, cluster: &str, key: &str) -> anyhow::Result<String> {
    get_text(store, key).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "cluster {cluster} has no {key} in {}: its secrets were never generated or were deleted; \
             re-run `kprov create -f SPEC.yaml --replace` with the cluster's spec to generate the missing ones \
             (existing secrets are kept)",
            store.url()
        )
    })
}

/// Read a cluster's secrets. Fails naming the first missing object and how to make it.
pub async fn load(repo: &Repo, cluster: &str) -> anyhow::Result<ClusterSecrets> {
    let store = repo.store.as_ref();
    let mut cas = Vec::with_capacity(3);
    for ca in CaKind::ALL {
        cas.push(CaPair {
            cert_pem: require(store, cluster, &keys::ca_cert(cluster, ca)).await?,
            key_pem: require(store, cluster, &keys::ca_key(cluster, ca)).await?,
        });
    }
    let [ca, front_proxy_ca, etcd_ca]: [CaPair; 3] = cas.try_into().expect("three CAs");
    let service_account = CaPair {
        key_pem: require(store, cluster, &keys::sa_key(cluster)).await?,
        cert_pem: require(store, cluster, &keys::sa_pub(cluster)).await?,
    };
    let token_key = keys::bootstrap_token(cluster);
    let token = TokenDoc::decode(
        &token_key,
        require(store, cluster, &token_key).await?.as_bytes(),
    )?;
    let cert_key = keys::certificate_key(cluster);
    let certificate_key = require(store, cluster, &cert_key).await?.trim().to_string();
    if certificate_key.len() != 64 || !certificate_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{cert_key} is not 64 hex characters; delete it and re-run `kprov create -f SPEC.yaml --replace` to make a new one");
    }
    Ok(ClusterSecrets {
        ca,
        front_proxy_ca,
        etcd_ca,
        service_account,
        token,
        certificate_key,
    })
}

/// Return a bootstrap token with at least half of `ttl` left: the stored one if it qualifies,
/// else a new one (valid for `ttl`) written by compare-and-swap, so concurrent refreshes agree on
/// one token. `kprov update` calls this before it creates nodes; the caller must make sure the
/// returned token exists in the cluster (kubeadm creates it at `init`; later ones need
/// `kubeadm token create TOKEN --ttl ...` on a control-plane node).
pub async fn refresh_token(
    repo: &Repo,
    cluster: &str,
    ttl: Duration,
) -> anyhow::Result<BootstrapToken> {
    let store = repo.store.as_ref();
    let key = keys::bootstrap_token(cluster);
    let margin = chrono::Duration::from_std(ttl / 2).context("token TTL is too long")?;
    for _ in 0..5 {
        let current = store
            .get(&key)
            .await
            .with_context(|| format!("reading {key}"))?;
        let cond = match &current {
            Some(o) => {
                let t = TokenDoc::decode(&key, &o.bytes)?;
                if t.expires - chrono::Utc::now() >= margin {
                    return Ok(t);
                }
                Condition::IfVersion(o.version.clone())
            }
            None => Condition::IfAbsent,
        };
        let fresh = pki::new_bootstrap_token(ttl)?;
        match store.put(&key, &TokenDoc::encode(&fresh), cond).await {
            Ok(_) => {
                tracing::info!(
                    "cluster {cluster}: new bootstrap token {} (expires {})",
                    fresh.id(),
                    fresh.expires
                );
                return Ok(fresh);
            }
            // Another run refreshed it first: read theirs.
            Err(StateError::Conflict { .. }) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("writing {key}"))),
        }
    }
    bail!("{key} keeps changing under kprov (other runs refresh it); re-run")
}

/// The id of the bootstrap token the cluster is known to hold, if recorded.
pub async fn token_in_cluster(repo: &Repo, cluster: &str) -> anyhow::Result<Option<String>> {
    let key = keys::token_in_cluster(cluster);
    let got = repo
        .store
        .get(&key)
        .await
        .with_context(|| format!("reading {key}"))?;
    Ok(got.map(|o| String::from_utf8_lossy(&o.bytes).trim().to_string()))
}

/// Record that the cluster holds the bootstrap token `id` (last writer wins: every writer
/// records a token it made sure of).
pub async fn mark_token_in_cluster(repo: &Repo, cluster: &str, id: &str) -> anyhow::Result<()> {
    let key = keys::token_in_cluster(cluster);
    repo.store
        .put(&key, id.as_bytes(), Condition::None)
        .await
        .with_context(|| format!("writing {key}"))?;
    Ok(())
}

//! Access to a cluster's API server as its administrator: a short-lived client certificate
//! signed by the cluster CA in the state store, and the server's address (the spec's endpoint,
//! else the first control plane's address in the cloud).

use std::time::Duration;

use anyhow::Context;

use crate::kubeconfig::Entries;
use crate::repo::Repo;
use crate::spec::ClusterSpec;

/// Common name of the admin client certificates kprov signs.
pub const ADMIN_CN: &str = "kprov-admin";
/// Group of the admin client certificates: kubeadm (≥ 1.29) binds it to `cluster-admin`, and
/// unlike `system:masters` the binding can be revoked.
pub const ADMIN_GROUP: &str = "kubeadm:cluster-admins";

/// Admin credentials for one cluster.
pub struct AdminAccess {
    /// `https://HOST:PORT` of the API server.
    pub server: String,
    /// The cluster CA certificate (PEM), to verify the server.
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The client key (PEM): a secret, never logged.
    pub key_pem: String,
    /// When the certificate expires.
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl AdminAccess {
    /// The kubeconfig entries for cluster `name`.
    pub fn entries(&self, name: &str) -> Entries {
        Entries {
            name: name.to_string(),
            server: self.server.clone(),
            ca_pem: self.ca_pem.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// Mint admin credentials for cluster `name`, valid for `validity`.
pub async fn admin(repo: &Repo, name: &str, validity: Duration) -> anyhow::Result<AdminAccess> {
    let stored = repo.require(name).await?;
    let secrets = crate::secrets::load(repo, name).await?;
    let server = server_url(&stored.config.cluster.spec, name).await?;
    let (cert_pem, key_pem) =
        crate::pki::sign_client_cert(&secrets.ca, ADMIN_CN, &[ADMIN_GROUP], validity)
            .context("signing the admin client certificate")?;
    let expires = crate::pki::not_after(&cert_pem)?;
    Ok(AdminAccess {
        server,
        ca_pem: secrets.ca.cert_pem.clone(),
        cert_pem,
        key_pem,
        expires,
    })
}

/// `https://HOST:PORT` of the API server: `spec.controlPlane.endpoint` (with `port` unless the
/// endpoint has one), else the provider's load balancer in front of the control planes, else
/// the address of the first control-plane instance in the cloud.
async fn server_url(spec: &ClusterSpec, cluster: &str) -> anyhow::Result<String> {
    let port = spec.control_plane.port;
    if let Some(ep) = spec
        .control_plane
        .endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        return Ok(format!("https://{}", host_port(ep, port)));
    }
    let cloud = crate::cloud::connect(cluster, spec).await?;
    let lb = cloud
        .control_plane_endpoint(cluster)
        .await
        .with_context(|| format!("looking up the API load balancer of cluster {cluster}"))?;
    if let Some(ep) = lb {
        return Ok(format!("https://{}", host_port(&ep, port)));
    }
    let mut list = cloud.list_instances(cluster).await.with_context(|| {
        format!("listing the instances of cluster {cluster} to find its API server")
    })?;
    list.retain(|i| {
        i.tags.get(kprov_providers::TAG_ROLE).map(String::as_str)
            == Some(kprov_providers::Role::ControlPlane.as_str())
    });
    list.sort_by(|a, b| {
        (a.instance_group(), a.index(), &a.name).cmp(&(b.instance_group(), b.index(), &b.name))
    });
    match list.iter().find_map(|i| i.address.as_deref()) {
        Some(addr) => Ok(format!("https://{}", host_port(addr, port))),
        None => Err(anyhow::anyhow!(
            "cluster {cluster} has no control-plane instance with an address in the cloud yet; create it with \
             `kprov update cluster {cluster} --yes`, or set spec.controlPlane.endpoint"
        )),
    }
}

/// `host` (a name, IPv4, IPv6, or any of them with a port, optionally with `https://`) plus the
/// default port when it has none.
fn host_port(endpoint: &str, port: u16) -> String {
    let ep = endpoint
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if ep.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{ep}]:{port}");
    }
    let has_port = match ep.rsplit_once(':') {
        Some((host, p)) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        ep.to_string()
    } else {
        format!("{ep}:{port}")
    }
}

/// How kprov reaches a cluster's API server.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// The user's kubeconfig (a `:`-separated list, as `KUBECONFIG`): its context is used
    /// instead of credentials kprov mints. How an API server behind a tunnel is reached.
    pub kubeconfig: Option<String>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
}

/// How long the admin certificates minted for the engine's own API calls are valid: a
/// validation or one step of a rolling update; a new client is made for every step.
pub const API_CLIENT_VALIDITY: Duration = Duration::from_secs(3600);

/// A Kubernetes client for cluster `name`: from `access.kubeconfig`, else as the administrator
/// with a certificate minted from the cluster CA (see [`admin`]).
pub async fn api_client(
    repo: &Repo,
    name: &str,
    access: &ApiAccess,
) -> anyhow::Result<kube::Client> {
    if let Some(path) = access.kubeconfig.as_deref().filter(|p| !p.is_empty()) {
        return crate::k8s::client::from_kubeconfig(path, access.context.as_deref())
            .await
            .with_context(|| format!("connecting to cluster {name} with kubeconfig {path}"));
    }
    let a = admin(repo, name, API_CLIENT_VALIDITY).await?;
    crate::k8s::client::from_certificate(&a.server, &a.ca_pem, &a.cert_pem, &a.key_pem)
        .with_context(|| format!("connecting to cluster {name}'s API server at {}", a.server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("10.0.0.1", 6443), "10.0.0.1:6443");
        assert_eq!(host_port("api.example:443", 6443), "api.example:443");
        assert_eq!(host_port("https://api.example/", 6443), "api.example:6443");
        assert_eq!(host_port("fd00::1", 6443), "[fd00::1]:6443");
        assert_eq!(host_port("[fd00::1]:8443", 6443), "[fd00::1]:8443");
    }
}

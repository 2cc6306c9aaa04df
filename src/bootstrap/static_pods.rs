//! Static pods kprov adds to every control plane: kube-vip holding the API VIP when the spec's
//! load balancer is `kube-vip` (libvirt's default with several control planes). Written to
//! [`STATIC_PODS_DIR`] with two placeholders the bootstrap script fills in on the node (its
//! interface, and the kubeconfig for the moment) before it copies them into
//! `/etc/kubernetes/manifests` ahead of `kubeadm init|join`.

use serde::Serialize;

use super::render::endpoint_host;
use super::{templates, BootstrapError, NodeAction, NodeFile};
use crate::assets::image_ref;
use crate::spec::versions::ADDON_IMAGES;
use crate::spec::{ClusterConfig, LoadBalancerKind};

/// Where the user-data puts the static pods until the bootstrap script installs them
/// (`$KPROV_ETC/static-pods`).
pub const STATIC_PODS_DIR: &str = "/etc/kprov/static-pods";

/// The versions-table component of the kube-vip image.
pub const KUBE_VIP: &str = "kube-vip";

#[derive(Serialize)]
struct KubeVipCtx {
    image: String,
    vip: String,
    port: u16,
}

/// The kube-vip image, as the nodes pull it (through the cluster's mirror).
pub fn kube_vip_image(config: &ClusterConfig) -> String {
    let upstream = ADDON_IMAGES
        .iter()
        .find(|a| a.component == KUBE_VIP)
        .map(|a| a.image)
        .unwrap_or("ghcr.io/kube-vip/kube-vip");
    image_ref(upstream, &config.cluster.spec.assets)
}

/// The kube-vip manifest for the VIP of `endpoint` (`host:port`), placeholders left in.
pub fn kube_vip_manifest(config: &ClusterConfig, endpoint: &str) -> Result<String, BootstrapError> {
    let ctx = KubeVipCtx {
        image: kube_vip_image(config),
        vip: endpoint_host(endpoint).to_string(),
        port: config.cluster.spec.control_plane.port,
    };
    templates::render(
        "static-pods/kube-vip.yaml.tera",
        &tera::Context::from_serialize(&ctx).map_err(|e| BootstrapError::Template {
            name: "static-pods/kube-vip.yaml.tera".into(),
            message: templates::describe(&e),
        })?,
    )
}

/// The endpoint whose VIP a node's kube-vip holds: a control plane's that initialises or
/// joins through the endpoint, when the spec's load balancer is kube-vip.
pub fn kube_vip_endpoint<'a>(config: &ClusterConfig, action: &'a NodeAction) -> Option<&'a str> {
    match action {
        NodeAction::InitOrJoin { endpoint } | NodeAction::JoinControlPlane { endpoint }
            if config.api_load_balancer() == Some(LoadBalancerKind::KubeVip) =>
        {
            Some(endpoint)
        }
        _ => None,
    }
}

/// The static pods of a node doing `action` (none for workers).
pub fn files(config: &ClusterConfig, action: &NodeAction) -> Result<Vec<NodeFile>, BootstrapError> {
    let Some(endpoint) = kube_vip_endpoint(config, action) else {
        return Ok(vec![]);
    };
    Ok(vec![NodeFile::text(
        format!("{STATIC_PODS_DIR}/kube-vip.yaml"),
        "0644",
        kube_vip_manifest(config, endpoint)?,
    )])
}

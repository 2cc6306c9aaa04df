//! CNI and add-on manifests the first control plane applies, rendered from
//! `templates/manifests/` with every image taken from the versions table and rewritten to the
//! cluster's mirror.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{templates, BootstrapError, GPU_NODE_LABEL};
use crate::assets::{image_ref, ImageName};
use crate::spec::versions::ADDON_IMAGES;
use crate::spec::{ClusterConfig, Cni, DashboardAccess};

/// Components with a manifest template, in the order they are applied.
pub const COMPONENTS: &[&str] = &[
    "flannel",
    "calico",
    "metallb",
    "nfs-provisioner",
    "dashboard",
    "nvidia-device-plugin",
    "metallb-config",
];

/// A rendered manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Component (`flannel`, `calico`, `metallb`, `metallb-config`, `nfs-provisioner`, `dashboard`,
    /// `nvidia-device-plugin`).
    pub component: &'static str,
    /// File name on the node, e.g. `10-flannel.yaml`; files are applied in name order.
    pub file_name: String,
    /// Applied in the background once workloads can run (MetalLB's address pools need its
    /// webhook), instead of right after `kubeadm init`.
    pub deferred: bool,
    /// The YAML stream.
    pub content: String,
}

#[derive(Serialize)]
struct DashboardCtx {
    node_port: u16,
    admin: bool,
}

#[derive(Serialize)]
struct NfsCtx {
    server: String,
    path: String,
    storage_class: String,
    default_class: bool,
}

#[derive(Serialize)]
struct PoolCtx {
    name: String,
    addresses: Vec<String>,
}

/// The template key of an upstream image: its repository path without registry and tag
/// (`quay.io/calico/node:v3.31.7` → `calico/node`).
pub fn image_key(upstream: &str) -> String {
    let n = ImageName::parse(upstream);
    n.path
        .strip_prefix("library/")
        .map(str::to_string)
        .unwrap_or(n.path)
}

/// Template key → mirror reference for every CNI / add-on image in the versions table.
pub fn image_map(config: &ClusterConfig) -> BTreeMap<String, String> {
    let assets = &config.cluster.spec.assets;
    ADDON_IMAGES
        .iter()
        .map(|a| (image_key(a.image), image_ref(a.image, assets)))
        .collect()
}

/// Is `component` turned on in the spec?
pub fn enabled(component: &str, config: &ClusterConfig) -> bool {
    let spec = &config.cluster.spec;
    match component {
        "flannel" => spec.networking.cni == Cni::Flannel,
        "calico" => spec.networking.cni == Cni::Calico,
        "metallb" => spec.addons.metallb.is_some(),
        "metallb-config" => spec
            .addons
            .metallb
            .as_ref()
            .is_some_and(|m| !m.address_pools.is_empty()),
        "nfs-provisioner" => spec.addons.nfs_provisioner.is_some(),
        "dashboard" => spec.addons.dashboard.is_some(),
        "nvidia-device-plugin" => match &spec.addons.nvidia_device_plugin {
            Some(p) => p.enabled,
            None => config.groups.iter().any(|g| g.spec.gpu.is_some()),
        },
        _ => false,
    }
}

fn file_name(component: &str) -> String {
    let order = match component {
        "flannel" | "calico" => 10,
        "metallb" => 20,
        "nfs-provisioner" => 30,
        "dashboard" => 40,
        "nvidia-device-plugin" => 50,
        _ => 90,
    };
    format!("{order}-{component}.yaml")
}

/// Render one component's manifest whether or not the spec turns it on (add-on settings that
/// the spec leaves out take their defaults). Fails for an unknown component.
pub fn render_component(
    component: &'static str,
    config: &ClusterConfig,
) -> Result<Manifest, BootstrapError> {
    if !COMPONENTS.contains(&component) {
        return Err(BootstrapError::Template {
            name: format!("manifests/{component}.yaml.tera"),
            message: "no such component".into(),
        });
    }
    let spec = &config.cluster.spec;
    let mut ctx = tera::Context::new();
    ctx.insert("images", &image_map(config));
    ctx.insert(
        "arches",
        &config
            .arches()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
    );
    ctx.insert("pod_cidr", &spec.networking.pod_cidr.to_string());
    ctx.insert("service_cidr", &spec.networking.service_cidr.to_string());
    ctx.insert("gpu_label_key", GPU_NODE_LABEL);
    let (node_port, access) = spec
        .addons
        .dashboard
        .as_ref()
        .map(|d| (d.node_port, d.access))
        .unwrap_or((30090, DashboardAccess::Readonly));
    ctx.insert(
        "dashboard",
        &DashboardCtx {
            node_port,
            admin: access == DashboardAccess::Admin,
        },
    );
    let nfs = spec.addons.nfs_provisioner.as_ref();
    ctx.insert(
        "nfs",
        &NfsCtx {
            server: nfs.map(|n| n.server.clone()).unwrap_or_default(),
            path: nfs.map(|n| n.path.clone()).unwrap_or_default(),
            storage_class: nfs
                .map(|n| n.storage_class.clone())
                .unwrap_or_else(|| "nfs-client".into()),
            default_class: nfs.is_some_and(|n| n.default_class),
        },
    );
    let pools: Vec<PoolCtx> = spec
        .addons
        .metallb
        .as_ref()
        .map(|m| {
            m.address_pools
                .iter()
                .map(|p| PoolCtx {
                    name: p.name.clone(),
                    addresses: p.addresses.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    ctx.insert("pools", &pools);
    let content = templates::render(&format!("manifests/{component}.yaml.tera"), &ctx)?;
    let deferred = component == "metallb-config";
    Ok(Manifest {
        component,
        file_name: if deferred {
            "metallb-config.yaml".into()
        } else {
            file_name(component)
        },
        deferred,
        content,
    })
}

/// The manifests the spec turns on, in apply order.
pub fn render_all(config: &ClusterConfig) -> Result<Vec<Manifest>, BootstrapError> {
    COMPONENTS
        .iter()
        .filter(|c| enabled(c, config))
        .map(|c| render_component(c, config))
        .collect()
}

//! The asset catalogue: every image and file a rendered cluster pulls, for its Kubernetes
//! version, CNI, add-ons and the architectures of its instance groups, with upstream and mirror
//! locations.
//!
//! It is computed from the same sources the bootstrap renders from — the versions table
//! (`Release::core_images`, binaries, `ADDON_IMAGES`), `bootstrap::manifests::enabled` for which
//! components are on, and `crate::assets` for every mirror location — so the catalogue and the
//! rendered user-data cannot drift apart (`tests/bootstrap/mirror_catalogue.rs` checks it on
//! rendered output).

use std::collections::BTreeMap;

use kprov_providers::{Arch, Role};
use serde::Serialize;

use super::MirrorError;
use crate::assets::{self, ImageName};
use crate::bootstrap::manifests;
use crate::spec::versions::{self, ADDON_IMAGES};
use crate::spec::{Assets, ClusterConfig};

/// An image the cluster pulls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageAsset {
    /// What uses it (`kubernetes`, `flannel`, `metallb`, …).
    pub component: String,
    /// Upstream reference (`registry.k8s.io/pause:3.10`).
    pub upstream: String,
    /// Where nodes pull it from ([`crate::assets::image_ref`]).
    pub mirror: String,
    /// Architectures of the nodes that run it.
    pub arches: Vec<Arch>,
    /// Manifest digest when the versions table pins one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A file nodes download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileAsset {
    /// Binary name (`kubeadm`, `cni-plugins`, …).
    pub name: String,
    /// Upstream URL.
    pub upstream_url: String,
    /// Where nodes download it from ([`crate::assets::file_url`]).
    pub mirror_url: String,
    /// SHA-256 (hex) the node checks.
    pub sha256: String,
    /// The CPU architecture this entry is for (`amd64`, `arm64`).
    pub arch: Arch,
}

/// Everything a cluster pulls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    /// Cluster name.
    pub cluster: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// Images, in a stable order (core, CNI, add-ons).
    pub images: Vec<ImageAsset>,
    /// Files, by name then arch.
    pub files: Vec<FileAsset>,
}

/// Core images only control-plane nodes run (kubeadm static pods).
const CONTROL_PLANE_ONLY: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

fn arches_of(
    config: &ClusterConfig,
    pred: impl Fn(&crate::spec::InstanceGroup) -> bool,
) -> Vec<Arch> {
    let mut a: Vec<Arch> = config
        .groups
        .iter()
        .filter(|g| g.spec.count > 0 && pred(g))
        .map(|g| g.spec.arch)
        .collect();
    a.sort();
    a.dedup();
    if a.is_empty() {
        // A cluster scaled to zero still needs its images once it scales up: use every arch.
        config.arches()
    } else {
        a
    }
}

fn pinned_digest(reference: &str) -> Option<String> {
    reference.split_once('@').map(|(_, d)| d.to_string())
}

impl Catalogue {
    /// The catalogue of a cluster, mapped with its own `spec.assets`.
    pub fn for_cluster(config: &ClusterConfig) -> Result<Catalogue, MirrorError> {
        Self::with_assets(config, &config.cluster.spec.assets)
    }

    /// The catalogue exactly as the nodes will fetch it: [`Catalogue::for_cluster`] with the
    /// SHA-256 overrides of `KPROV_ASSET_SHA256SUMS` applied the way the bootstrap applies them
    /// (so `mirror` checks files against the sums the user-data will check).
    pub fn for_cluster_as_rendered(config: &ClusterConfig) -> Result<Catalogue, MirrorError> {
        let mut cat = Self::for_cluster(config)?;
        cat.apply_sha256_overrides(
            &crate::bootstrap::BootstrapOptions::from_env().sha256_overrides,
        );
        Ok(cat)
    }

    /// Replace the pinned SHA-256 of every file whose name (last URL segment) is in `overrides`.
    pub fn apply_sha256_overrides(&mut self, overrides: &BTreeMap<String, String>) {
        for f in &mut self.files {
            if let Some(sum) = overrides.get(crate::bootstrap::file_name_of(&f.upstream_url)) {
                f.sha256 = sum.clone();
            }
        }
    }

    /// The catalogue of a cluster with mirror locations computed for `assets` (e.g. the
    /// cluster's settings with `--to` applied).
    pub fn with_assets(config: &ClusterConfig, assets: &Assets) -> Result<Catalogue, MirrorError> {
        let version = &config.cluster.spec.kubernetes_version;
        let release = versions::release(version).ok_or_else(|| {
            MirrorError::Usage(format!(
                "cluster {}: Kubernetes version {version} is not in kprov's versions table (supported: {}); set spec.kubernetesVersion to one of them",
                config.name(),
                versions::supported().join(", ")
            ))
        })?;
        let all = config.arches();
        let cp = arches_of(config, |g| g.spec.role == Role::ControlPlane);
        let gpu = arches_of(config, |g| g.spec.gpu.is_some());
        let mut images = Vec::new();
        let mut push = |component: &str, upstream: &str, arches: Vec<Arch>| {
            if images.iter().any(|i: &ImageAsset| i.upstream == upstream) {
                return;
            }
            images.push(ImageAsset {
                component: component.to_string(),
                upstream: upstream.to_string(),
                mirror: assets::image_ref(upstream, assets),
                arches,
                digest: pinned_digest(upstream),
            });
        };
        for img in release.core_images() {
            let name = ImageName::parse(&img);
            let arches = if CONTROL_PLANE_ONLY.contains(&name.name()) {
                cp.clone()
            } else {
                all.clone()
            };
            push("kubernetes", &img, arches);
        }
        for component in manifests::COMPONENTS {
            if !manifests::enabled(component, config) {
                continue;
            }
            let arches = if *component == "nvidia-device-plugin" {
                gpu.clone()
            } else {
                all.clone()
            };
            for a in ADDON_IMAGES.iter().filter(|a| a.component == *component) {
                push(component, a.image, arches.clone());
            }
        }
        // kube-vip runs as a static pod on the control planes (libvirt's API VIP)
        if config.api_load_balancer() == Some(crate::spec::LoadBalancerKind::KubeVip) {
            let kv = crate::bootstrap::static_pods::KUBE_VIP;
            for a in ADDON_IMAGES.iter().filter(|a| a.component == kv) {
                push(kv, a.image, cp.clone());
            }
        }
        let mut files = Vec::new();
        for b in release.files_for(assets::runtime_from_file_repository(assets)) {
            for &arch in &all {
                let upstream = b.url_for(arch);
                files.push(FileAsset {
                    name: b.name.to_string(),
                    mirror_url: assets::file_url(&upstream, assets),
                    upstream_url: upstream,
                    sha256: b.sha256_for(arch).to_string(),
                    arch,
                });
            }
        }
        let cat = Catalogue {
            cluster: config.name().to_string(),
            kubernetes_version: release.version.to_string(),
            images,
            files,
        };
        cat.check_collisions()?;
        // A mapping giving some image a name registries refuse (an upper-case prefix, a name
        // too long) fails here, before `mirror` copies or a node pulls anything.
        for i in &cat.images {
            super::mapped(&i.upstream, assets, "pulled as")
                .map_err(|e| MirrorError::Usage(format!("cluster {}: {e}", cat.cluster)))?;
        }
        Ok(cat)
    }

    /// Two different upstream images must never land on the same mirror reference (a flat
    /// preset could do that); nor two files on one URL.
    pub fn check_collisions(&self) -> Result<(), MirrorError> {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for i in &self.images {
            let repo = ImageName::parse(&i.mirror);
            let key = format!("{}/{}{}", repo.host, repo.path, repo.suffix);
            if let Some(other) = seen.insert(key.clone(), &i.upstream) {
                return Err(MirrorError::Usage(format!(
                    "{other} and {} both map to {key}; add an assets.mappings entry so they stay apart",
                    i.upstream
                )));
            }
        }
        let mut urls: BTreeMap<&str, &str> = BTreeMap::new();
        for f in &self.files {
            if let Some(other) = urls.insert(&f.mirror_url, &f.upstream_url) {
                if other != f.upstream_url {
                    return Err(MirrorError::Usage(format!(
                        "{other} and {} both map to {}",
                        f.upstream_url, f.mirror_url
                    )));
                }
            }
        }
        Ok(())
    }

    /// Rows for `-o table`: KIND, NAME, ARCH, UPSTREAM, MIRROR, DIGEST/SHA256.
    pub fn table_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for i in &self.images {
            rows.push(vec![
                "image".into(),
                i.component.clone(),
                i.arches
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                i.upstream.clone(),
                i.mirror.clone(),
                i.digest.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        for f in &self.files {
            rows.push(vec![
                "file".into(),
                f.name.clone(),
                f.arch.as_str().into(),
                f.upstream_url.clone(),
                f.mirror_url.clone(),
                format!("sha256:{}", f.sha256),
            ]);
        }
        rows
    }

    /// Column headers of [`Catalogue::table_rows`].
    pub const TABLE_HEADER: [&'static str; 6] =
        ["KIND", "NAME", "ARCH", "UPSTREAM", "MIRROR", "DIGEST"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_digests_are_reported() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(pinned_digest(&format!("quay.io/a/b:1@{d}")), Some(d));
        assert_eq!(pinned_digest("quay.io/a/b:1"), None);
    }
}

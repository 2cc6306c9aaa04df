//! The one table of supported Kubernetes versions and, per version, every image tag and binary
//! (with SHA-256 per architecture) a cluster needs. Bootstrap rendering, the asset catalogue and
//! the mirror all read this table; nothing else hard-codes a version.
//!
//! Checksums are the upstream release checksums (as published next to each binary and
//! collected by kubespray's `checksums.yml`).

use kprov_providers::Arch;

/// A file a node downloads, with its checksum per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryAsset {
    /// Short name (`kubeadm`, `kubelet`, `kubectl`, `crictl`, `cni-plugins`).
    pub name: &'static str,
    /// Upstream URL with `{arch}` standing for the GOARCH.
    pub url: &'static str,
    /// SHA-256 of the amd64 file.
    pub sha256_amd64: &'static str,
    /// SHA-256 of the arm64 file.
    pub sha256_arm64: &'static str,
    /// True for archives (`.tar.gz` / `.tgz`) that are unpacked on the node.
    pub archive: bool,
}

impl BinaryAsset {
    /// Upstream URL for an architecture.
    pub fn url_for(&self, arch: Arch) -> String {
        self.url.replace("{arch}", arch.as_str())
    }
    /// SHA-256 for an architecture.
    pub fn sha256_for(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::Amd64 => self.sha256_amd64,
            Arch::Arm64 => self.sha256_arm64,
        }
    }
}

/// Images and binaries of one Kubernetes release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Version without the `v` (`1.31.4`).
    pub version: &'static str,
    /// `registry.k8s.io/pause` tag kubeadm uses for this version.
    pub pause: &'static str,
    /// `registry.k8s.io/etcd` tag.
    pub etcd: &'static str,
    /// `registry.k8s.io/coredns/coredns` tag.
    pub coredns: &'static str,
    /// kubeadm, kubelet, kubectl, crictl, CNI plugins.
    pub binaries: &'static [BinaryAsset],
}

impl Release {
    /// Images of the control plane and node components (upstream references), for every arch
    /// (they are multi-arch indexes upstream).
    pub fn core_images(&self) -> Vec<String> {
        let v = self.version;
        vec![
            format!("registry.k8s.io/kube-apiserver:v{v}"),
            format!("registry.k8s.io/kube-controller-manager:v{v}"),
            format!("registry.k8s.io/kube-scheduler:v{v}"),
            format!("registry.k8s.io/kube-proxy:v{v}"),
            format!("registry.k8s.io/pause:{}", self.pause),
            format!("registry.k8s.io/etcd:{}", self.etcd),
            format!("registry.k8s.io/coredns/coredns:{}", self.coredns),
        ]
    }

    /// A binary by name (the release's own or the runtime's).
    pub fn binary(&self, name: &str) -> Option<&'static BinaryAsset> {
        self.files().find(|b| b.name == name)
    }

    /// Every file a node of this release may download: the release's binaries, then the
    /// container runtime ([`RUNTIME`], used when the image has no suitable one).
    pub fn files(&self) -> impl Iterator<Item = &'static BinaryAsset> {
        self.binaries.iter().chain(RUNTIME.iter())
    }

    /// The files nodes of a cluster download: the container runtime only when it comes from a
    /// file repository (restricted networks); a connected node installs the distribution's
    /// containerd and runc with its package manager instead (`docs/bootstrap.md`).
    pub fn files_for(
        &self,
        runtime_from_repository: bool,
    ) -> impl Iterator<Item = &'static BinaryAsset> {
        let runtime: &'static [BinaryAsset] = if runtime_from_repository {
            RUNTIME
        } else {
            &[]
        };
        self.binaries.iter().chain(runtime.iter())
    }
}

/// An add-on or CNI image (multi-arch upstream unless `arches` says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddonImage {
    /// Which component uses it (`flannel`, `calico`, `dashboard`, `metallb`, `nfs-provisioner`,
    /// `nvidia-device-plugin`).
    pub component: &'static str,
    /// Upstream reference `registry/repo:tag`.
    pub image: &'static str,
}

include!("versions_data.rs");

/// Versions kprov supports, oldest first.
pub fn supported() -> Vec<&'static str> {
    RELEASES.iter().map(|r| r.version).collect()
}

/// The release for a version string (with or without a leading `v`).
pub fn release(version: &str) -> Option<&'static Release> {
    let v = version.strip_prefix('v').unwrap_or(version);
    RELEASES.iter().find(|r| r.version == v)
}

/// The newest supported version (the default for new clusters).
pub fn default_version() -> &'static str {
    RELEASES.last().expect("at least one release").version
}

/// Images of one add-on / CNI component.
pub fn addon_images(component: &str) -> Vec<&'static str> {
    ADDON_IMAGES
        .iter()
        .filter(|a| a.component == component)
        .map(|a| a.image)
        .collect()
}

/// Every image in the table, each once, in table order: each release's core images, then the
/// add-on images. What can end up on a node whatever the cluster's version and add-ons (used
/// for the registries nodes need a `hosts.toml` for, and to check a mirror mapping).
pub fn all_images() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = RELEASES
        .iter()
        .flat_map(|r| r.core_images())
        .chain(ADDON_IMAGES.iter().map(|a| a.image.to_string()));
    for i in all {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_has_checksummed_binaries_for_both_arches() {
        assert!(!RELEASES.is_empty());
        for r in RELEASES {
            for name in ["kubeadm", "kubelet", "kubectl", "crictl", "cni-plugins"] {
                let b = r
                    .binary(name)
                    .unwrap_or_else(|| panic!("{} lacks {name}", r.version));
                for arch in [Arch::Amd64, Arch::Arm64] {
                    let sum = b.sha256_for(arch);
                    assert_eq!(
                        sum.len(),
                        64,
                        "{} {name} {arch}: sha256 must be 64 hex chars",
                        r.version
                    );
                    assert!(sum
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                }
                assert!(b.url.contains("{arch}"), "{name} url must depend on arch");
            }
        }
    }

    #[test]
    fn lookup_accepts_leading_v() {
        let v = default_version();
        assert!(release(&format!("v{v}")).is_some());
        assert!(release("1.2.3").is_none());
    }

    #[test]
    fn every_component_has_images() {
        for c in [
            "flannel",
            "calico",
            "dashboard",
            "metallb",
            "nfs-provisioner",
            "nvidia-device-plugin",
        ] {
            assert!(!addon_images(c).is_empty(), "{c} has no images");
        }
    }
}

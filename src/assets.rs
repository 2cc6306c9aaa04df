//! Where nodes get images and files: the one mapping from upstream locations to the cluster's
//! mirrors (`spec.assets`). Bootstrap rendering uses it for every image reference, download URL
//! and containerd `hosts.toml`; the mirror command uses the same functions to decide where each
//! upstream asset is copied to, so the two can never disagree.
//!
//! Rules, first match wins, per upstream registry host:
//! 1. `assets.mappings[HOST]` (e.g. `docker.io: hub.example.com/dockerhub`): `MAPPING/PATH`.
//! 2. `assets.preset: aliyun` for `registry.k8s.io`: `registry.aliyuncs.com/google_containers/NAME`
//!    where NAME is the last path segment (the preset is flat, as kubeadm expects it: CoreDNS
//!    `registry.k8s.io/coredns/coredns` becomes `…/google_containers/coredns`).
//! 3. `assets.containerRegistry` (`host[:port][/prefix]`): `REGISTRY/HOST/PATH` — the mirror keeps
//!    the upstream host as the first path segment, so names from different registries never
//!    collide (`mirror.local:5000/registry.k8s.io/pause:3.10`).
//! 4. Otherwise the upstream reference unchanged.
//!
//! Files: `assets.fileRepository` + `/HOST/PATH` of the upstream URL, else the upstream URL.

use crate::spec::Assets;

/// Upstream registries a cluster's images come from; each gets a containerd `hosts.toml` that
/// sends its pulls to the mirror.
pub const UPSTREAM_REGISTRIES: &[&str] = &[
    "registry.k8s.io",
    "gcr.io",
    "docker.io",
    "quay.io",
    "ghcr.io",
    "nvcr.io",
];

/// The `aliyun` preset's location for `registry.k8s.io` images.
pub const ALIYUN_GOOGLE_CONTAINERS: &str = "registry.aliyuncs.com/google_containers";

/// Where nodes keep the mirror CA bundle (`assets.caBundle`), referenced from `hosts.toml`.
pub const MIRROR_CA_PATH: &str = "/etc/kprov/mirror-ca.crt";

/// Directory containerd reads `HOST/hosts.toml` files from (`config_path`).
pub const CERTS_D: &str = "/etc/containerd/certs.d";

/// An image reference split into registry host, repository path and tag/digest suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Registry host (`docker.io` for Docker Hub short names).
    pub host: String,
    /// Repository path (`library/nginx` for Docker Hub official images).
    pub path: String,
    /// `:tag`, `@sha256:…`, both, or empty.
    pub suffix: String,
}

impl ImageName {
    /// Parse `[host/]path[:tag][@digest]` the way container runtimes do: the first segment is a
    /// host when it contains `.` or `:` or is `localhost`; otherwise the image is on Docker Hub.
    pub fn parse(reference: &str) -> ImageName {
        let (host, rest) = match reference.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), reference.to_string()),
        };
        // The suffix starts at '@' or at the last ':' after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let cut = rest
            .find('@')
            .or_else(|| rest[last_slash..].find(':').map(|i| i + last_slash))
            .unwrap_or(rest.len());
        let (path, suffix) = rest.split_at(cut);
        let path = if host == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        ImageName {
            host,
            path,
            suffix: suffix.to_string(),
        }
    }

    /// The last path segment (`pause` of `registry.k8s.io/pause`).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Where repositories of `upstream_host` live when mirrored (`mirror.local:5000/registry.k8s.io`),
/// or `None` when the cluster pulls them from upstream. For the `aliyun` preset this is the flat
/// `registry.aliyuncs.com/google_containers` (see [`image_ref`] for how paths are flattened).
pub fn registry_location(upstream_host: &str, assets: &Assets) -> Option<String> {
    if let Some(m) = assets.mappings.get(upstream_host) {
        return Some(m.trim_end_matches('/').to_string());
    }
    if upstream_host == "registry.k8s.io" && assets.preset.as_deref() == Some("aliyun") {
        return Some(ALIYUN_GOOGLE_CONTAINERS.to_string());
    }
    assets
        .container_registry
        .as_ref()
        .map(|r| format!("{}/{upstream_host}", strip_scheme(r).trim_end_matches('/')))
}

fn is_flat_preset(upstream_host: &str, assets: &Assets) -> bool {
    upstream_host == "registry.k8s.io"
        && !assets.mappings.contains_key(upstream_host)
        && assets.preset.as_deref() == Some("aliyun")
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
}

/// The reference nodes pull for an upstream image, e.g. `registry.k8s.io/pause:3.10` →
/// `mirror.local:5000/registry.k8s.io/pause:3.10` with `containerRegistry: mirror.local:5000`.
pub fn image_ref(upstream: &str, assets: &Assets) -> String {
    let img = ImageName::parse(upstream);
    match registry_location(&img.host, assets) {
        None => upstream.to_string(),
        Some(loc) if is_flat_preset(&img.host, assets) => {
            format!("{loc}/{}{}", img.name(), img.suffix)
        }
        Some(loc) => format!("{loc}/{}{}", img.path, img.suffix),
    }
}

/// kubeadm's `imageRepository`: where `kube-apiserver`, `pause`, `etcd`… are pulled from.
pub fn kubeadm_image_repository(assets: &Assets) -> String {
    registry_location("registry.k8s.io", assets).unwrap_or_else(|| "registry.k8s.io".to_string())
}

/// kubeadm's `dns.imageRepository`: kubeadm appends `/coredns:TAG` to it. Upstream and for a
/// path-preserving mirror CoreDNS lives at `…/coredns/coredns`; a flat preset has it at
/// `…/coredns`.
pub fn kubeadm_dns_image_repository(assets: &Assets) -> String {
    let repo = kubeadm_image_repository(assets);
    if is_flat_preset("registry.k8s.io", assets) {
        repo
    } else {
        format!("{repo}/coredns")
    }
}

/// The URL a node downloads an upstream file from: `{fileRepository}/{host}/{path}`, or the
/// upstream URL when there is no file repository.
pub fn file_url(upstream_url: &str, assets: &Assets) -> String {
    let Some(repo) = assets.file_repository.as_deref() else {
        return upstream_url.to_string();
    };
    let rest = upstream_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(upstream_url);
    format!(
        "{}/{}",
        repo.trim_end_matches('/'),
        rest.trim_start_matches('/')
    )
}

/// `http` for `insecure` mirrors, else `https`.
pub fn mirror_scheme(assets: &Assets) -> &'static str {
    if assets.insecure {
        "http"
    } else {
        "https"
    }
}

/// The upstream endpoint containerd falls back to for a registry host.
pub fn upstream_server(upstream_host: &str) -> String {
    match upstream_host {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        h => format!("https://{h}"),
    }
}

fn host_options(assets: &Assets) -> String {
    let mut s = String::new();
    if assets.insecure {
        s.push_str("  skip_verify = true\n");
    }
    if assets.ca_bundle.is_some() {
        s.push_str(&format!("  ca = \"{MIRROR_CA_PATH}\"\n"));
    }
    s
}

/// containerd `certs.d/<upstream_host>/hosts.toml` that sends pulls of `upstream_host` to its
/// mirror (`override_path = true`, since the mirror keeps the upstream host in the path), or
/// `None` when the host is not mirrored.
pub fn hosts_toml(upstream_host: &str, assets: &Assets) -> Option<String> {
    let loc = registry_location(upstream_host, assets)?;
    let (mirror_host, prefix) = loc.split_once('/').unwrap_or((loc.as_str(), ""));
    let path = if prefix.is_empty() {
        "/v2".to_string()
    } else {
        format!("/v2/{prefix}")
    };
    Some(format!(
        "# written by kprov: pulls of {upstream_host} go to the mirror\nserver = \"{}\"\n\n[host.\"{}://{mirror_host}{path}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n{}",
        upstream_server(upstream_host),
        mirror_scheme(assets),
        host_options(assets)
    ))
}

/// Every `hosts.toml` a node needs, as `(directory name under certs.d, content)`: one per mirrored
/// upstream registry, plus one per mirror host itself when it needs plain HTTP or a private CA
/// (images referenced by their mirror name are pulled from it directly).
pub fn certs_d(assets: &Assets) -> Vec<(String, String)> {
    let mut hosts: Vec<&str> = UPSTREAM_REGISTRIES.to_vec();
    for h in assets.mappings.keys() {
        if !hosts.contains(&h.as_str()) {
            hosts.push(h);
        }
    }
    let mut out = Vec::new();
    let mut mirrors = std::collections::BTreeSet::new();
    for h in hosts {
        if let Some(toml) = hosts_toml(h, assets) {
            out.push((h.to_string(), toml));
            if let Some(loc) = registry_location(h, assets) {
                mirrors.insert(
                    loc.split_once('/')
                        .map(|(m, _)| m.to_string())
                        .unwrap_or(loc),
                );
            }
        }
    }
    if assets.insecure || assets.ca_bundle.is_some() {
        let scheme = mirror_scheme(assets);
        for m in mirrors {
            if out.iter().any(|(d, _)| *d == m) {
                continue;
            }
            let toml = format!(
                "# written by kprov: the mirror itself\nserver = \"{scheme}://{m}\"\n\n[host.\"{scheme}://{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{}",
                host_options(assets)
            );
            out.push((m, toml));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(reg: &str) -> Assets {
        Assets {
            container_registry: Some(reg.into()),
            ..Default::default()
        }
    }

    #[test]
    fn parse_splits_host_path_suffix() {
        let i = ImageName::parse("registry.k8s.io/coredns/coredns:v1.11.3");
        assert_eq!(
            (i.host.as_str(), i.path.as_str(), i.suffix.as_str()),
            ("registry.k8s.io", "coredns/coredns", ":v1.11.3")
        );
        let i = ImageName::parse("nginx");
        assert_eq!(
            (i.host.as_str(), i.path.as_str(), i.suffix.as_str()),
            ("docker.io", "library/nginx", "")
        );
        let i = ImageName::parse("localhost:5000/a/b@sha256:abc");
        assert_eq!(
            (i.host.as_str(), i.path.as_str(), i.suffix.as_str()),
            ("localhost:5000", "a/b", "@sha256:abc")
        );
        let i = ImageName::parse("kubernetesui/dashboard:v2.7.0");
        assert_eq!(i.host, "docker.io");
        assert_eq!(i.name(), "dashboard");
    }

    #[test]
    fn mirror_keeps_upstream_host_as_first_segment() {
        let a = mirror("mirror.local:5000");
        assert_eq!(
            image_ref("registry.k8s.io/pause:3.10", &a),
            "mirror.local:5000/registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            image_ref("quay.io/calico/node:v3", &a),
            "mirror.local:5000/quay.io/calico/node:v3"
        );
        let a = mirror("mirror.local/k8s/");
        assert_eq!(
            image_ref("ghcr.io/x/y:1", &a),
            "mirror.local/k8s/ghcr.io/x/y:1"
        );
        assert_eq!(
            kubeadm_image_repository(&a),
            "mirror.local/k8s/registry.k8s.io"
        );
        assert_eq!(
            kubeadm_dns_image_repository(&a),
            "mirror.local/k8s/registry.k8s.io/coredns"
        );
        assert_eq!(
            image_ref("registry.k8s.io/pause:3.10", &Assets::default()),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn aliyun_preset_is_flat_and_mappings_win() {
        let mut a = Assets {
            preset: Some("aliyun".into()),
            ..Default::default()
        };
        assert_eq!(
            image_ref("registry.k8s.io/coredns/coredns:v1.11.3", &a),
            "registry.aliyuncs.com/google_containers/coredns:v1.11.3"
        );
        assert_eq!(kubeadm_dns_image_repository(&a), ALIYUN_GOOGLE_CONTAINERS);
        assert_eq!(image_ref("quay.io/a/b:1", &a), "quay.io/a/b:1");
        a.mappings
            .insert("quay.io".into(), "hub.example/quay/".into());
        a.mappings
            .insert("registry.k8s.io".into(), "hub.example/k8s".into());
        assert_eq!(image_ref("quay.io/a/b:1", &a), "hub.example/quay/a/b:1");
        assert_eq!(
            image_ref("registry.k8s.io/coredns/coredns:v1", &a),
            "hub.example/k8s/coredns/coredns:v1"
        );
    }

    #[test]
    fn file_urls_keep_host_and_path() {
        let a = Assets {
            file_repository: Some("http://files.local/repo/".into()),
            ..Default::default()
        };
        assert_eq!(
            file_url("https://dl.k8s.io/release/v1/bin/linux/amd64/kubeadm", &a),
            "http://files.local/repo/dl.k8s.io/release/v1/bin/linux/amd64/kubeadm"
        );
        assert_eq!(
            file_url("https://dl.k8s.io/x", &Assets::default()),
            "https://dl.k8s.io/x"
        );
    }

    #[test]
    fn hosts_toml_points_at_the_prefixed_path() {
        let mut a = mirror("mirror.local:5000");
        let t = hosts_toml("registry.k8s.io", &a).expect("mirrored");
        assert!(t.contains("server = \"https://registry.k8s.io\""));
        assert!(t.contains("[host.\"https://mirror.local:5000/v2/registry.k8s.io\"]"));
        assert!(t.contains("override_path = true"));
        assert!(!t.contains("skip_verify"));
        a.insecure = true;
        a.ca_bundle = Some("PEM".into());
        let t = hosts_toml("docker.io", &a).expect("mirrored");
        assert!(t.contains("server = \"https://registry-1.docker.io\""));
        assert!(t.contains("http://mirror.local:5000/v2/docker.io"));
        assert!(t.contains("skip_verify = true"));
        assert!(t.contains(MIRROR_CA_PATH));
        assert!(hosts_toml("quay.io", &Assets::default()).is_none());
        let dirs: Vec<String> = certs_d(&a).into_iter().map(|(d, _)| d).collect();
        assert_eq!(dirs.len(), UPSTREAM_REGISTRIES.len() + 1, "{dirs:?}");
        assert!(dirs.contains(&"mirror.local:5000".to_string()));
    }
}

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
//! 3. `assets.containerRegistry` (`host[:port][/prefix]`): `REGISTRY/SEGMENT/PATH` — the mirror
//!    keeps the upstream host as the first path segment, so names from different registries never
//!    collide (`mirror.local:5000/registry.k8s.io/pause:3.10`).
//! 4. Otherwise the upstream reference unchanged.
//!
//! SEGMENT is [`mirror_segment`] of the upstream host: the host in lower case with the port's `:`
//! written `_` (`harbor.corp:8443` → `harbor.corp_8443`, `127.0.0.1:5000` → `127.0.0.1_5000`),
//! because a repository path component must match the distribution spec's
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` and `:` is not in it. `_` never occurs in a DNS name or
//! an IPv4 address (hosts with one are refused, [`check_registry_host`]), so the segment cannot
//! collide with another host's; a host without a port keeps its name (`registry.k8s.io`). Only the
//! mirror path changes: containerd still finds the `hosts.toml` under the real `host:port`.
//!
//! A name registries would refuse — an IPv6 host, an upper-case path, a component outside that
//! grammar, more than [`MAX_NAME_LEN`] characters — is found at plan time by
//! [`check_image_name`] (through `ImageRef::parse` for `kprov mirror`, and [`check_locations`]
//! for spec validation), never by a registry answering `HTTP 500` half-way through a copy.
//!
//! Files: `assets.fileRepository` + `/HOST/PATH` of the upstream URL, else the upstream URL.

use std::fmt;

use crate::spec::versions;
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
        // The suffix starts at the first ':' of the last segment before any '@' (the tag of
        // `x/y:1@sha256:…`), else at the '@'.
        let at = rest.find('@').unwrap_or(rest.len());
        let last_slash = rest[..at].rfind('/').map(|i| i + 1).unwrap_or(0);
        let cut = rest[last_slash..at]
            .find(':')
            .map(|i| i + last_slash)
            .unwrap_or(at);
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
    assets.container_registry.as_ref().map(|r| {
        format!(
            "{}/{}",
            strip_scheme(r).trim_end_matches('/'),
            mirror_segment(upstream_host)
        )
    })
}

/// The path segment a host-prefixed mirror keeps an upstream registry's repositories under: the
/// host in lower case, the port's `:` written `_` (`harbor.corp:8443` → `harbor.corp_8443`); a
/// host without a port is unchanged (`registry.k8s.io`). See the module doc for why.
pub fn mirror_segment(upstream_host: &str) -> String {
    upstream_host.to_ascii_lowercase().replace(':', "_")
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

/// Whether nodes take containerd and runc from the file repository when their image lacks
/// them (a file repository is set: a restricted network), rather than from the distribution's
/// package repositories.
pub fn runtime_from_file_repository(assets: &Assets) -> bool {
    assets.file_repository.is_some()
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
    let mut out = Vec::new();
    let mut mirrors = std::collections::BTreeSet::new();
    for h in upstream_hosts(assets) {
        if let Some(toml) = hosts_toml(&h, assets) {
            if let Some(loc) = registry_location(&h, assets) {
                mirrors.insert(
                    loc.split_once('/')
                        .map(|(m, _)| m.to_string())
                        .unwrap_or(loc),
                );
            }
            // The directory is the real `host[:port]`: that is where containerd looks.
            out.push((h, toml));
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

/// Every upstream registry a cluster's images can come from, each once: the well-known ones
/// ([`UPSTREAM_REGISTRIES`]), the hosts of every image in the versions table (what the catalogue
/// and the rendered nodes pull, so a table image from an internal `host:port` registry is
/// covered without another list to keep in step) and the `assets.mappings` keys (the way to
/// name any other upstream). [`certs_d`] writes a `hosts.toml` for each mirrored one;
/// [`check_locations`] checks each one's mirror location.
pub fn upstream_hosts(assets: &Assets) -> Vec<String> {
    let mut hosts: Vec<String> = UPSTREAM_REGISTRIES.iter().map(|h| h.to_string()).collect();
    let more = versions::all_images()
        .into_iter()
        .map(|i| ImageName::parse(&i).host)
        .chain(assets.mappings.keys().cloned());
    for h in more {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

/// The longest `HOST[:PORT]/PATH` to produce: the distribution spec notes that many clients
/// refuse longer names (docker's reference parser does), and a registry behind one is no use.
pub const MAX_NAME_LEN: usize = 255;

/// Why an image name would be refused, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem {
    /// What is wrong, naming the offending part.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.problem, self.fix)
    }
}

fn problem(problem: String, fix: impl Into<String>) -> NameProblem {
    NameProblem {
        problem,
        fix: fix.into(),
    }
}

/// Is `registry` (`host[:port]`) something a reference can name and [`mirror_segment`] can map
/// without collisions: DNS labels or an IPv4 address (letters, digits, `-`, `.`; no `_`), and a
/// port 1-65535? IPv6 literals are refused: `[`, `]` and `:` have no spelling in a repository path.
pub fn check_registry_host(registry: &str) -> Result<(), NameProblem> {
    if registry.starts_with('[') || registry.matches(':').count() > 1 {
        return Err(problem(
            format!("registry {registry} is an IPv6 address, which has no spelling as a mirror path segment"),
            format!("give the registry a host name (a DNS or /etc/hosts entry) or use its IPv4 address, and write the reference with it instead of {registry}"),
        ));
    }
    let (name, port) = match registry.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (registry, None),
    };
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && (1..=65535).contains(&p.parse::<u32>().unwrap_or(0));
        if !ok {
            return Err(problem(
                format!("registry {registry}: {p:?} is not a port number"),
                "write the registry as HOST[:PORT] with a port from 1 to 65535",
            ));
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(problem(
            format!("registry {registry:?} is not a host name or IPv4 address"),
            "write the registry as HOST[:PORT], HOST made of letters, digits, '-' and '.' only",
        ));
    }
    Ok(())
}

/// Does `c` match the distribution spec's path component `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`?
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Is every `/`-separated component of a repository path (or a mirror prefix) one the
/// distribution spec allows?
pub fn check_repository_path(path: &str) -> Result<(), NameProblem> {
    for c in path.split('/') {
        if is_path_component(c) {
            continue;
        }
        return Err(if is_path_component(&c.to_ascii_lowercase()) {
            problem(
                format!("repository path {path:?} has upper-case letters ({c:?})"),
                "write the repository path in lower case: registries take only a-z, 0-9 and the separators '.', '_', '__', '-'",
            )
        } else {
            problem(
                format!("component {c:?} of repository path {path:?} is not [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* (the distribution spec's grammar)"),
                "use lower-case letters and digits, joined by '.', '_', '__' or dashes, between single slashes",
            )
        });
    }
    Ok(())
}

/// The one check of an image name (`HOST[:PORT]/PATH[:TAG][@DIGEST]`, split as
/// [`ImageName::parse`] splits it) against what registries accept: the host
/// ([`check_registry_host`]), every path component ([`check_repository_path`]), the total length
/// of `HOST/PATH` ([`MAX_NAME_LEN`]) and the tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`). The
/// digest's form is `ImageRef::parse`'s to check (kprov only speaks sha256).
pub fn check_image_name(reference: &str) -> Result<(), NameProblem> {
    let n = ImageName::parse(reference);
    check_registry_host(&n.host)?;
    check_repository_path(&n.path)?;
    let len = n.host.len() + 1 + n.path.len();
    if len > MAX_NAME_LEN {
        return Err(problem(
            format!("{}/{} is {len} characters long, over the {MAX_NAME_LEN} registries and clients accept", n.host, n.path),
            "use a shorter mirror prefix (--to, assets.containerRegistry) or map this registry somewhere shorter with assets.mappings",
        ));
    }
    let tag = n.suffix.split('@').next().unwrap_or("");
    if let Some(t) = tag.strip_prefix(':') {
        let ok = t.len() <= 128
            && t.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
            });
        if !ok || t.is_empty() {
            return Err(problem(
                format!("tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"),
                "write the tag with letters, digits, '_', '.' and '-' only (not starting with '.' or '-'), at most 128 characters",
            ));
        }
    }
    Ok(())
}

/// `host[:port][/prefix]` of a mirror location, checked as the start of image names.
fn check_location(location: &str) -> Result<(), NameProblem> {
    let (host, prefix) = location.split_once('/').unwrap_or((location, ""));
    check_registry_host(host)?;
    if prefix.is_empty() {
        Ok(())
    } else {
        check_repository_path(prefix)
    }
}

/// Spec validation of the mirror names `assets` produces, as `(field, problem)`, at most one per
/// field: every `assets.mappings` key must be a registry host; every mirror location (of each
/// of [`upstream_hosts`]) must start valid names; and every image of the versions table must
/// map to a valid name ([`check_image_name`], which also catches names too long). So `create` /
/// `update` refuse a mapping whose images registries would refuse, before any node pulls one.
pub fn check_locations(assets: &Assets) -> Vec<(&'static str, NameProblem)> {
    let field = |host: &str| {
        if assets.mappings.contains_key(host) {
            "spec.assets.mappings"
        } else {
            "spec.assets.containerRegistry"
        }
    };
    let mut out: Vec<(&'static str, NameProblem)> = Vec::new();
    let mut report = |f: &'static str, p: NameProblem| {
        if !out.iter().any(|(g, _)| *g == f) {
            out.push((f, p));
        }
    };
    for host in assets.mappings.keys() {
        if let Err(p) = check_registry_host(host) {
            report("spec.assets.mappings", p);
        }
    }
    for host in upstream_hosts(assets) {
        let Some(loc) = registry_location(&host, assets) else {
            continue;
        };
        if let Err(p) = check_location(&loc) {
            let p = problem(
                format!("mirror location {loc} of {host}: {}", p.problem),
                p.fix,
            );
            report(field(&host), p);
        }
    }
    for img in versions::all_images() {
        let to = image_ref(&img, assets);
        if let Err(p) = check_image_name(&to) {
            let host = ImageName::parse(&img).host;
            let p = problem(
                format!("{img} would be pulled as {to}: {}", p.problem),
                p.fix,
            );
            report(field(&host), p);
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

    #[test]
    fn a_port_becomes_an_underscore_in_the_mirror_segment() {
        for (host, seg) in [
            ("harbor.corp:8443", "harbor.corp_8443"),
            ("127.0.0.1:5000", "127.0.0.1_5000"),
            ("localhost:5000", "localhost_5000"),
            ("Harbor.Corp:8443", "harbor.corp_8443"),
            ("registry.k8s.io", "registry.k8s.io"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(mirror_segment(host), seg, "{host}");
            assert!(check_registry_host(host).is_ok(), "{host}");
            assert!(is_path_component(seg), "{seg} is a valid path component");
        }
        let a = mirror("mirror.local:5000");
        assert_eq!(
            image_ref("harbor.corp:8443/app/web:1.0", &a),
            "mirror.local:5000/harbor.corp_8443/app/web:1.0"
        );
        assert_eq!(
            image_ref("localhost:5000/x@sha256:abc", &a),
            "mirror.local:5000/localhost_5000/x@sha256:abc"
        );
        // Hosts without a port keep today's layout.
        assert_eq!(
            image_ref("registry.k8s.io/pause:3.10", &a),
            "mirror.local:5000/registry.k8s.io/pause:3.10"
        );
        // containerd looks under the real host:port; only the mirror path has the segment.
        let t = hosts_toml("harbor.corp:8443", &a).expect("mirrored");
        assert!(t.contains("server = \"https://harbor.corp:8443\""), "{t}");
        assert!(
            t.contains("[host.\"https://mirror.local:5000/v2/harbor.corp_8443\"]"),
            "{t}"
        );
        let mut m = a.clone();
        m.mappings
            .insert("harbor.corp:8443".into(), "hub.example/harbor".into());
        let dirs: Vec<String> = certs_d(&m).into_iter().map(|(d, _)| d).collect();
        assert!(dirs.contains(&"harbor.corp:8443".to_string()), "{dirs:?}");
    }

    #[test]
    fn path_components_follow_the_distribution_grammar() {
        for ok in [
            "a",
            "a1",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a.b-c_d__e",
            "0",
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a:b", "a___b", "a..b", "-a", "a-", ".a", "a.", "_a", "a_", "a b", "é",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn image_names_registries_refuse_are_named_with_a_fix() {
        for ok in [
            "harbor.corp:8443/app/web:1.0",
            "localhost:5000/a/b",
            "Harbor.Corp:8443/app/web:1.0",
            "nginx",
            "127.0.0.1:5000/127.0.0.1_5001/app/web:1.0_x-y.z",
        ] {
            assert_eq!(check_image_name(ok), Ok(()), "{ok}");
        }
        let refused = |r: &str| check_image_name(r).expect_err(r);
        let p = refused("[::1]:5000/app/web:1.0");
        assert!(p.problem.contains("IPv6"), "{p}");
        assert!(p.fix.contains("host name"), "{p}");
        let p = refused("harbor.corp:8443/App/web:1.0");
        assert!(
            p.problem.contains("upper-case") && p.problem.contains("App"),
            "{p}"
        );
        assert!(p.fix.contains("lower case"), "{p}");
        assert!(refused("harbor.corp:99999/a").problem.contains("port"));
        assert!(refused("harbor.corp:/a").problem.contains("port"));
        // `_` in a host would make the segment ambiguous (`a_5000` vs `a:5000`).
        assert!(refused("my_reg.corp/a").problem.contains("host name"));
        assert!(refused("reg.corp/a/b___c").problem.contains("b___c"));
        assert!(refused("reg.corp/a:b:c").problem.contains("tag"));
        assert!(refused("reg.corp/a:.x").problem.contains("tag"));
        let long = format!("reg.corp/{}", "a".repeat(MAX_NAME_LEN - "reg.corp/".len()));
        assert_eq!(check_image_name(&long), Ok(()), "exactly {MAX_NAME_LEN}");
        let p = refused(&format!("{long}b"));
        assert!(p.problem.contains("256 characters"), "{p}");
    }

    #[test]
    fn spec_locations_that_give_refused_names_are_found() {
        assert!(check_locations(&Assets::default()).is_empty());
        assert!(check_locations(&mirror("mirror.local:5000/k8s")).is_empty());
        let p = check_locations(&mirror("mirror.local:5000/K8s"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "spec.assets.containerRegistry");
        assert!(p[0].1.problem.contains("K8s"), "{:?}", p[0]);
        let mut a = Assets::default();
        a.mappings
            .insert("[::1]:5000".into(), "hub.example/v6".into());
        a.mappings
            .insert("quay.io".into(), "hub.example/Quay".into());
        let p = check_locations(&a);
        assert_eq!(p.len(), 1, "one problem per field: {p:?}");
        assert_eq!(p[0].0, "spec.assets.mappings");
        assert!(p[0].1.problem.contains("IPv6"), "{:?}", p[0]);
        let p = check_locations(&mirror(&format!("m.local/{}", "p".repeat(200))));
        assert!(p[0].1.problem.contains("characters long"), "{p:?}");
    }
}

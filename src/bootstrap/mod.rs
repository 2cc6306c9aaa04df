//! Node bootstrap: each instance's user-data, a `#cloud-config` rendered from `templates/`.
//!
//! Every node gets: its hostname, the SSH key, swap off (now and in fstab), the `overlay` and
//! `br_netfilter` modules and bridge sysctls, containerd's config with the mirror's `hosts.toml`
//! files (and CA bundle), the kubelet unit, a kubeadm config, and `bootstrap.sh`, which cloud-init
//! runs: it downloads kubeadm/kubelet/kubectl/crictl/CNI plugins for the node's arch from the
//! file repository with SHA-256 checked, then runs `kubeadm init` (first control plane, which also
//! applies the CNI and add-on manifests) or `kubeadm join` (retried until the API answers). Each
//! phase reports `KPROV_PHASE <name> ok|failed` (see `docs/bootstrap.md`).
//!
//! Secrets: only the first control plane's user-data carries CA private keys (so kubeadm uses the
//! cluster's existing CAs and the discovery hash stays right). Extra control planes carry the
//! bootstrap token and the certificate key; workers only the token and the CA hash.

use std::io::{Read, Write};
use std::sync::Arc;

use kprov_providers::{InstanceRequest, Role};
use serde::Serialize;

use crate::apply::{RenderContext, UserData};
use crate::assets;
use crate::repo::Repo;
use crate::secrets::ClusterSecrets;
use crate::spec::versions::{self, Release};
use crate::spec::ClusterConfig;

pub mod manifests;
pub mod templates;
mod yaml;

pub use manifests::Manifest;

/// Node label kprov gives NVIDIA GPU nodes through the kubelet; the device plugin selects it.
pub const GPU_NODE_LABEL: &str = "nvidia.com/gpu.present";
/// Node label naming the node's instance group.
pub const INSTANCE_GROUP_LABEL: &str = "kprov.io/instance-group";
/// Where the bootstrap script lives on the node.
pub const SCRIPT_PATH: &str = "/usr/local/lib/kprov/bootstrap.sh";
/// The bootstrap's settings file on the node (sourced by the script; no secrets in it).
pub const ENV_PATH: &str = "/etc/kprov/bootstrap.env";
/// The bootstrap log on the node.
pub const LOG_PATH: &str = "/var/log/kprov-bootstrap.log";
/// containerd's CRI socket.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// The NVIDIA Container Toolkit runtime binary containerd runs on GPU nodes.
pub const NVIDIA_RUNTIME: &str = "/usr/bin/nvidia-container-runtime";
/// Marker lines around the download function in `bootstrap.sh` (tests run it on its own).
pub const FETCH_BEGIN: &str = "# --- kprov:fetch begin ---";
/// See [`FETCH_BEGIN`].
pub const FETCH_END: &str = "# --- kprov:fetch end ---";
/// Marker lines around the phase-reporting functions in `bootstrap.sh`.
pub const REPORT_BEGIN: &str = "# --- kprov:report begin ---";
/// See [`REPORT_BEGIN`].
pub const REPORT_END: &str = "# --- kprov:report end ---";

/// What rendering user-data can fail on.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A template failed to parse or render (a kprov bug, or a versions-table entry a template
    /// expects is missing).
    #[error("template {name}: {message}")]
    Template {
        /// Template name.
        name: String,
        /// What tera said.
        message: String,
    },
    /// The cluster's Kubernetes version is not in the versions table.
    #[error("Kubernetes version {version} is not in kprov's versions table (supported: {supported}); set spec.kubernetesVersion to one of them")]
    UnknownVersion {
        /// The spec's version.
        version: String,
        /// Supported versions.
        supported: String,
    },
    /// The versions table lacks a binary the bootstrap needs.
    #[error("the versions table has no {binary} for Kubernetes {version}")]
    MissingBinary {
        /// Release.
        version: String,
        /// Binary name.
        binary: String,
    },
    /// A node's instance group has a setting the bootstrap cannot express.
    #[error("instance group {instance_group}: {problem}; {fix}")]
    InstanceGroup {
        /// Instance group.
        instance_group: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A node must join but no control-plane endpoint is known.
    #[error("{node} must join the cluster but no control-plane endpoint is known; set spec.controlPlane.endpoint or create the first control plane first")]
    NoEndpoint {
        /// Instance name.
        node: String,
    },
    /// The stored bootstrap token has expired.
    #[error("the bootstrap token of cluster {cluster} expired at {expires}, so new nodes could not join with it; a new token must be issued (and created in the running cluster) before nodes are added")]
    TokenExpired {
        /// Cluster.
        cluster: String,
        /// When it expired (RFC 3339).
        expires: String,
    },
    /// The user-data does not fit the provider's limit even gzip-compressed.
    #[error(
        "user-data of {instance} (instance group {instance_group}) is {gzip} bytes gzip-compressed ({raw} bytes raw), over the {provider} limit of {limit} bytes; {fix}"
    )]
    TooLarge {
        /// Instance name.
        instance: String,
        /// Instance group.
        instance_group: String,
        /// Provider.
        provider: String,
        /// Uncompressed size.
        raw: usize,
        /// Compressed size.
        gzip: usize,
        /// The limit.
        limit: usize,
        /// What to change.
        fix: String,
    },
    /// Compressing or decompressing failed.
    #[error("user-data compression: {0}")]
    Io(#[from] std::io::Error),
}

/// The user-data size limit of a provider, in bytes of the user-data as handed to the API
/// (before any base64 the API adds), or `None` when there is no practical limit.
///
/// * `aws`: 16384 — EC2's documented limit on raw user-data (16 KB before base64).
/// * `zstack`: 49143 — not documented by ZStack; a guess: the system tag `userdata::<base64>` is
///   assumed to live in a MySQL `TEXT` column (65535 bytes), so 65525 base64 characters, i.e.
///   49143 bytes of user-data.
/// * `libvirt`: `None` — the NoCloud seed ISO holds any size.
pub fn user_data_limit(provider: &str) -> Option<usize> {
    match provider {
        "aws" => Some(16384),
        "zstack" => Some(49143),
        _ => None,
    }
}

/// The name a file is known by in `KPROV_ASSET_SHA256SUMS`: the last segment of its URL.
pub fn file_name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Read a `sha256sum`-format file (`HEX  NAME` or `HEX *NAME` per line) into name → sum.
/// An unreadable file or a malformed line is reported and skipped: the pinned sums then apply,
/// which fails the download loudly on the node rather than trusting anything.
fn read_sha256sums(path: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(sum), Some(name))
                        if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        let name = name.trim_start_matches('*');
                        let name = name.rsplit('/').next().unwrap_or(name);
                        out.insert(name.to_string(), sum.to_ascii_lowercase());
                    }
                    _ => tracing::warn!("KPROV_ASSET_SHA256SUMS {path}: ignoring line {line:?}"),
                }
            }
            if !out.is_empty() {
                tracing::warn!(
                    "KPROV_ASSET_SHA256SUMS {path}: replacing the pinned SHA-256 of {} file(s): {}",
                    out.len(),
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Err(e) => tracing::warn!("KPROV_ASSET_SHA256SUMS {path}: cannot read: {e}"),
    }
    out
}

/// Settings of the renderer that are not part of the cluster spec: hooks for tests and for
/// debugging boots (read from the environment by [`BootstrapOptions::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Every phase result is POSTed as JSON to `{callback_url}/kprov/phase` (env
    /// `KPROV_CALLBACK_URL`).
    pub callback_url: Option<String>,
    /// Where binaries are installed on the node.
    pub bin_dir: String,
    /// The kubeadm the script runs (env `KPROV_KUBEADM_PATH`; default `{bin_dir}/kubeadm`), e.g. a
    /// stand-in that records its arguments.
    pub kubeadm_path: Option<String>,
    /// Download the Kubernetes binaries (env `KPROV_INSTALL_BINARIES=0` turns it off for images
    /// that have them baked in; the script then only checks they exist).
    pub install_binaries: bool,
    /// How long a node keeps retrying `kubeadm join`, in seconds.
    pub join_timeout_secs: u64,
    /// SHA-256 sums that replace the pinned ones of the versions table, by file name (env
    /// `KPROV_ASSET_SHA256SUMS=FILE` in `sha256sum` format): for in-house builds of the binaries
    /// and for the VM tests' stand-in kubeadm. kprov warns whenever it is in effect.
    pub sha256_overrides: std::collections::BTreeMap<String, String>,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            callback_url: None,
            bin_dir: "/usr/local/bin".into(),
            kubeadm_path: None,
            install_binaries: true,
            join_timeout_secs: 3600,
            sha256_overrides: Default::default(),
        }
    }
}

impl BootstrapOptions {
    /// Defaults, overridden by `KPROV_CALLBACK_URL`, `KPROV_KUBEADM_PATH` and
    /// `KPROV_INSTALL_BINARIES` (`0`/`false` to skip downloads).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        BootstrapOptions {
            callback_url: var("KPROV_CALLBACK_URL"),
            kubeadm_path: var("KPROV_KUBEADM_PATH"),
            install_binaries: !matches!(
                var("KPROV_INSTALL_BINARIES").as_deref(),
                Some("0" | "false" | "no")
            ),
            sha256_overrides: var("KPROV_ASSET_SHA256SUMS")
                .map(|f| read_sha256sums(&f))
                .unwrap_or_default(),
            ..BootstrapOptions::default()
        }
    }

    fn kubeadm(&self) -> String {
        self.kubeadm_path
            .clone()
            .unwrap_or_else(|| format!("{}/kubeadm", self.bin_dir))
    }
}

/// What a node does with kubeadm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// `kubeadm init`: the first control plane, no endpoint known yet.
    Init,
    /// The first control plane when the spec names the endpoint: `kubeadm init` with that
    /// endpoint, unless an API server already answers there (a replacement), then join.
    InitOrJoin {
        /// `host:port` from the spec.
        endpoint: String,
    },
    /// `kubeadm join --control-plane` at the endpoint.
    JoinControlPlane {
        /// `host:port`.
        endpoint: String,
    },
    /// `kubeadm join` of a worker.
    JoinWorker {
        /// `host:port`.
        endpoint: String,
    },
}

impl NodeAction {
    /// Does this node's user-data carry the CA private keys?
    pub fn carries_ca_keys(&self) -> bool {
        matches!(self, NodeAction::Init | NodeAction::InitOrJoin { .. })
    }
    fn env_action(&self) -> &'static str {
        match self {
            NodeAction::Init => "init",
            NodeAction::InitOrJoin { .. } => "init-or-join",
            _ => "join",
        }
    }
    fn endpoint(&self) -> Option<&str> {
        match self {
            NodeAction::Init => None,
            NodeAction::InitOrJoin { endpoint }
            | NodeAction::JoinControlPlane { endpoint }
            | NodeAction::JoinWorker { endpoint } => Some(endpoint),
        }
    }
}

/// A file the user-data writes on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path.
    pub path: String,
    /// Octal mode, e.g. `0600`.
    pub permissions: &'static str,
    /// Content.
    pub content: String,
    /// Embed gzip-compressed and base64-encoded (`encoding: gz+b64`) instead of as text.
    pub compress: bool,
}

impl NodeFile {
    fn text(
        path: impl Into<String>,
        permissions: &'static str,
        content: impl Into<String>,
    ) -> NodeFile {
        NodeFile {
            path: path.into(),
            permissions,
            content: content.into(),
            compress: false,
        }
    }
}

#[derive(Serialize)]
struct FileCtx {
    path: String,
    permissions: &'static str,
    encoding: Option<&'static str>,
    content: String,
}

#[derive(Serialize)]
struct BinaryCtx {
    url: String,
    dest: String,
    sha256: String,
    archive: bool,
    extract_to: String,
    members: String,
}

#[derive(Serialize)]
struct KubeletArg {
    name: String,
    value: String,
}

/// Node labels as `(key, value)` pairs.
type Labels = Vec<(String, String)>;

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct Taint {
    key: String,
    value: Option<String>,
    effect: String,
}

/// Renders user-data for a cluster's nodes. Implements [`UserData`] for the executor.
pub struct Renderer {
    config: ClusterConfig,
    secrets: ClusterSecrets,
    discovery_hash: String,
    options: BootstrapOptions,
    release: &'static Release,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("cluster", &self.config.name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The user-data renderer for a cluster: loads its secrets from the state store.
pub async fn renderer(repo: &Repo, config: &ClusterConfig) -> anyhow::Result<Arc<dyn UserData>> {
    let secrets = crate::secrets::load(repo, config.name()).await?;
    let discovery_hash = crate::pki::discovery_hash(&secrets.ca.cert_pem)?;
    Ok(Arc::new(Renderer::new(
        config.clone(),
        secrets,
        discovery_hash,
        BootstrapOptions::from_env(),
    )?))
}

impl UserData for Renderer {
    fn render(&self, req: &InstanceRequest, ctx: &RenderContext) -> Result<Vec<u8>, String> {
        self.render_user_data(req, ctx).map_err(|e| e.to_string())
    }
}

fn with_port(endpoint: &str, port: u16) -> String {
    let e = endpoint.trim();
    if e.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !e.ends_with(']')
    {
        e.to_string()
    } else {
        format!("{e}:{port}")
    }
}

fn endpoint_host(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// May the kubelet set this label on its own Node (NodeRestriction admission)?
pub fn kubelet_may_set_label(key: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    ALLOWED.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

fn parse_taint(ig: &str, s: &str) -> Result<Taint, BootstrapError> {
    let bad = || {
        BootstrapError::InstanceGroup {
        instance_group: ig.into(),
        problem: format!("taint {s:?} is not key[=value]:Effect"),
        fix: "write taints like `dedicated=gpu:NoSchedule` (effects: NoSchedule, PreferNoSchedule, NoExecute)".into(),
    }
    };
    let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") || kv.is_empty() {
        return Err(bad());
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string()).filter(|v| !v.is_empty())),
        None => (kv.to_string(), None),
    };
    Ok(Taint {
        key,
        value,
        effect: effect.into(),
    })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Gzip `text` when it exceeds `limit`; fail when even that does not fit.
pub fn fit_user_data(
    text: &str,
    limit: Option<usize>,
    provider: &str,
    req: &InstanceRequest,
) -> Result<Vec<u8>, BootstrapError> {
    let raw = text.as_bytes();
    let Some(limit) = limit else {
        return Ok(raw.to_vec());
    };
    if raw.len() <= limit {
        return Ok(raw.to_vec());
    }
    let gz = gzip(raw)?;
    if gz.len() <= limit {
        return Ok(gz);
    }
    let fix = if req.role == Role::ControlPlane {
        "the first control plane carries the CA keys and every CNI/add-on manifest: choose flannel instead of calico or fewer add-ons, or create the cluster on a provider without this limit".to_string()
    } else {
        "this is unexpected for a node without manifests; report it with `kprov get userdata`"
            .to_string()
    };
    Err(BootstrapError::TooLarge {
        instance: req.name.clone(),
        instance_group: req.instance_group.clone(),
        provider: provider.into(),
        raw: raw.len(),
        gzip: gz.len(),
        limit,
        fix,
    })
}

/// The user-data as text: gunzips it when it is gzip-compressed.
pub fn decompress_user_data(bytes: &[u8]) -> Result<String, BootstrapError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(bytes).read_to_string(&mut s)?;
        Ok(s)
    } else {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Replace secrets in rendered user-data by `<redacted>`: every PEM private key block (line by
/// line, so YAML stays valid), the bootstrap token and the certificate key.
pub fn redact(text: &str, secrets: &ClusterSecrets) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = &body[..body.len() - body.trim_start().len()];
        if !in_key && body.contains("-----BEGIN") && body.contains("PRIVATE KEY-----") {
            in_key = !body.contains("-----END");
            out.push_str(indent);
            out.push_str("<redacted>");
            out.push_str(&line[body.len()..]);
            continue;
        }
        if in_key {
            if body.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        out.push_str(line);
    }
    let mut out = out.replace(&secrets.token.token, "<redacted>");
    if let Some((_, secret)) = secrets.token.token.split_once('.') {
        if secret.len() >= 8 {
            out = out.replace(secret, "<redacted>");
        }
    }
    if !secrets.certificate_key.is_empty() {
        out = out.replace(&secrets.certificate_key, "<redacted>");
    }
    out
}

impl Renderer {
    /// A renderer for `config` with its secrets and the CA's discovery hash (`sha256:HEX`).
    pub fn new(
        config: ClusterConfig,
        secrets: ClusterSecrets,
        discovery_hash: String,
        options: BootstrapOptions,
    ) -> Result<Renderer, BootstrapError> {
        let version = config.cluster.spec.kubernetes_version.clone();
        let release =
            versions::release(&version).ok_or_else(|| BootstrapError::UnknownVersion {
                version,
                supported: versions::supported().join(", "),
            })?;
        for b in ["kubeadm", "kubelet", "kubectl", "crictl", "cni-plugins"] {
            if release.binary(b).is_none() {
                return Err(BootstrapError::MissingBinary {
                    version: release.version.into(),
                    binary: b.into(),
                });
            }
        }
        templates::tera()?;
        let discovery_hash = if discovery_hash.starts_with("sha256:") {
            discovery_hash
        } else {
            format!("sha256:{discovery_hash}")
        };
        Ok(Renderer {
            config,
            secrets,
            discovery_hash,
            options,
            release,
        })
    }

    /// The cluster spec.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The secrets (for [`redact`]).
    pub fn secrets(&self) -> &ClusterSecrets {
        &self.secrets
    }

    /// The provider's user-data limit ([`user_data_limit`]).
    pub fn limit(&self) -> Option<usize> {
        user_data_limit(self.config.cluster.spec.provider.name())
    }

    fn control_plane_count(&self) -> i64 {
        self.config
            .groups
            .iter()
            .filter(|g| g.spec.role == Role::ControlPlane)
            .map(|g| g.spec.count.max(0))
            .sum()
    }

    fn spec_endpoint(&self) -> Option<String> {
        let cp = &self.config.cluster.spec.control_plane;
        cp.endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .map(|e| with_port(e, cp.port))
    }

    /// The first control plane by the executor's rule: index 0 of the first control-plane
    /// instance group (by name) that has instances.
    fn is_designated_first(&self, req: &InstanceRequest) -> bool {
        let first = self
            .config
            .groups
            .iter()
            .filter(|g| g.spec.role == Role::ControlPlane && g.spec.count > 0)
            .map(|g| g.name())
            .min();
        req.role == Role::ControlPlane
            && req.index == 0
            && first == Some(req.instance_group.as_str())
    }

    /// Decide what `req` does: see [`NodeAction`]. An empty `ctx.control_plane_endpoint` means
    /// this is the first control plane and no endpoint exists yet.
    pub fn action(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<NodeAction, BootstrapError> {
        let port = self.config.cluster.spec.control_plane.port;
        let ctx_ep = Some(ctx.control_plane_endpoint.trim())
            .filter(|e| !e.is_empty())
            .map(|e| with_port(e, port));
        let spec_ep = self.spec_endpoint();
        Ok(match req.role {
            Role::ControlPlane => match (ctx_ep, spec_ep) {
                (None, None) => NodeAction::Init,
                (None, Some(ep)) if self.is_designated_first(req) => {
                    NodeAction::InitOrJoin { endpoint: ep }
                }
                (Some(c), Some(ep)) if c == ep && self.is_designated_first(req) => {
                    NodeAction::InitOrJoin { endpoint: ep }
                }
                (Some(endpoint), _) | (None, Some(endpoint)) => {
                    NodeAction::JoinControlPlane { endpoint }
                }
            },
            Role::Node => match ctx_ep.or(spec_ep) {
                Some(endpoint) => NodeAction::JoinWorker { endpoint },
                None => {
                    return Err(BootstrapError::NoEndpoint {
                        node: req.name.clone(),
                    })
                }
            },
        })
    }

    fn is_nvidia(req: &InstanceRequest) -> bool {
        req.gpu.as_ref().is_some_and(|g| {
            g.vendor
                .as_deref()
                .is_none_or(|v| v.to_ascii_lowercase().contains("nvidia"))
        })
    }

    /// Labels the kubelet sets on the node (sorted `key=value` pairs) and its taints. Labels the
    /// kubelet may not set itself are left to the first control plane ([`Self::restricted_labels`]).
    fn group_labels_taints(
        &self,
        req: &InstanceRequest,
    ) -> Result<(Labels, Vec<Taint>), BootstrapError> {
        let group = self
            .config
            .groups
            .iter()
            .find(|g| g.name() == req.instance_group);
        let mut self_set = vec![(INSTANCE_GROUP_LABEL.to_string(), req.instance_group.clone())];
        let mut taints = Vec::new();
        if let Some(g) = group {
            for (k, v) in &g.spec.labels {
                if kubelet_may_set_label(k) {
                    self_set.push((k.clone(), v.clone()));
                }
            }
            for t in &g.spec.taints {
                taints.push(parse_taint(g.name(), t)?);
            }
        }
        if Self::is_nvidia(req) {
            self_set.push((GPU_NODE_LABEL.to_string(), "true".into()));
        }
        if req.role == Role::ControlPlane
            && !taints.is_empty()
            && !taints
                .iter()
                .any(|t| t.key == "node-role.kubernetes.io/control-plane")
        {
            // Custom taints replace kubeadm's default; keep the control-plane taint.
            taints.insert(
                0,
                Taint {
                    key: "node-role.kubernetes.io/control-plane".into(),
                    value: None,
                    effect: "NoSchedule".into(),
                },
            );
        }
        self_set.sort();
        self_set.dedup_by(|a, b| a.0 == b.0);
        Ok((self_set, taints))
    }

    fn node_registration(
        &self,
        req: &InstanceRequest,
        ctx: &mut tera::Context,
    ) -> Result<(), BootstrapError> {
        let (labels, taints) = self.group_labels_taints(req)?;
        let node_labels = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let args = vec![
            KubeletArg {
                name: "node-ip".into(),
                value: "@KPROV_NODE_IP@".into(),
            },
            KubeletArg {
                name: "node-labels".into(),
                value: node_labels,
            },
        ];
        ctx.insert("node_name", &req.name);
        ctx.insert("cri_socket", CRI_SOCKET);
        ctx.insert("kubelet_args", &args);
        ctx.insert("taints", &taints);
        Ok(())
    }

    fn check_token(&self) -> Result<(), BootstrapError> {
        if self.secrets.token.expires <= chrono::Utc::now() {
            return Err(BootstrapError::TokenExpired {
                cluster: self.config.name().into(),
                expires: self.secrets.token.expires.to_rfc3339(),
            });
        }
        Ok(())
    }

    /// `kubeadm-init.yaml` for the first control plane (`@KPROV_NODE_IP@` is filled in on the
    /// node).
    pub fn kubeadm_init_config(
        &self,
        req: &InstanceRequest,
        action: &NodeAction,
    ) -> Result<String, BootstrapError> {
        let spec = &self.config.cluster.spec;
        let a = &spec.assets;
        let mut ctx = tera::Context::new();
        self.node_registration(req, &mut ctx)?;
        let multi = self.control_plane_count() > 1;
        let endpoint = match action {
            NodeAction::InitOrJoin { endpoint } => Some(endpoint.clone()),
            // Several control planes and no endpoint: the others join at this node's address.
            _ if multi => Some(format!("@KPROV_NODE_IP@:{}", spec.control_plane.port)),
            _ => None,
        };
        let sans: Vec<String> = match action {
            NodeAction::InitOrJoin { endpoint } => vec![endpoint_host(endpoint).to_string()],
            _ => vec![],
        };
        ctx.insert("cluster_name", self.config.name());
        ctx.insert("token", &self.secrets.token.token);
        ctx.insert(
            "token_expires",
            &self
                .secrets
                .token
                .expires
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        ctx.insert(
            "certificate_key",
            &if multi || matches!(action, NodeAction::InitOrJoin { .. }) {
                self.secrets.certificate_key.clone()
            } else {
                String::new()
            },
        );
        ctx.insert("api_port", &spec.control_plane.port);
        ctx.insert("kubernetes_version", &format!("v{}", self.release.version));
        ctx.insert("image_repository", &assets::kubeadm_image_repository(a));
        ctx.insert(
            "dns_image_repository",
            &assets::kubeadm_dns_image_repository(a),
        );
        ctx.insert("coredns_tag", self.release.coredns);
        ctx.insert("etcd_tag", self.release.etcd);
        ctx.insert("control_plane_endpoint", &endpoint.unwrap_or_default());
        ctx.insert("cert_sans", &sans);
        ctx.insert("pod_subnet", &spec.networking.pod_cidr.to_string());
        ctx.insert("service_subnet", &spec.networking.service_cidr.to_string());
        templates::render("kubeadm-init.yaml.tera", &ctx)
    }

    /// `kubeadm-join.yaml` for a worker or an extra control plane joining `endpoint`.
    pub fn kubeadm_join_config(
        &self,
        req: &InstanceRequest,
        endpoint: &str,
    ) -> Result<String, BootstrapError> {
        let mut ctx = tera::Context::new();
        self.node_registration(req, &mut ctx)?;
        ctx.insert("token", &self.secrets.token.token);
        ctx.insert("api_server_endpoint", endpoint);
        ctx.insert("ca_cert_hash", &self.discovery_hash);
        ctx.insert("control_plane", &(req.role == Role::ControlPlane));
        ctx.insert("certificate_key", &self.secrets.certificate_key);
        ctx.insert("api_port", &self.config.cluster.spec.control_plane.port);
        templates::render("kubeadm-join.yaml.tera", &ctx)
    }

    /// containerd's `config.toml` for a node (`nvidia` runtime as default on NVIDIA GPU nodes).
    pub fn containerd_config(&self, req: &InstanceRequest) -> Result<String, BootstrapError> {
        let nvidia = Self::is_nvidia(req);
        let mut ctx = tera::Context::new();
        ctx.insert("node_name", &req.name);
        ctx.insert(
            "sandbox_image",
            &assets::image_ref(
                &format!("registry.k8s.io/pause:{}", self.release.pause),
                &self.config.cluster.spec.assets,
            ),
        );
        ctx.insert("nvidia", &nvidia);
        ctx.insert("nvidia_runtime", NVIDIA_RUNTIME);
        ctx.insert("default_runtime", if nvidia { "nvidia" } else { "runc" });
        ctx.insert("certs_d", assets::CERTS_D);
        templates::render("containerd-config.toml.tera", &ctx)
    }

    fn binaries(&self, req: &InstanceRequest) -> Vec<BinaryCtx> {
        let bin = &self.options.bin_dir;
        let a = &self.config.cluster.spec.assets;
        self.release
            .binaries
            .iter()
            .map(|b| {
                let upstream = b.url_for(req.arch);
                let file = file_name_of(&upstream).to_string();
                let (dest, extract_to, members) = match (b.archive, b.name) {
                    (true, "crictl") => (
                        format!("/var/cache/kprov/{file}"),
                        bin.clone(),
                        "crictl".to_string(),
                    ),
                    (true, "cni-plugins") => (
                        format!("/var/cache/kprov/{file}"),
                        "/opt/cni/bin".to_string(),
                        String::new(),
                    ),
                    (true, other) => (
                        format!("/var/cache/kprov/{file}"),
                        format!("/opt/kprov/{other}"),
                        String::new(),
                    ),
                    (false, name) => (format!("{bin}/{name}"), String::new(), String::new()),
                };
                BinaryCtx {
                    url: assets::file_url(&upstream, a),
                    dest,
                    sha256: self
                        .options
                        .sha256_overrides
                        .get(&file)
                        .cloned()
                        .unwrap_or_else(|| b.sha256_for(req.arch).to_string()),
                    archive: b.archive,
                    extract_to,
                    members,
                }
            })
            .collect()
    }

    /// `bootstrap.sh` for a node.
    pub fn bootstrap_script(
        &self,
        req: &InstanceRequest,
        action: &NodeAction,
    ) -> Result<String, BootstrapError> {
        let mut ctx = self.common_ctx(req, action);
        ctx.insert("binaries", &self.binaries(req));
        ctx.insert("nvidia", &Self::is_nvidia(req));
        ctx.insert("nvidia_runtime", NVIDIA_RUNTIME);
        ctx.insert(
            "nfs",
            &self.config.cluster.spec.addons.nfs_provisioner.is_some(),
        );
        ctx.insert("action", action.env_action());
        ctx.insert("init", &action.carries_ca_keys());
        ctx.insert(
            "init_or_join",
            &matches!(action, NodeAction::InitOrJoin { .. }),
        );
        ctx.insert("join", &!matches!(action, NodeAction::Init));
        Ok(templates::strip_shell_comments(&templates::render(
            "bootstrap.sh.tera",
            &ctx,
        )?))
    }

    fn common_ctx(&self, req: &InstanceRequest, action: &NodeAction) -> tera::Context {
        let mut ctx = tera::Context::new();
        ctx.insert("node_name", &req.name);
        ctx.insert("cluster_name", self.config.name());
        ctx.insert("instance_group", &req.instance_group);
        ctx.insert("arch", req.arch.as_str());
        let role_desc = match action {
            NodeAction::Init | NodeAction::InitOrJoin { .. } => "first control plane",
            NodeAction::JoinControlPlane { .. } => "control plane",
            NodeAction::JoinWorker { .. } if Self::is_nvidia(req) => "GPU worker",
            NodeAction::JoinWorker { .. } => "worker",
        };
        ctx.insert("role_desc", role_desc);
        ctx
    }

    /// `/etc/kprov/bootstrap.env`: the script's settings (no secrets).
    pub fn bootstrap_env(&self, req: &InstanceRequest, action: &NodeAction) -> String {
        let q = yaml::shell_quote;
        let upload =
            self.control_plane_count() > 1 || matches!(action, NodeAction::InitOrJoin { .. });
        let mut vars: Vec<(&str, String)> = vec![
            ("KPROV_CLUSTER", self.config.name().to_string()),
            ("KPROV_NODE_NAME", req.name.clone()),
            ("KPROV_INSTANCE_GROUP", req.instance_group.clone()),
            ("KPROV_ROLE", req.role.as_str().to_string()),
            ("KPROV_ARCH", req.arch.as_str().to_string()),
            ("KPROV_ACTION", action.env_action().to_string()),
            (
                "KPROV_API_ENDPOINT",
                action.endpoint().unwrap_or_default().to_string(),
            ),
            (
                "KPROV_UPLOAD_CERTS",
                if upload && action.carries_ca_keys() {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
            ("KPROV_BIN_DIR", self.options.bin_dir.clone()),
            ("KPROV_KUBEADM", self.options.kubeadm()),
            ("KPROV_KUBECTL", format!("{}/kubectl", self.options.bin_dir)),
            (
                "KPROV_INSTALL_BINARIES",
                if self.options.install_binaries {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
            (
                "KPROV_JOIN_TIMEOUT",
                self.options.join_timeout_secs.to_string(),
            ),
            ("KPROV_LOG", LOG_PATH.to_string()),
        ];
        if let Some(url) = &self.options.callback_url {
            vars.push(("KPROV_CALLBACK_URL", url.clone()));
        }
        let mut s = String::from(
            "# kprov bootstrap settings (sourced by bootstrap.sh); no secrets here.\n",
        );
        for (k, v) in vars {
            s.push_str(&format!("{k}={}\n", q(&v)));
        }
        s
    }

    /// The manifests the first control plane applies (CNI first, then add-ons).
    pub fn manifests(&self) -> Result<Vec<Manifest>, BootstrapError> {
        manifests::render_all(&self.config)
    }

    /// `NODE key=value` lines for labels the kubelet may not set itself, applied by the first
    /// control plane as the nodes appear.
    fn restricted_labels(&self) -> String {
        let mut s = String::new();
        for g in &self.config.groups {
            let restricted: Vec<_> = g
                .spec
                .labels
                .iter()
                .filter(|(k, _)| !kubelet_may_set_label(k))
                .collect();
            for i in 0..g.spec.count.max(0) as u32 {
                for (k, v) in &restricted {
                    s.push_str(&format!(
                        "{} {k}={v}\n",
                        crate::plan::instance_name(self.config.name(), g.name(), i)
                    ));
                }
            }
        }
        s
    }

    /// Every file the node's user-data writes, in order.
    pub fn files(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<Vec<NodeFile>, BootstrapError> {
        self.check_token()?;
        let action = self.action(req, ctx)?;
        let spec = &self.config.cluster.spec;
        let mut files = vec![
            NodeFile::text("/etc/modules-load.d/kprov-k8s.conf", "0644", "# kprov: modules Kubernetes networking needs\noverlay\nbr_netfilter\n"),
            NodeFile::text(
                "/etc/sysctl.d/99-kprov-k8s.conf",
                "0644",
                "# kprov: bridged traffic through iptables, and forwarding\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n",
            ),
            NodeFile::text("/etc/containerd/config.toml", "0644", self.containerd_config(req)?),
        ];
        for (host, toml) in assets::certs_d(&spec.assets) {
            files.push(NodeFile::text(
                format!("{}/{host}/hosts.toml", assets::CERTS_D),
                "0644",
                toml,
            ));
        }
        if let Some(ca) = &spec.assets.ca_bundle {
            files.push(NodeFile::text(assets::MIRROR_CA_PATH, "0644", ca.clone()));
        }
        files.push(NodeFile::text(
            "/etc/crictl.yaml",
            "0644",
            format!("runtime-endpoint: {CRI_SOCKET}\nimage-endpoint: {CRI_SOCKET}\ntimeout: 10\n"),
        ));
        let mut uctx = tera::Context::new();
        uctx.insert("bin_dir", &self.options.bin_dir);
        files.push(NodeFile::text(
            "/etc/systemd/system/kubelet.service",
            "0644",
            templates::render("kubelet.service.tera", &uctx)?,
        ));
        files.push(NodeFile::text(
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            "0644",
            templates::render("kubelet-10-kubeadm.conf.tera", &uctx)?,
        ));
        files.push(NodeFile::text(
            ENV_PATH,
            "0644",
            self.bootstrap_env(req, &action),
        ));
        match &action {
            NodeAction::Init | NodeAction::InitOrJoin { .. } => {
                files.push(NodeFile::text(
                    "/etc/kprov/kubeadm-init.yaml",
                    "0600",
                    self.kubeadm_init_config(req, &action)?,
                ));
                if let NodeAction::InitOrJoin { endpoint } = &action {
                    files.push(NodeFile::text(
                        "/etc/kprov/kubeadm-join.yaml",
                        "0600",
                        self.kubeadm_join_config(req, endpoint)?,
                    ));
                }
                let s = &self.secrets;
                let pki = "/etc/kubernetes/pki";
                for (name, pair) in [
                    ("ca", &s.ca),
                    ("front-proxy-ca", &s.front_proxy_ca),
                    ("etcd/ca", &s.etcd_ca),
                ] {
                    files.push(NodeFile::text(
                        format!("{pki}/{name}.crt"),
                        "0644",
                        pair.cert_pem.clone(),
                    ));
                    files.push(NodeFile::text(
                        format!("{pki}/{name}.key"),
                        "0600",
                        pair.key_pem.clone(),
                    ));
                }
                files.push(NodeFile::text(
                    format!("{pki}/sa.key"),
                    "0600",
                    s.service_account.key_pem.clone(),
                ));
                files.push(NodeFile::text(
                    format!("{pki}/sa.pub"),
                    "0644",
                    s.service_account.cert_pem.clone(),
                ));
                for m in self.manifests()? {
                    let dir = if m.deferred {
                        "/etc/kprov/manifests-deferred"
                    } else {
                        "/etc/kprov/manifests"
                    };
                    files.push(NodeFile {
                        path: format!("{dir}/{}", m.file_name),
                        permissions: "0644",
                        content: m.content,
                        compress: true,
                    });
                }
                let labels = self.restricted_labels();
                if !labels.is_empty() {
                    files.push(NodeFile::text("/etc/kprov/node-labels", "0644", labels));
                }
            }
            NodeAction::JoinControlPlane { endpoint } | NodeAction::JoinWorker { endpoint } => {
                files.push(NodeFile::text(
                    "/etc/kprov/kubeadm-join.yaml",
                    "0600",
                    self.kubeadm_join_config(req, endpoint)?,
                ));
            }
        }
        files.push(NodeFile::text(
            SCRIPT_PATH,
            "0700",
            self.bootstrap_script(req, &action)?,
        ));
        Ok(files)
    }

    /// The node's `#cloud-config`, uncompressed.
    pub fn render_cloud_config(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<String, BootstrapError> {
        let action = self.action(req, ctx)?;
        let spec = &self.config.cluster.spec;
        let mut files = Vec::new();
        for f in self.files(req, ctx)? {
            let (encoding, content) = if f.compress {
                use base64::Engine;
                (
                    Some("gz+b64"),
                    format!(
                        "content: {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(gzip(f.content.as_bytes())?)
                    ),
                )
            } else {
                (None, yaml::literal_block("content", &f.content, 4))
            };
            files.push(FileCtx {
                path: f.path,
                permissions: f.permissions,
                encoding,
                content,
            });
        }
        let mut tctx = self.common_ctx(req, &action);
        tctx.insert(
            "ssh_keys",
            &spec
                .ssh_public_key
                .iter()
                .map(|k| k.trim().to_string())
                .collect::<Vec<_>>(),
        );
        tctx.insert(
            "ca_bundle",
            &spec
                .assets
                .ca_bundle
                .as_deref()
                .map(|c| yaml::indent_lines(c, 6))
                .unwrap_or_default(),
        );
        tctx.insert("files", &files);
        tctx.insert("script_path", SCRIPT_PATH);
        templates::render("cloud-config.yaml.tera", &tctx)
    }

    /// The node's user-data as handed to the provider: the cloud-config, gzip-compressed when it
    /// exceeds the provider's limit ([`user_data_limit`]); fails when even that is too large.
    pub fn render_user_data(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<Vec<u8>, BootstrapError> {
        let text = self.render_cloud_config(req, ctx)?;
        fit_user_data(
            &text,
            self.limit(),
            self.config.cluster.spec.provider.name(),
            req,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_port() {
        assert_eq!(with_port("lb.example", 6443), "lb.example:6443");
        assert_eq!(with_port("lb.example:443", 6443), "lb.example:443");
        assert_eq!(endpoint_host("10.0.0.1:6443"), "10.0.0.1");
    }

    #[test]
    fn kubelet_label_rules() {
        assert!(kubelet_may_set_label("gpu"));
        assert!(kubelet_may_set_label("example.com/team"));
        assert!(kubelet_may_set_label("node.kubernetes.io/instance-type"));
        assert!(kubelet_may_set_label("foo.node.kubernetes.io/x"));
        assert!(!kubelet_may_set_label("node-role.kubernetes.io/gpu"));
        assert!(!kubelet_may_set_label("x.k8s.io/y"));
    }

    #[test]
    fn taints_parse() {
        assert_eq!(
            parse_taint("g", "a=b:NoSchedule").unwrap(),
            Taint {
                key: "a".into(),
                value: Some("b".into()),
                effect: "NoSchedule".into()
            }
        );
        assert_eq!(parse_taint("g", "a:NoExecute").unwrap().value, None);
        assert!(parse_taint("g", "a=b").is_err());
        assert!(parse_taint("g", "a:Sometimes").is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(user_data_limit("aws"), Some(16384));
        assert!(user_data_limit("zstack").is_some());
        assert_eq!(user_data_limit("libvirt"), None);
    }
}

//! The [`Renderer`]: a cluster's spec and secrets in, each node's `#cloud-config` out. It decides
//! what the node does ([`NodeAction`]) and assembles the cloud-config from the node's files.

use kprov_providers::{InstanceRequest, Role};
use serde::Serialize;

use super::user_data::gzip;
use super::{
    fit_user_data, templates, yaml, BootstrapError, BootstrapOptions, EtcdRestore, NodeAction,
    SCRIPT_PATH,
};
use crate::apply::{RenderContext, UserData};
use crate::repo::Repo;
use crate::secrets::ClusterSecrets;
use crate::spec::versions::{self, Release};
use crate::spec::ClusterConfig;

/// A file as `cloud-config.yaml.tera` writes it: `content` is already YAML (a literal block, or
/// base64 of the gzip when `encoding` says so), so the template embeds it verbatim.
#[derive(Serialize)]
struct FileCtx {
    path: String,
    permissions: &'static str,
    encoding: Option<&'static str>,
    content: String,
}

/// Renders user-data for a cluster's nodes. Implements [`UserData`] for the executor. Cloned
/// per step of a rolling update (the secrets it holds stay in memory, never printed).
#[derive(Clone)]
pub struct Renderer {
    pub(super) config: ClusterConfig,
    pub(super) secrets: ClusterSecrets,
    pub(super) discovery_hash: String,
    pub(super) options: BootstrapOptions,
    pub(super) release: &'static Release,
    /// The provider's user-data limit: known from the spec's provider, and set from the
    /// connected cloud by the engine ([`Renderer::with_user_data_limit`]).
    pub(super) user_data_limit: Option<usize>,
    /// The etcd snapshot the first control plane restores before `kubeadm init` (a rolling
    /// update of the only control plane with `--allow-control-plane-downtime`).
    pub(super) restore: Option<EtcdRestore>,
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
pub async fn renderer(repo: &Repo, config: &ClusterConfig) -> anyhow::Result<Renderer> {
    let secrets = crate::secrets::load(repo, config.name()).await?;
    let discovery_hash = crate::pki::discovery_hash(&secrets.ca.cert_pem)?;
    Ok(Renderer::new(
        config.clone(),
        secrets,
        discovery_hash,
        BootstrapOptions::from_env(),
    )?)
}

impl Renderer {
    /// The same renderer joining nodes with `token`: an apply refreshes the stored token after
    /// the plan's size check rendered with the old one (same length, so the check holds).
    pub fn with_token(mut self, token: crate::pki::BootstrapToken) -> Renderer {
        self.secrets.token = token;
        self
    }

    /// For the plan's checks when the stored token has expired: the apply mints a new one (of
    /// the same length) before anything is created and installs it in a running cluster, so
    /// the checks render with a token of that shape instead of refusing the old one.
    pub fn with_unexpired_token(self) -> Result<Renderer, crate::pki::PkiError> {
        if self.secrets.token.expires > chrono::Utc::now() {
            return Ok(self);
        }
        let fresh = crate::pki::new_bootstrap_token(std::time::Duration::from_secs(3600))?;
        Ok(self.with_token(fresh))
    }
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

pub(super) fn endpoint_host(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint)
        .trim_start_matches('[')
        .trim_end_matches(']')
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
            user_data_limit: crate::cloud::user_data_limit(&config.cluster.spec.provider),
            restore: None,
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

    /// The secrets (for [`redact`](super::redact)).
    pub fn secrets(&self) -> &ClusterSecrets {
        &self.secrets
    }

    /// The provider's user-data limit ([`kprov_providers::Cloud::user_data_limit`]).
    pub fn limit(&self) -> Option<usize> {
        self.user_data_limit
    }

    /// The same renderer fitting user-data into `limit` (the connected cloud's figure).
    pub fn with_user_data_limit(mut self, limit: Option<usize>) -> Renderer {
        self.user_data_limit = limit;
        self
    }

    /// The first control plane restores `restore` into etcd before `kubeadm init`.
    pub fn with_restore(mut self, restore: Option<EtcdRestore>) -> Renderer {
        self.restore = restore;
        self
    }

    pub(super) fn control_plane_count(&self) -> i64 {
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
        // A load balancer in front of every control plane (the spec's, or the one the provider
        // makes, which is then the endpoint the executor hands over) is a stable endpoint: the
        // designated first control plane initialises through it, like the spec's.
        let spec_ep = self
            .spec_endpoint()
            .or_else(|| self.config.api_load_balancer().and(ctx_ep.clone()));
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

    pub(super) fn is_nvidia(req: &InstanceRequest) -> bool {
        req.gpu.as_ref().is_some_and(|g| {
            g.vendor
                .as_deref()
                .is_none_or(|v| v.to_ascii_lowercase().contains("nvidia"))
        })
    }

    pub(super) fn check_token(&self) -> Result<(), BootstrapError> {
        if self.secrets.token.expires <= chrono::Utc::now() {
            return Err(BootstrapError::TokenExpired {
                cluster: self.config.name().into(),
                expires: self.secrets.token.expires.to_rfc3339(),
            });
        }
        Ok(())
    }

    pub(super) fn common_ctx(&self, req: &InstanceRequest, action: &NodeAction) -> tera::Context {
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

    /// The node's `#cloud-config`, uncompressed (large files embedded gzip + base64).
    pub fn render_cloud_config(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<String, BootstrapError> {
        self.cloud_config(req, ctx, true)
    }

    /// The cloud-config as kprov gzips it when it is over the provider's limit: with its files
    /// as text or embedded gzip + base64, whichever gzips smaller (text usually does: base64
    /// of gzip does not compress; a very large manifest such as Calico's packs better alone).
    pub fn render_cloud_config_for_gzip(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<String, BootstrapError> {
        let embedded = self.cloud_config(req, ctx, true)?;
        let plain = self.cloud_config(req, ctx, false)?;
        let smaller = gzip(plain.as_bytes())?.len() < gzip(embedded.as_bytes())?.len();
        Ok(if smaller { plain } else { embedded })
    }

    /// The cloud-config with `embed_compressed` deciding whether large files go in as gzip +
    /// base64 (small when the user-data is sent as is) or as text (smaller once the whole
    /// user-data is gzipped: base64 of gzip does not compress, text does).
    fn cloud_config(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
        embed_compressed: bool,
    ) -> Result<String, BootstrapError> {
        let action = self.action(req, ctx)?;
        let spec = &self.config.cluster.spec;
        let mut files = Vec::new();
        for f in self.files(req, ctx)? {
            let (encoding, content) = if f.compress && embed_compressed {
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
        tctx.insert(
            "package_repos",
            &package_repos(spec.assets.package_repository.as_ref()),
        );
        tctx.insert("script_path", SCRIPT_PATH);
        templates::render("cloud-config.yaml.tera", &tctx)
    }

    /// The node's user-data as handed to the provider: the cloud-config, gzip-compressed when it
    /// exceeds the provider's limit ([`Renderer::limit`]); fails when even that is too large.
    pub fn render_user_data(
        &self,
        req: &InstanceRequest,
        ctx: &RenderContext,
    ) -> Result<Vec<u8>, BootstrapError> {
        let text = self.render_cloud_config(req, ctx)?;
        let limit = self.limit();
        // Over the limit the whole user-data is gzipped: render the files as text for that,
        // which gzip packs better than their embedded gzip + base64 (AWS's 16 KiB is tight for
        // a first control plane).
        let text = if limit.is_some_and(|l| text.len() > l) {
            self.render_cloud_config_for_gzip(req, ctx)?
        } else {
            text
        };
        fit_user_data(&text, limit, self.config.cluster.spec.provider.name(), req)
    }
}

/// cloud-init's `apt:` and `yum_repos:` keys for `spec.assets.packageRepository` (top-level
/// YAML, empty without one), so the `packages` phase installs from the reachable mirror.
fn package_repos(repo: Option<&crate::spec::PackageRepository>) -> String {
    use serde_yaml::{Mapping, Value};
    let Some(repo) = repo else {
        return String::new();
    };
    let mut top = Mapping::new();
    if let Some(a) = &repo.apt {
        let opts = if a.key.is_some() {
            "[signed-by=$KEY_FILE]"
        } else {
            "[trusted=yes]"
        };
        let mut source = Mapping::new();
        source.insert(
            "source".into(),
            format!(
                "deb {opts} {} {} {}",
                a.url,
                a.suite,
                a.components.join(" ")
            )
            .into(),
        );
        if let Some(k) = &a.key {
            source.insert("key".into(), k.clone().into());
        }
        let mut sources = Mapping::new();
        sources.insert("kprov-packages.list".into(), Value::Mapping(source));
        let mut apt = Mapping::new();
        apt.insert(
            "preserve_sources_list".into(),
            a.keep_default_sources.into(),
        );
        if !a.keep_default_sources {
            // Without a template cloud-init writes its default sources.list, which names the
            // distribution's public mirrors: apt would try them (DNS, timeouts) on a restricted
            // network. The mirror is the only source.
            apt.insert(
                "sources_list".into(),
                "# kprov: the image's sources are out of reach; spec.assets.packageRepository \
                 is in sources.list.d/kprov-packages.list\n"
                    .into(),
            );
        }
        apt.insert("sources".into(), Value::Mapping(sources));
        top.insert("apt".into(), Value::Mapping(apt));
    }
    if let Some(y) = &repo.yum {
        let mut r = Mapping::new();
        r.insert("name".into(), "kprov package mirror".into());
        r.insert("baseurl".into(), y.baseurl.clone().into());
        r.insert("enabled".into(), true.into());
        r.insert("gpgcheck".into(), y.gpgkey.is_some().into());
        if let Some(k) = &y.gpgkey {
            r.insert("gpgkey".into(), k.clone().into());
        }
        let mut repos = Mapping::new();
        repos.insert("kprov-packages".into(), Value::Mapping(r));
        top.insert("yum_repos".into(), Value::Mapping(repos));
    }
    serde_yaml::to_string(&Value::Mapping(top)).expect("a YAML mapping serialises")
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
}

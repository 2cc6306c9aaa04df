//! `kprov get userdata [CLUSTER] --instance-group IG [--index N] [--show-secrets]`: print the
//! cloud-config a node gets (decompressed), with private keys, the bootstrap token and the
//! certificate key replaced by `<redacted>` unless `--show-secrets`.

use anyhow::Context;
use clap::Args;
use kprov_providers::Role;

use super::{current_cluster, Cli, ExitError};
use crate::apply::RenderContext;
use crate::bootstrap::{self, BootstrapOptions, Renderer};
use crate::repo::Repo;
use crate::{plan, spec};

/// Arguments of `get userdata`.
#[derive(Debug, Args)]
pub struct UserdataArgs {
    /// Cluster (default: the current cluster).
    pub cluster: Option<String>,
    /// Instance group of the node.
    #[arg(long, short = 'g', value_name = "IG")]
    pub instance_group: String,
    /// Index of the node within its instance group.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub index: u32,
    /// Print private keys, the bootstrap token and the certificate key instead of `<redacted>`.
    #[arg(long)]
    pub show_secrets: bool,
    /// Control-plane endpoint (`host:port`) to render joins with (default: spec.controlPlane.endpoint,
    /// else a placeholder; the first control plane of a cluster without one renders `kubeadm init`).
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
}

/// Run `get userdata`.
pub async fn run(cli: &Cli, a: &UserdataArgs, repo: &Repo) -> anyhow::Result<()> {
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), repo).await?;
    let stored = repo.require(&name).await?;
    let mut loaded = repo.as_loaded(&stored);
    spec::validate(&mut loaded)?;
    let cfg = loaded.config;
    let desired = plan::desired(&cfg);
    let Some(req) = desired
        .instances
        .iter()
        .find(|r| r.instance_group == a.instance_group && r.index == a.index)
        .cloned()
    else {
        let groups: Vec<String> = cfg
            .groups
            .iter()
            .map(|g| format!("{} (indexes 0..{})", g.name(), g.spec.count.max(0)))
            .collect();
        return Err(ExitError::usage(format!(
            "-g {} --index {}: cluster {name} has no such node; instance groups: {}; fix: use -g with one of \
             those groups and an --index in its range",
            a.instance_group,
            a.index,
            if groups.is_empty() {
                "none".into()
            } else {
                groups.join(", ")
            }
        )));
    };
    let secrets = crate::secrets::load(repo, &name).await?;
    let hash = crate::pki::discovery_hash(&secrets.ca.cert_pem)
        .context("computing the discovery hash of the cluster CA")?;
    super::check_asset_sha256sums()?;
    let renderer = Renderer::new(cfg.clone(), secrets, hash, BootstrapOptions::from_env())?;

    let cp = &cfg.cluster.spec.control_plane;
    let first_cp_group = cfg
        .groups
        .iter()
        .filter(|g| g.spec.role == Role::ControlPlane && g.spec.count > 0)
        .map(|g| g.name())
        .min();
    let is_first = req.role == Role::ControlPlane
        && req.index == 0
        && first_cp_group == Some(req.instance_group.as_str());
    let endpoint = match (&a.endpoint, &cp.endpoint) {
        (Some(e), _) => e.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) if is_first => String::new(),
        (None, None) => {
            let placeholder = format!("FIRST-CONTROL-PLANE-ADDRESS:{}", cp.port);
            eprintln!("note: the cluster has no spec.controlPlane.endpoint; joins are shown with {placeholder} (pass --endpoint to set it)");
            placeholder
        }
    };
    let ctx = RenderContext {
        control_plane_endpoint: endpoint,
    };
    let text = renderer.render_cloud_config(&req, &ctx)?;
    let provider = cfg.cluster.spec.provider.name();
    match bootstrap::fit_user_data(&text, renderer.limit(), provider, &req) {
        Ok(bytes) => {
            let how = if bytes.len() < text.len() {
                format!("sent gzip-compressed, {} bytes", bytes.len())
            } else {
                "sent as is".to_string()
            };
            let limit = renderer
                .limit()
                .map(|l| format!("{provider} limit {l} bytes"))
                .unwrap_or_else(|| format!("no {provider} limit"));
            eprintln!(
                "# {}: {} bytes of cloud-config ({how}; {limit})",
                req.name,
                text.len()
            );
        }
        Err(e) => eprintln!("warning: {e}"),
    }
    let shown = if a.show_secrets {
        text
    } else {
        bootstrap::redact(&text, renderer.secrets())
    };
    print!("{shown}");
    Ok(())
}

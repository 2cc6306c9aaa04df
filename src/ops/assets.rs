//! Checking a cluster's assets: is every image and file of its catalogue at its mirror location
//! (`kprov check assets`, and `update --yes` before it creates a VM)? Only manifests and HEAD
//! requests, in parallel; nothing is downloaded.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::error::ExitError;
use crate::mirror::copy::{parse_manifest, Parsed};
use crate::mirror::registry::{ClientOptions, DockerConfig, RegistryClient};
use crate::mirror::{Catalogue, ImageRef};
use crate::report::Progress;
use crate::spec::{Arch, Assets, ClusterConfig};

/// How to reach the mirrors beyond what the spec says.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Registry hosts spoken to over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA bundles to trust (`--ca-bundle`).
    pub ca_bundles: Vec<PathBuf>,
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Check only assets the spec maps to a mirror (upstream locations are not looked at:
    /// the check before a create must not reach the internet).
    pub mirrored_only: bool,
}

/// One checked asset.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// `image` or `file`.
    pub kind: &'static str,
    /// Mirror location.
    pub location: String,
    /// `ok` or what is wrong.
    pub status: String,
}

impl CheckRow {
    /// Whether the asset is at its mirror location.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    fn unreachable(&self) -> bool {
        self.status.contains("cannot reach")
    }
}

/// The outcome of a check: one row per catalogue entry, images first.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct AssetCheck {
    /// Every asset with its status.
    pub rows: Vec<CheckRow>,
}

/// Client options for talking to a cluster's mirrors: its CA and its insecure flag from the spec,
/// plus hosts and CA files the user named.
pub fn client_options_for(
    assets: &Assets,
    mirror_hosts: impl IntoIterator<Item = String>,
    insecure: &[String],
    ca_files: &[PathBuf],
) -> anyhow::Result<ClientOptions> {
    let mut o = ClientOptions {
        docker_config: DockerConfig::load_default()?,
        ..Default::default()
    };
    o.insecure.extend(insecure.iter().cloned());
    if assets.insecure {
        o.insecure.extend(mirror_hosts);
    }
    if let Some(ca) = &assets.ca_bundle {
        o.ca_pems.push(ca.as_bytes().to_vec());
    }
    for f in ca_files {
        o.ca_pems.push(
            std::fs::read(f)
                .map_err(|e| ExitError::usage(format!("--ca-bundle {}: {e}", f.display())))?,
        );
    }
    Ok(o)
}

/// Check every image and file of `config`'s catalogue at its mirror location.
pub async fn check(
    config: &ClusterConfig,
    opts: &CheckOptions,
    progress: &Progress,
) -> anyhow::Result<AssetCheck> {
    let cat =
        Catalogue::for_cluster_as_rendered(config).map_err(|e| ExitError::usage(e.to_string()))?;
    let mut cat = cat;
    if opts.mirrored_only {
        cat.images.retain(|i| i.mirror != i.upstream);
        cat.files.retain(|f| f.mirror_url != f.upstream_url);
    }
    let hosts: Vec<String> = cat
        .images
        .iter()
        .filter_map(|i| ImageRef::parse(&i.mirror).ok().map(|r| r.registry))
        .collect();
    let client = Arc::new(RegistryClient::new(client_options_for(
        &config.cluster.spec.assets,
        hosts,
        &opts.insecure_registries,
        &opts.ca_bundles,
    )?)?);
    let width = opts.concurrency.max(1);
    let phase = progress.phase(
        "Checking assets at their mirrors",
        (cat.images.len() + cat.files.len()) as u64,
    );
    let mut rows: Vec<CheckRow> = futures::stream::iter(cat.images.iter())
        .map(|i| {
            let (client, phase) = (client.clone(), phase.clone());
            async move {
                let status = check_image(&client, &i.mirror, &i.arches).await;
                phase.inc(1);
                CheckRow {
                    kind: "image",
                    location: i.mirror.clone(),
                    status,
                }
            }
        })
        .buffered(width)
        .collect()
        .await;
    let files: Vec<CheckRow> = futures::stream::iter(cat.files.iter())
        .map(|f| {
            let (client, phase) = (client.clone(), phase.clone());
            async move {
                let status = check_file(client.http(), &f.mirror_url).await;
                phase.inc(1);
                CheckRow {
                    kind: "file",
                    location: f.mirror_url.clone(),
                    status,
                }
            }
        })
        .buffered(width)
        .collect()
        .await;
    rows.extend(files);
    let checked = AssetCheck { rows };
    phase.finish(format!(
        "{} of {} assets in place",
        checked.rows.len() - checked.bad(),
        checked.rows.len()
    ));
    Ok(checked)
}

/// The check `update --yes` runs before it creates a VM: every mirrored asset of `config` must be
/// in place, else exit 2 listing each missing one and the command that mirrors them. Nothing
/// is checked when the spec names no mirror.
pub async fn precheck(
    config: &ClusterConfig,
    opts: &CheckOptions,
    progress: &Progress,
) -> anyhow::Result<()> {
    let opts = CheckOptions {
        mirrored_only: true,
        ..opts.clone()
    };
    let checked = check(config, &opts, progress).await?;
    let name = config.name();
    let Some(why) = checked.failure(name) else {
        return Ok(());
    };
    let list: Vec<String> = checked
        .rows
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| format!("  {} {}: {}", r.kind, r.location, r.status))
        .collect();
    Err(ExitError::usage(format!(
        "{why}\n{}\nnothing was changed; to create the VMs anyway (the nodes will fail to pull what is missing), pass --skip-asset-check",
        list.join("\n")
    )))
}

impl AssetCheck {
    /// The assets that are not at their mirror locations.
    pub fn bad(&self) -> usize {
        self.rows.iter().filter(|r| !r.is_ok()).count()
    }

    /// `None` when every asset is in place, else the error for cluster `name`: which mirror did
    /// not answer (fix the spec or start it), or how many assets are missing (mirror them).
    pub fn failure(&self, name: &str) -> Option<String> {
        let bad = self.bad();
        if bad == 0 {
            return None;
        }
        let total = self.rows.len();
        // A mirror that does not answer at all needs another fix than missing assets.
        let down: BTreeSet<String> = self
            .rows
            .iter()
            .filter(|r| r.unreachable())
            .map(|r| {
                let rest = r
                    .location
                    .split_once("://")
                    .map_or(&*r.location, |(_, x)| x);
                rest.split('/').next().unwrap_or(rest).to_string()
            })
            .collect();
        let missing = bad.saturating_sub(self.rows.iter().filter(|r| r.unreachable()).count());
        if down.is_empty() {
            return Some(format!(
                "{bad} of {total} assets of cluster {name} are not reachable at their mirror locations; mirror them with `kprov mirror {name}` (add --files-to for files)"
            ));
        }
        let also = if missing > 0 {
            format!(
                "; {missing} more are not at their mirror locations: mirror them with `kprov mirror {name}` (add --files-to for files)"
            )
        } else {
            String::new()
        };
        Some(format!(
            "{bad} of {total} assets of cluster {name} are not reachable: the mirror {} did not answer; \
             fix: start it or correct spec.assets.containerRegistry / spec.assets.fileRepository \
             (`kprov create -f CLUSTER.yaml --replace`), then mirror with `kprov mirror {name}`{also}",
            down.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

async fn check_image(client: &RegistryClient, mirror: &str, arches: &[Arch]) -> String {
    let r = match ImageRef::parse(mirror) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let m = match client.get_manifest(&r).await {
        Ok(m) => m,
        Err(e) => return e.to_string(),
    };
    match parse_manifest(mirror, &m) {
        Ok(Parsed::Index(list)) => {
            let have: BTreeSet<&str> = list
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os == "linux")
                .map(|p| p.architecture.as_str())
                .collect();
            let missing: Vec<&str> = arches
                .iter()
                .map(|a| a.as_str())
                .filter(|a| !have.contains(a))
                .collect();
            if missing.is_empty() {
                "ok".into()
            } else {
                format!(
                    "index lacks linux/{} (mirrored with --platform?); re-run `kprov mirror` without --platform",
                    missing.join(", linux/")
                )
            }
        }
        Ok(Parsed::Image { .. }) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

async fn check_file(http: &reqwest::Client, url: &str) -> String {
    match http.head(url).send().await {
        Ok(r) if r.status().is_success() => "ok".into(),
        Ok(r) => format!("HTTP {} for HEAD {url}", r.status().as_u16()),
        Err(e) => format!("cannot reach {url}: {e}"),
    }
}

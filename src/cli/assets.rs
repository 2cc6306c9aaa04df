//! `kprov get assets NAME` (the catalogue) and `kprov check assets NAME` (is every asset at its
//! mirror location, before a create can fail half-way?).

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde::Serialize;

use super::{current_cluster, open_store, Cli, ExitError, Output};
use crate::mirror::copy::{parse_manifest, Parsed};
use crate::mirror::registry::{ClientOptions, DockerConfig, RegistryClient};
use crate::mirror::{Catalogue, ImageRef};
use crate::repo::Repo;
use crate::spec::Assets;

/// Arguments of `get assets`.
#[derive(Debug, Args)]
pub struct GetAssetsArgs {
    /// Cluster (default: the current cluster).
    pub cluster: Option<String>,
}

/// Run `get assets`.
pub async fn run_get(
    cli: &Cli,
    a: &GetAssetsArgs,
    output: Output,
    repo: &Repo,
) -> anyhow::Result<()> {
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), repo).await?;
    let s = repo.require(&name).await?;
    let cat = Catalogue::for_cluster_as_rendered(&s.config)
        .map_err(|e| ExitError::usage(e.to_string()))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&cat)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&cat)?),
        Output::Table => print!(
            "{}",
            super::output::table(&Catalogue::TABLE_HEADER, &cat.table_rows())
        ),
    }
    Ok(())
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check.
    #[command(subcommand)]
    pub what: CheckWhat,
}

/// Things `check` checks.
#[derive(Debug, Subcommand)]
pub enum CheckWhat {
    /// Every image and file of the catalogue is reachable at its mirror location.
    Assets(CheckAssetsArgs),
}

/// Arguments of `check assets`.
#[derive(Debug, Args)]
pub struct CheckAssetsArgs {
    /// Cluster (default: the current cluster).
    pub cluster: Option<String>,
    /// Registry host reached over plain HTTP (repeatable; `assets.insecure` implies the cluster's mirrors).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Extra PEM CA bundle to trust (the cluster's `assets.caBundle` is always trusted).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Vec<std::path::PathBuf>,
    /// Checks in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Client options for talking to a cluster's mirrors: its CA, its insecure flag, plus flags.
pub fn client_options_for(
    assets: &Assets,
    mirror_hosts: impl IntoIterator<Item = String>,
    insecure: &[String],
    ca_files: &[std::path::PathBuf],
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

async fn check_image(
    client: &RegistryClient,
    mirror: &str,
    arches: &[crate::spec::Arch],
) -> String {
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

/// Run `check`.
pub async fn run_check(cli: &Cli, a: &CheckArgs) -> anyhow::Result<()> {
    let CheckWhat::Assets(a) = &a.what;
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let s = repo.require(&name).await?;
    let cat = Catalogue::for_cluster_as_rendered(&s.config)
        .map_err(|e| ExitError::usage(e.to_string()))?;
    let assets = &s.config.cluster.spec.assets;
    let hosts: Vec<String> = cat
        .images
        .iter()
        .filter_map(|i| ImageRef::parse(&i.mirror).ok().map(|r| r.registry))
        .collect();
    let client = Arc::new(RegistryClient::new(client_options_for(
        assets,
        hosts,
        &a.insecure_registry,
        &a.ca_bundle,
    )?)?);
    let mut rows: Vec<CheckRow> = futures::stream::iter(cat.images.iter())
        .map(|i| {
            let client = client.clone();
            async move {
                CheckRow {
                    kind: "image",
                    location: i.mirror.clone(),
                    status: check_image(&client, &i.mirror, &i.arches).await,
                }
            }
        })
        .buffered(a.concurrency.max(1))
        .collect()
        .await;
    let files: Vec<CheckRow> = futures::stream::iter(cat.files.iter())
        .map(|f| {
            let client = client.clone();
            async move {
                CheckRow {
                    kind: "file",
                    location: f.mirror_url.clone(),
                    status: check_file(client.http(), &f.mirror_url).await,
                }
            }
        })
        .buffered(a.concurrency.max(1))
        .collect()
        .await;
    rows.extend(files);
    let bad = rows.iter().filter(|r| r.status != "ok").count();
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&rows)?),
        Output::Table => {
            let t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| vec![r.kind.to_string(), r.location.clone(), r.status.clone()])
                .collect();
            print!(
                "{}",
                super::output::table(&["KIND", "MIRROR", "STATUS"], &t)
            );
        }
    }
    if bad > 0 {
        // A mirror that does not answer at all needs another fix than missing assets.
        let down: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|r| r.status.contains("cannot reach"))
            .map(|r| {
                let rest = r
                    .location
                    .split_once("://")
                    .map_or(&*r.location, |(_, x)| x);
                rest.split('/').next().unwrap_or(rest).to_string()
            })
            .collect();
        let missing = bad.saturating_sub(
            rows.iter()
                .filter(|r| r.status.contains("cannot reach"))
                .count(),
        );
        if !down.is_empty() {
            let also = if missing > 0 {
                format!(
                    "; {missing} more are not at their mirror locations: mirror them with `kprov mirror {name}` (add --files-to for files)"
                )
            } else {
                String::new()
            };
            anyhow::bail!(
                "{bad} of {} assets of cluster {name} are not reachable: the mirror {} did not answer; \
                 fix: start it or correct spec.assets.containerRegistry / spec.assets.fileRepository \
                 (`kprov create -f CLUSTER.yaml --replace`), then mirror with `kprov mirror {name}`{also}",
                rows.len(),
                down.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        anyhow::bail!(
            "{bad} of {} assets of cluster {name} are not reachable at their mirror locations; mirror them with `kprov mirror {name}` (add --files-to for files)",
            rows.len()
        );
    }
    eprintln!(
        "all {} assets of cluster {name} are reachable at their mirror locations",
        rows.len()
    );
    Ok(())
}

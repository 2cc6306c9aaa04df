//! `kprov get clusters|cluster NAME|instancegroups NAME|instances NAME|userdata NAME`.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{current_cluster, open_store, Cli, Output};
use crate::repo::Repo;

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[command(subcommand)]
    pub what: GetWhat,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// Things `get` shows.
#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// All clusters in the state store.
    Clusters,
    /// One cluster's spec.
    Cluster {
        /// Cluster (default: the current cluster).
        cluster: Option<String>,
    },
    /// A cluster's instance groups.
    #[command(alias = "ig", alias = "instancegroup")]
    Instancegroups {
        /// Cluster (default: the current cluster).
        cluster: Option<String>,
    },
    /// A cluster's instances, as the cloud reports them (found by tag).
    Instances {
        /// Cluster (default: the current cluster).
        cluster: Option<String>,
    },
    /// A cluster's etcd backups in the state store (`kprov backup etcd`), oldest first.
    Backups {
        /// Cluster (default: the current cluster).
        cluster: Option<String>,
    },
    /// The user-data (cloud-config) a node gets, secrets redacted unless --show-secrets.
    Userdata(super::userdata::UserdataArgs),
    /// Every image and file the cluster pulls, with upstream and mirror locations.
    Assets(super::assets::GetAssetsArgs),
}

fn emit<T: Serialize>(
    out: Output,
    value: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Table => print!("{}", super::output::table(header, &rows)),
    }
    Ok(())
}

/// Run `get`.
pub async fn run(cli: &Cli, a: &GetArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    match &a.what {
        GetWhat::Clusters => clusters(&repo, a.output).await,
        GetWhat::Cluster { cluster } => {
            cluster_spec(
                &repo,
                &current_cluster(cluster.as_deref(), cli.name.as_deref(), &repo).await?,
                a.output,
            )
            .await
        }
        GetWhat::Instancegroups { cluster } => {
            instance_groups(
                &repo,
                &current_cluster(cluster.as_deref(), cli.name.as_deref(), &repo).await?,
                a.output,
            )
            .await
        }
        GetWhat::Instances { cluster } => {
            instances(
                &repo,
                &current_cluster(cluster.as_deref(), cli.name.as_deref(), &repo).await?,
                a.output,
            )
            .await
        }
        GetWhat::Backups { cluster } => {
            let name = current_cluster(cluster.as_deref(), cli.name.as_deref(), &repo).await?;
            backups(&repo, &name, a.output).await
        }
        GetWhat::Userdata(u) => super::userdata::run(cli, u, &repo).await,
        GetWhat::Assets(x) => super::assets::run_get(cli, x, a.output, &repo).await,
    }
}

/// `get backups`: one row per etcd backup, oldest first.
async fn backups(repo: &Repo, name: &str, output: Output) -> anyhow::Result<()> {
    let list = crate::ops::backup::list(repo, name).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&list)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| vec![b.id.clone(), b.key.clone()])
                .collect();
            print!("{}", super::output::table(&["ID", "KEY"], &rows));
        }
    }
    Ok(())
}

/// `get clusters`: one row per cluster in the store.
async fn clusters(repo: &Repo, output: Output) -> anyhow::Result<()> {
    let mut list = Vec::new();
    for name in repo.clusters().await? {
        if let Some(s) = repo.load(&name).await? {
            list.push(s);
        }
    }
    #[derive(Serialize)]
    struct Row {
        name: String,
        provider: String,
        kubernetes_version: String,
        instance_groups: usize,
        instances: i64,
        generation: u64,
    }
    let rows: Vec<Row> = list
        .iter()
        .map(|s| Row {
            name: s.config.name().to_string(),
            provider: s.config.cluster.spec.provider.name().to_string(),
            kubernetes_version: s.config.cluster.spec.kubernetes_version.clone(),
            instance_groups: s.config.groups.len(),
            instances: s.config.groups.iter().map(|g| g.spec.count.max(0)).sum(),
            generation: s.generation,
        })
        .collect();
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                r.provider.clone(),
                r.kubernetes_version.clone(),
                r.instance_groups.to_string(),
                r.instances.to_string(),
            ]
        })
        .collect();
    emit(
        output,
        &rows,
        &["NAME", "PROVIDER", "KUBERNETES", "GROUPS", "INSTANCES"],
        table_rows,
    )
}

/// `get cluster NAME`: the spec, as a one-line summary or whole.
async fn cluster_spec(repo: &Repo, name: &str, output: Output) -> anyhow::Result<()> {
    let s = repo.require(name).await?;
    match output {
        Output::Table => {
            let c = &s.config.cluster.spec;
            let rows = vec![vec![
                name.to_string(),
                c.provider.name().into(),
                c.kubernetes_version.clone(),
                c.networking.cni.as_str().into(),
                c.networking.pod_cidr.to_string(),
                c.networking.service_cidr.to_string(),
            ]];
            print!(
                "{}",
                super::output::table(
                    &[
                        "NAME",
                        "PROVIDER",
                        "KUBERNETES",
                        "CNI",
                        "POD CIDR",
                        "SERVICE CIDR"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        Output::Yaml => {
            print!("{}", s.config.to_yaml());
            Ok(())
        }
        Output::Json => {
            let mut docs = vec![serde_json::to_value(&s.config.cluster)?];
            for g in &s.config.groups {
                docs.push(serde_json::to_value(g)?);
            }
            println!("{}", serde_json::to_string_pretty(&docs)?);
            Ok(())
        }
    }
}

/// `get instancegroups NAME`: one row per group of the spec.
async fn instance_groups(repo: &Repo, name: &str, output: Output) -> anyhow::Result<()> {
    let s = repo.require(name).await?;
    let rows = s
        .config
        .groups
        .iter()
        .map(|g| {
            let size = match (&g.spec.flavor, &g.spec.size) {
                (Some(f), _) => f.clone(),
                (None, Some(sz)) => format!("{} vCPU / {}", sz.cpu, sz.memory),
                _ => "-".into(),
            };
            let gpu = g
                .spec
                .gpu
                .as_ref()
                .map(|x| {
                    format!(
                        "{}x{}",
                        x.count,
                        x.model.clone().unwrap_or_else(|| "any".into())
                    )
                })
                .unwrap_or_else(|| "-".into());
            vec![
                g.name().to_string(),
                g.spec.role.to_string(),
                g.spec.count.to_string(),
                g.spec.arch.to_string(),
                size,
                gpu,
                g.spec.image.clone().unwrap_or_else(|| "(default)".into()),
            ]
        })
        .collect();
    emit(
        output,
        &s.config.groups,
        &["NAME", "ROLE", "COUNT", "ARCH", "SIZE", "GPU", "IMAGE"],
        rows,
    )
}

/// `get instances NAME`: what the cloud holds for the cluster, found by tag, with each
/// instance's status against the spec (and the spec's instances the cloud lacks).
async fn instances(repo: &Repo, name: &str, output: Output) -> anyhow::Result<()> {
    let s = repo.require(name).await?;
    let cloud = crate::cloud::connect(name, &s.config.cluster.spec).await?;
    let list = cloud.list_instances(name).await?;
    let rows = crate::ops::instances::statuses(&s.config, &list);
    let table = rows
        .iter()
        .map(|r| {
            let i = &r.instance;
            vec![
                i.name.to_string(),
                i.id.clone(),
                r.status.as_str().to_string(),
                i.state.clone(),
                i.address.clone().unwrap_or_else(|| "-".into()),
                i.instance_group().unwrap_or("-").to_string(),
                i.tags
                    .get(kprov_providers::TAG_ROLE)
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    emit(
        output,
        &rows,
        &["NAME", "ID", "STATUS", "STATE", "ADDRESS", "GROUP", "ROLE"],
        table,
    )?;
    let n = rows
        .iter()
        .filter(|r| r.status == crate::ops::instances::Status::NeedsUpdate)
        .count();
    if n > 0 && output == Output::Table {
        eprintln!(
            "{n} instance{} need{} an update: `kprov update cluster {name}` shows why",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

//! `kprov rolling-update [cluster] [NAME] [--yes] [--cloudonly] ...`: the table of groups and
//! what needs replacing; with --yes, replace it under the cluster's lock.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{current_cluster, open_store, Cli, ExitError, LockArgs, Output};
use crate::ops::rolling::{GroupRoll, RollOptions, RollOutcome};
use crate::repo::Repo;
use crate::spec::Role;
use crate::{ops, spec};

/// Arguments of `rolling-update`.
#[derive(Debug, Args)]
pub struct RollingUpdateArgs {
    /// `cluster` (optional, kops-style).
    #[arg(value_parser = ["cluster"], hide_possible_values = true)]
    pub resource: Option<String>,
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// Replace the instances. Without it nothing changes anywhere.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only this instance group (repeatable).
    #[arg(long = "instance-group", value_name = "GROUP")]
    pub instance_groups: Vec<String>,
    /// Only groups of these roles (comma-separated: control-plane,node).
    #[arg(long, value_delimiter = ',', value_name = "ROLES", value_parser = parse_role)]
    pub instance_group_roles: Vec<Role>,
    /// Replace instances through the cloud only: no drain, no validation between steps (kops'
    /// --cloudonly). Required in this version, which does not drive the Kubernetes API yet.
    #[arg(long)]
    pub cloudonly: bool,
    /// Cloud calls in flight at once (default: the provider's).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Give up each step after this long (e.g. 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// Lock lease time-to-live in seconds (renewed every third of it while running).
    #[arg(long, default_value_t = 60, hide = true)]
    pub lock_ttl: u64,
    /// Do not check the mirrored assets before creating replacements.
    #[arg(long, env = "KPROV_SKIP_ASSET_CHECK", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_asset_check: bool,
    /// Output format of the table (and of the result with --yes).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Lock options.
    #[command(flatten)]
    pub lock: LockArgs,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s.trim() {
        "control-plane" | "controlplane" | "master" => Ok(Role::ControlPlane),
        "node" | "nodes" | "worker" => Ok(Role::Node),
        other => Err(format!("unknown role {other:?}: use control-plane or node")),
    }
}

/// What `-o json|yaml` prints.
#[derive(Serialize)]
struct Report<'a> {
    cluster: &'a str,
    groups: &'a [GroupRoll],
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RollOutcome>,
}

fn print_table(rows: &[GroupRoll]) {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.status.to_string(),
                r.need_update.to_string(),
                r.ready.to_string(),
                r.min.to_string(),
                r.target.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        super::output::table(
            &["NAME", "STATUS", "NEEDUPDATE", "READY", "MIN", "TARGET"],
            &table
        )
    );
}

fn print(
    output: Output,
    name: &str,
    rows: &[GroupRoll],
    result: Option<&RollOutcome>,
) -> anyhow::Result<()> {
    let report = Report {
        cluster: name,
        groups: rows,
        result,
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Table => print_table(rows),
    }
    Ok(())
}

/// Run `rolling-update`: the table, and with --yes the replacements under the cluster's lock.
pub async fn run(cli: &Cli, a: &RollingUpdateArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let deadline = spec::quantity::parse_duration(&a.timeout)
        .map_err(|e| ExitError::usage(format!("--timeout: {e}")))?;
    let progress = cli.terminal().progress();
    let opts = RollOptions {
        groups: a.instance_groups.clone(),
        roles: a.instance_group_roles.clone(),
        cloud_only: a.cloudonly,
        apply: ops::ApplyOptions {
            concurrency: a.concurrency,
            deadline,
            command: "rolling-update --yes".into(),
            asset_check: (!a.skip_asset_check).then(|| ops::assets::CheckOptions {
                concurrency: 16,
                ..Default::default()
            }),
        },
    };
    if !a.yes {
        let report = ops::plan(&repo, &name).await?;
        let rows = ops::rolling::summary(&report);
        print(a.output, &name, &rows, None)?;
        if a.output == Output::Table && rows.iter().any(|r| r.need_update > 0) {
            println!("\nMust specify --yes to rolling-update.");
        }
        return Ok(());
    }
    super::check_asset_sha256sums()?;
    a.lock.break_if_asked(&repo, &name, a.yes).await?;
    let command = format!("rolling-update cluster {name} --yes");
    let ttl = Duration::from_secs(a.lock_ttl.max(1));
    let guard = ops::lock::acquire(&repo, &name, &command, ttl, &progress).await?;
    let result = async {
        let report = ops::plan(&repo, &name).await?;
        let rows = ops::rolling::summary(&report);
        if a.output == Output::Table {
            print_table(&rows);
        }
        let outcome = ops::rolling::roll(&repo, report, &opts, &progress).await?;
        match a.output {
            Output::Table => println!(
                "\nRolling update of cluster {name} done: {} replacement(s) created, {} old instance(s) deleted{}.",
                outcome.created.len(),
                outcome.deleted,
                if outcome.resumed > 0 {
                    format!(" ({} replacement(s) from an interrupted run reused)", outcome.resumed)
                } else {
                    String::new()
                }
            ),
            o => print(o, &name, &rows, Some(&outcome))?,
        }
        Ok(())
    }
    .await;
    ops::lock::release(guard, &name, result, &progress).await
}

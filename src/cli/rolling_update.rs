//! `kprov rolling-update [cluster] [NAME] [--yes] [--cloudonly] ...`: the table of groups and
//! what needs replacing; with --yes, replace it under the cluster's lock.

use clap::Args;
use serde::Serialize;

use super::{current_cluster, open_store, ApplyArgs, Cli, Output};
use crate::error::ExitError;
use crate::ops;
use crate::ops::rolling::{GroupRoll, RollOptions, RollOutcome};
use crate::ops::ApplyOptions;
use crate::repo::Repo;
use crate::spec::Role;

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
    /// Replace instances that do not need it too (kops' --force): every instance of the
    /// selected groups is made anew. A forced roll that was interrupted is continued by the
    /// next --force run, which does not replace the replacements again.
    #[arg(long)]
    pub force: bool,
    /// Replace a cluster's only control plane (no etcd quorum survives a swap): its etcd is
    /// snapshotted through the API into the state store, the old control plane deleted, and the
    /// replacement restores the snapshot before `kubeadm init`. The API server is down
    /// meanwhile; writes after the snapshot are lost. Needs spec.controlPlane.endpoint and an
    /// s3:// state store the control plane can fetch the snapshot from (or --snapshot-to).
    /// Killed, the same command continues the restore.
    #[arg(long)]
    pub allow_control_plane_downtime: bool,
    /// Where the control plane fetches the etcd snapshot from when the state store is a
    /// `file://` directory it cannot read: an upload target of the cluster's
    /// `spec.assets.fileRepository` (`file:///DIR` the repository serves, `s3://BUCKET[/PREFIX]`
    /// or `https://HOST/PATH` taking PUTs, as for `mirror --files-to`). The copy there is
    /// encrypted with a key only the node's user-data holds, and removed once restored.
    #[arg(long, value_name = "TARGET")]
    pub snapshot_to: Option<String>,
    /// How long a replacement may take to be a Ready Node, and the cluster to validate after
    /// each step.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub validation_timeout: String,
    /// Stop when the cluster does not validate after a step (false: go on).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub fail_on_validate_error: bool,
    /// Output format of the table (and of the result with --yes).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// How each step is applied.
    #[command(flatten)]
    pub apply: ApplyArgs,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s.trim() {
        "control-plane" | "controlplane" | "master" => Ok(Role::ControlPlane),
        "node" | "nodes" | "worker" => Ok(Role::Node),
        other => Err(format!("unknown role {other:?}: use control-plane or node")),
    }
}

fn duration(flag: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    crate::spec::quantity::parse_duration(v)
        .map_err(|e| ExitError::usage(format!("{flag} {v}: {e}")))
}

impl RollingUpdateArgs {
    /// How each step is applied, with the validation flags of a roll.
    fn options(&self) -> anyhow::Result<ApplyOptions> {
        let mut opts = self.apply.options("rolling-update --yes")?;
        opts.live.validation_timeout = duration("--validation-timeout", &self.validation_timeout)?;
        opts.live.fail_on_validate_error = self.fail_on_validate_error;
        opts.snapshot_to = self.snapshot_to.clone();
        Ok(opts)
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
    let progress = cli.terminal().progress();
    let opts = RollOptions {
        groups: a.instance_groups.clone(),
        roles: a.instance_group_roles.clone(),
        force: a.force,
        allow_downtime: a.allow_control_plane_downtime,
        apply: a.options()?,
    };
    if !a.yes {
        let report = ops::plan(&repo, &name).await?;
        let rows = ops::rolling::summary(&report, a.force);
        print(a.output, &name, &rows, None)?;
        if a.output == Output::Table && rows.iter().any(|r| r.need_update > 0) {
            println!("\nMust specify --yes to rolling-update.");
        }
        return Ok(());
    }
    super::check_asset_sha256sums()?;
    a.apply.lock.break_if_asked(&repo, &name, a.yes).await?;
    let command = format!("rolling-update cluster {name} --yes");
    let guard = ops::lock::acquire(&repo, &name, &command, a.apply.lock_ttl(), &progress).await?;
    let result = async {
        let report = ops::plan(&repo, &name).await?;
        let rows = ops::rolling::summary(&report, a.force);
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

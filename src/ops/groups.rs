//! Deleting an instance group: in a running cluster its nodes are drained first (unless
//! `--cloudonly`: a drain that fails leaves the group in the spec, its nodes cordoned, and the
//! same command re-run drains on); then the spec without it is validated and stored (so a run
//! killed after that leaves instances that are simply not in the spec any more, which
//! `update --yes` deletes), then its instances are deleted through [`super::converge::apply`].

use kprov_providers::Instance;

use crate::error::ExitError;
use crate::plan::Change;
use crate::repo::{config_key, Repo, Stored};
use crate::report::Progress;
use crate::spec::load::Source;
use crate::spec::{self, LoadedSpec};

use super::converge::{apply, ApplyOptions};
use super::plan::PlanReport;

/// The stored cluster `prev` without instance group `group`, validated (removing the last
/// control-plane group is refused like any spec without a control plane).
pub fn without_group(prev: &Stored, group: &str) -> anyhow::Result<LoadedSpec> {
    let name = prev.config.name();
    if !prev.config.groups.iter().any(|g| g.name() == group) {
        let known: Vec<&str> = prev.config.groups.iter().map(|g| g.name()).collect();
        return Err(ExitError::usage(format!(
            "cluster {name} has no instance group {group:?}; nothing was deleted. fix: name one of {}",
            known.join(", ")
        )));
    }
    let mut config = prev.config.clone();
    config.groups.retain(|g| g.name() != group);
    let src = Source::Store(config_key(name));
    let mut spec = LoadedSpec {
        group_srcs: config.groups.iter().map(|_| src.clone()).collect(),
        config,
        cluster_src: src,
    };
    spec::validate(&mut spec)?;
    Ok(spec)
}

/// The instances of `group` the cloud holds for the cluster of `report`.
pub async fn instances_of(report: &PlanReport, group: &str) -> anyhow::Result<Vec<Instance>> {
    let mut list: Vec<Instance> = report
        .cloud
        .list_instances(&report.cluster)
        .await?
        .into_iter()
        .filter(|i| i.instance_group() == Some(group))
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// Delete instance group `group` of the cluster in `report` (planned from the stored spec):
/// drain its instances, store the spec without it, then delete them. Returns how many were
/// deleted. An API server that cannot be reached for the drain refuses before anything
/// changes.
pub async fn delete_group(
    repo: &Repo,
    report: PlanReport,
    group: &str,
    opts: &ApplyOptions,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let prev = repo.require(&report.cluster).await?;
    let spec = without_group(&prev, group)?;
    let doomed = instances_of(&report, group).await?;
    let changes: Vec<Change> = doomed
        .into_iter()
        .map(|old| Change::Delete {
            old,
            reason: format!("instance group {group} deleted"),
        })
        .collect();
    let step = PlanReport {
        plan: crate::plan::Plan {
            changes,
            unchanged: 0,
            needs_update: Vec::new(),
            ..report.plan.clone()
        },
        renderer: None,
        config: spec.config.clone(),
        ..report
    };
    if let Some(live) = super::converge::connect_to_drain(repo, &step, opts).await? {
        super::converge::take_out_deleted(&live, &step.plan, progress).await?;
    }
    super::specs::store(repo, &spec, Some(&prev)).await?;
    if step.plan.changes.is_empty() {
        return Ok(0);
    }
    let mut opts = opts.clone();
    opts.asset_check = None;
    opts.cloud_only = true; // drained above
    Ok(apply(repo, step, &opts, progress).await?.deleted)
}

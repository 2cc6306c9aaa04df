//! Rolling updates: replace the instances whose spec changed ([`crate::plan::NeedsUpdate`]),
//! group by group — control planes first, one at a time, then node groups — within each
//! group's `rollingUpdate` budget (maxSurge extra instances, maxUnavailable down). A
//! replacement is made next to the old instance before the old one goes (surge), under a
//! deterministic id ([`crate::plan::replacement_request`]), so a run killed at any point is
//! finished by the next: the plan read from the cloud again says which replacements exist and
//! which old instances are still there.
//!
//! Unless `--cloudonly`, each step also goes through the cluster's API server ([`super::live`]): the
//! replacements' Nodes must be Ready, the old nodes are cordoned and drained through the
//! Eviction API (control planes: their etcd member removed), their Node objects deleted, and
//! the cluster validated before the next step. `--cloudonly` (kops' semantics) replaces
//! instances through the cloud only, for a cluster whose API is already broken. `--force`
//! replaces up-to-date instances too, by a new generation of their slot ([`forced`] records
//! what a forced roll set out to replace, so a re-run continues it).

use std::collections::BTreeSet;

use serde::Serialize;

use kprov_providers::{InstanceRequest, Role};

use crate::error::ExitError;
use crate::plan::{Change, NeedsUpdate, Plan};
use crate::repo::Repo;
use crate::report::Progress;
use crate::spec::{ClusterConfig, IntOrPercent, RollingUpdate};

use super::converge::{apply, ApplyOptions};
use super::plan::PlanReport;

use super::live::Live;
use super::restore;

/// What to roll and how.
#[derive(Debug, Clone)]
pub struct RollOptions {
    /// Only these instance groups (empty: all).
    pub groups: Vec<String>,
    /// Only groups of these roles (empty: all).
    pub roles: Vec<Role>,
    /// Replace up-to-date instances too (kops' `--force`). An interrupted forced roll is
    /// continued by the next `--force` run (the instances it set out to replace are recorded).
    pub force: bool,
    /// Replace a cluster's only control plane by etcd snapshot and restore, with the API down
    /// while it happens ([`super::restore`]); without it a single control plane is refused.
    pub allow_downtime: bool,
    /// How each step is applied (concurrency, deadline, journal command, asset check) and the
    /// Kubernetes side (`apply.live`, unless `apply.cloud_only`: no drain, no validation).
    pub apply: ApplyOptions,
}

/// One group's line of the rolling-update table.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRoll {
    /// Instance group.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// `NeedsUpdate` or `Ready`.
    pub status: &'static str,
    /// Instances to replace.
    pub need_update: usize,
    /// Instances up to date and running.
    pub ready: usize,
    /// Instances that must stay up while it rolls (count − maxUnavailable).
    pub min: u32,
    /// The group's count.
    pub target: u32,
    /// Replacements made before old instances go, per step.
    pub max_surge: u32,
    /// Instances down at once.
    pub max_unavailable: u32,
}

/// A group's resolved budget: (maxSurge, maxUnavailable); control planes roll one at a time.
fn budget(ru: Option<&RollingUpdate>, role: Role, count: u32) -> (u32, u32) {
    let resolve = |v: Option<&IntOrPercent>, up: bool, default: u32| {
        v.and_then(|v| v.resolve(count.max(1), up).ok())
            .unwrap_or(default)
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), true, 1);
    let unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), false, 0);
    match role {
        Role::ControlPlane => (surge.min(1), if surge == 0 { 1 } else { 0 }),
        Role::Node => (surge, unavailable),
    }
}

/// The instances a roll replaces: those that need an update, and with `force` the up-to-date
/// ones too (only those in `forced`, when an interrupted forced roll recorded its set).
fn candidates<'a>(
    report: &'a PlanReport,
    force: bool,
    forced: Option<&'a BTreeSet<String>>,
) -> impl Iterator<Item = &'a NeedsUpdate> + 'a {
    let plan = &report.plan;
    let extra = plan
        .forceable
        .iter()
        .filter(move |u| force && forced.is_none_or(|ids| ids.contains(&u.old.id)));
    plan.needs_update.iter().chain(extra)
}

/// The table `rolling-update` prints (and, with `-o json`, returns): every group of the
/// cluster; with `force`, its up-to-date instances count as needing the update.
pub fn summary(report: &PlanReport, force: bool) -> Vec<GroupRoll> {
    summary_of(report, force, None)
}

fn summary_of(
    report: &PlanReport,
    force: bool,
    forced: Option<&BTreeSet<String>>,
) -> Vec<GroupRoll> {
    let cfg = &report.config;
    let mut rows: Vec<GroupRoll> = cfg
        .groups
        .iter()
        .map(|g| {
            let count = g.spec.count.max(0) as u32;
            let (surge, unavail) = budget(g.spec.rolling_update.as_ref(), g.spec.role, count);
            let need = candidates(report, force, forced)
                .filter(|u| u.new.instance_group == g.name())
                .count();
            GroupRoll {
                name: g.name().to_string(),
                role: g.spec.role,
                status: if need > 0 { "NeedsUpdate" } else { "Ready" },
                need_update: need,
                ready: (count as usize).saturating_sub(need),
                min: count.saturating_sub(unavail),
                target: count,
                max_surge: surge,
                max_unavailable: unavail,
            }
        })
        .collect();
    // control planes first, as they roll
    rows.sort_by_key(|r| (r.role != Role::ControlPlane, r.name.clone()));
    rows
}

/// The instances to replace, per selected group in rolling order; refuses (exit 2, nothing
/// changed) what cannot be rolled safely.
fn targets(
    report: &PlanReport,
    opts: &RollOptions,
    forced: Option<&BTreeSet<String>>,
    restoring: bool,
) -> anyhow::Result<Vec<(String, Vec<NeedsUpdate>)>> {
    let cfg = &report.config;
    let name = report.cluster.as_str();
    for g in &opts.groups {
        if !cfg.groups.iter().any(|x| x.name() == g) {
            let known: Vec<&str> = cfg.groups.iter().map(|x| x.name()).collect();
            return Err(ExitError::usage(format!(
                "--instance-group {g}: cluster {name} has no such instance group; nothing was replaced. fix: name one of {}",
                known.join(", ")
            )));
        }
    }
    // a pending restore's replacement control plane is created by the roll that continues it
    let unapplied = report
        .plan
        .changes
        .iter()
        .filter(|c| !(restoring && matches!(c, Change::Create(r) if r.role == Role::ControlPlane)))
        .count();
    if unapplied > 0 {
        return Err(ExitError::usage(format!(
            "cluster {name} has {unapplied} change(s) `update` has not applied yet; nothing was replaced. fix: run `kprov update cluster {name} --yes` first"
        )));
    }
    let selected = |group: &str, role: Role| {
        (opts.groups.is_empty() || opts.groups.iter().any(|g| g == group))
            && (opts.roles.is_empty() || opts.roles.contains(&role))
    };
    let mut out: Vec<(String, Vec<NeedsUpdate>)> = Vec::new();
    for row in summary_of(report, opts.force, forced) {
        if row.need_update == 0 || !selected(&row.name, row.role) {
            continue;
        }
        let list: Vec<NeedsUpdate> = candidates(report, opts.force, forced)
            .filter(|u| u.new.instance_group == row.name)
            .cloned()
            .collect();
        if row.role == Role::ControlPlane {
            refuse_control_plane(cfg, name, opts)?;
        }
        out.push((row.name, list));
    }
    Ok(out)
}

/// Control planes roll one at a time next to the others: refused with one control plane (no
/// etcd quorum survives the swap) unless `--allow-control-plane-downtime`, and without a stable
/// endpoint (`spec.controlPlane.endpoint` or the provider's load balancer: nodes and kubelets would keep pointing at the old
/// control plane's address).
fn refuse_control_plane(cfg: &ClusterConfig, name: &str, opts: &RollOptions) -> anyhow::Result<()> {
    let total = cfg.control_plane_count();
    let single = total == 1 && opts.allow_downtime;
    if total < 3 && !single {
        let hint = if total == 1 {
            ", or accept the control plane being down while it is replaced from an etcd snapshot with --allow-control-plane-downtime"
        } else {
            ""
        };
        return Err(ExitError::usage(format!(
            "cluster {name} has {total} control plane(s): replacing one loses etcd quorum (the whole control plane is down while it happens); nothing was replaced. fix: run 3 control planes (and spec.controlPlane.endpoint) before rolling them{hint}, or limit the update to workers with --instance-group-roles node"
        )));
    }
    if cfg.cluster.spec.control_plane.endpoint.is_none() && cfg.api_load_balancer().is_none() {
        return Err(ExitError::usage(format!(
            "cluster {name} has no stable control-plane endpoint: its nodes reach the API server at the first control plane's address, which a rolling update removes; nothing was replaced. fix: set spec.controlPlane.endpoint (a load balancer or VIP in front of the control planes; on ZStack and AWS kprov makes one with spec.controlPlane.loadBalancer), or limit the update to workers with --instance-group-roles node"
        )));
    }
    if single && opts.apply.cloud_only {
        return Err(ExitError::usage(format!(
            "--allow-control-plane-downtime with --cloudonly: cluster {name}'s only control plane is replaced from an etcd snapshot taken through its API server; nothing was replaced. fix: drop --cloudonly"
        )));
    }
    Ok(())
}

/// What a rolling update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RollOutcome {
    /// Replacements created (name → id).
    pub created: Vec<(String, String)>,
    /// Old instances deleted.
    pub deleted: usize,
    /// Old instances whose replacement an earlier, interrupted run had already made.
    pub resumed: usize,
}

/// Replace the selected groups' outdated instances: control planes one at a time, node groups
/// in steps of maxSurge + maxUnavailable (the replacements of a step made first, up to
/// maxSurge; then the step's old instances deleted; then the rest of its replacements).
pub async fn roll(
    repo: &Repo,
    mut report: PlanReport,
    opts: &RollOptions,
    progress: &Progress,
) -> anyhow::Result<RollOutcome> {
    let name = report.cluster.clone();
    let recorded = if opts.force {
        forced::load(repo, &name).await?
    } else {
        None
    };
    let restoring = restore::pending(repo, &name).await?;
    if restoring.is_some() && !opts.allow_downtime {
        return Err(ExitError::usage(format!(
            "a replacement of cluster {name}'s only control plane from an etcd snapshot is under way (killed or failed); nothing was replaced. fix: re-run with --allow-control-plane-downtime to finish it"
        )));
    }
    let mut groups = targets(&report, opts, recorded.as_ref(), restoring.is_some())?;
    let mut outcome = RollOutcome::default();
    if opts.allow_downtime && report.config.control_plane_count() == 1 {
        let pos = groups.iter().position(|(g, _)| {
            report
                .config
                .groups
                .iter()
                .any(|x| x.name() == g && x.spec.role == Role::ControlPlane)
        });
        let update = pos.map(|i| groups.remove(i).1.remove(0));
        if update.is_some() || restoring.is_some() {
            restore::check_store(repo, &name, opts.apply.snapshot_to.as_deref()).await?;
            restore::replace(
                repo,
                &mut report,
                opts,
                update,
                restoring,
                progress,
                &mut outcome,
            )
            .await?;
        }
    }
    if groups.is_empty() {
        if opts.force {
            forced::clear(repo, &name).await?;
        }
        return Ok(outcome);
    }
    if opts.force && recorded.is_none() {
        // what this forced roll sets out to replace, so a re-run continues instead of
        // replacing the replacements again
        let ids: BTreeSet<String> = groups
            .iter()
            .flat_map(|(_, l)| l)
            .filter(|u| report.plan.forceable.iter().any(|f| f.old.id == u.old.id))
            .map(|u| u.old.id.clone())
            .collect();
        forced::save(repo, &name, &ids).await?;
    }
    let all_new: Vec<InstanceRequest> = groups
        .iter()
        .flat_map(|(_, l)| l.iter().filter(|u| u.replaced_by.is_none()))
        .map(NeedsUpdate::replacement)
        .collect();
    if !all_new.is_empty() {
        // the capacity and user-data checks once, before anything changes
        report.prepare_creates(repo, &all_new).await?;
    }
    let rows = summary_of(&report, opts.force, recorded.as_ref());
    let mut live = if opts.apply.cloud_only {
        None
    } else {
        // an interrupted run's old instances whose replacements exist may have no Node left
        let leaving = groups
            .iter()
            .flat_map(|(_, l)| l.iter().filter(|u| u.replaced_by.is_some()))
            .map(|u| u.old.name.clone())
            .collect();
        let cloud = report.cloud.clone();
        let live = Live::connect(repo, &report.cluster, cloud, leaving, &opts.apply.live).await.map_err(|e| {
            e.context(
                "nothing was replaced. fix: make the API server reachable (or pass --kubeconfig), \
                 or add --cloudonly to replace instances without draining (workloads on each old node stop when it goes)",
            )
        })?;
        live.validate("before the rolling update", progress).await?;
        let rolls_control_planes = groups
            .iter()
            .any(|(_, l)| l.iter().any(|u| u.old.is_control_plane()));
        if rolls_control_planes {
            // a backup of etcd as it was before its members change
            super::backup::take_with(repo, &name, &live, None, progress).await?;
        }
        Some(live)
    };
    for (group, list) in groups {
        let row = rows.iter().find(|r| r.name == group).expect("summary row");
        let step = (row.max_surge + row.max_unavailable).max(1) as usize;
        progress.note(&format!(
            "Rolling instance group {group}: {} instance(s), {step} at a time (maxSurge {}, maxUnavailable {})",
            list.len(),
            row.max_surge,
            row.max_unavailable
        ));
        for chunk in list.chunks(step) {
            let step = Step {
                chunk,
                surge: row.max_surge as usize,
                role: row.role,
            };
            roll_step(
                repo,
                &report,
                opts,
                live.as_mut(),
                step,
                progress,
                &mut outcome,
            )
            .await?;
        }
    }
    if opts.force {
        forced::clear(repo, &name).await?;
    }
    Ok(outcome)
}

/// The record of a forced roll under way (`NAME/rolling-force`): the ids of the up-to-date
/// instances it set out to replace, one per line. Written before the first step, removed when
/// the roll is done.
mod forced {
    use std::collections::BTreeSet;

    use anyhow::Context as _;
    use kprov_state::Condition;

    use crate::repo::Repo;

    fn key(cluster: &str) -> String {
        format!("{cluster}/rolling-force")
    }

    /// The recorded set, if a forced roll was interrupted.
    pub(super) async fn load(
        repo: &Repo,
        cluster: &str,
    ) -> anyhow::Result<Option<BTreeSet<String>>> {
        let key = key(cluster);
        let obj = repo
            .store
            .get(&key)
            .await
            .with_context(|| format!("reading {key}"))?;
        Ok(obj.map(|o| {
            String::from_utf8_lossy(&o.bytes)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        }))
    }

    /// Record the set a forced roll replaces.
    pub(super) async fn save(
        repo: &Repo,
        cluster: &str,
        ids: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let key = key(cluster);
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        repo.store
            .put(&key, text.as_bytes(), Condition::None)
            .await
            .with_context(|| format!("writing {key}"))?;
        Ok(())
    }

    /// The forced roll is done.
    pub(super) async fn clear(repo: &Repo, cluster: &str) -> anyhow::Result<()> {
        let key = key(cluster);
        repo.store
            .delete(&key, Condition::None)
            .await
            .with_context(|| format!("removing {key}"))
    }
}

/// One step of a group's roll.
struct Step<'a> {
    /// The old instances replaced in this step.
    chunk: &'a [NeedsUpdate],
    /// Replacements made before old instances go.
    surge: usize,
    /// The group's role.
    role: Role,
}

/// One step: up to `surge` replacements made first (and, live, Ready), then the old instances
/// taken out of the cluster (live: cordoned, drained, etcd member removed, Node deleted) and
/// deleted, then the remaining replacements; live, the cluster validated at the end.
async fn roll_step(
    repo: &Repo,
    report: &PlanReport,
    opts: &RollOptions,
    mut live: Option<&mut Live<'_>>,
    step: Step<'_>,
    progress: &Progress,
    outcome: &mut RollOutcome,
) -> anyhow::Result<()> {
    let chunk = step.chunk;
    let missing: Vec<InstanceRequest> = chunk
        .iter()
        .filter(|u| u.replaced_by.is_none())
        .map(NeedsUpdate::replacement)
        .collect();
    outcome.resumed += chunk.len() - missing.len();
    let (first, later) = missing.split_at(step.surge.min(missing.len()));
    let creates = |reqs: &[InstanceRequest]| -> Vec<Change> {
        reqs.iter().cloned().map(Change::Create).collect()
    };
    if !first.is_empty() {
        run(repo, report, opts, creates(first), progress, outcome).await?;
    }
    let mut surged: Vec<String> = chunk
        .iter()
        .filter_map(|u| u.replaced_by.as_ref().map(|r| r.name.clone()))
        .collect();
    surged.extend(first.iter().map(|r| r.name.clone()));
    if let Some(live) = live.as_deref_mut() {
        live.leaving(chunk.iter().map(|u| u.old.name.clone()));
        live.wait_ready(&surged, progress).await?;
        // the step's old nodes go down together (that is what the budget allows), so they are
        // drained at once; disruption budgets still pace the evictions
        let live = &*live;
        let names: Vec<String> = chunk.iter().map(|u| u.replacement().name).collect();
        let outs = chunk.iter().zip(&names).map(|(u, replacement)| {
            let ready = surged.contains(replacement).then_some(replacement.as_str());
            live.take_out(&u.old, step.role, ready, progress)
        });
        for result in futures::future::join_all(outs).await {
            result?;
        }
    }
    let deletes = chunk
        .iter()
        .map(|u| Change::Delete {
            old: u.old.clone(),
            reason: "replaced by a rolling update".into(),
        })
        .collect();
    run(repo, report, opts, deletes, progress, outcome).await?;
    if !later.is_empty() {
        run(repo, report, opts, creates(later), progress, outcome).await?;
    }
    if let Some(live) = live {
        let later: Vec<String> = later.iter().map(|r| r.name.clone()).collect();
        live.wait_ready(&later, progress).await?;
        let names: Vec<&str> = chunk.iter().map(|u| u.old.name.as_str()).collect();
        live.validate(&format!("after replacing {}", names.join(", ")), progress)
            .await?;
    }
    Ok(())
}

/// Apply `changes` as a plan of their own (journal, retries, progress, token refresh).
pub(super) async fn run(
    repo: &Repo,
    report: &PlanReport,
    opts: &RollOptions,
    changes: Vec<Change>,
    progress: &Progress,
    outcome: &mut RollOutcome,
) -> anyhow::Result<()> {
    let creating = changes.iter().any(|c| matches!(c, Change::Create(_)));
    let step = PlanReport {
        cluster: report.cluster.clone(),
        generation: report.generation,
        config: report.config.clone(),
        cloud: report.cloud.clone(),
        plan: Plan {
            changes,
            unchanged: 0,
            needs_update: Vec::new(),
            ..report.plan.clone()
        },
        renderer: if creating {
            report.renderer.clone()
        } else {
            None
        },
    };
    let mut apply_opts = opts.apply.clone();
    // the old instances were taken out of the cluster by the step (or not, --cloudonly)
    apply_opts.cloud_only = true;
    if !creating {
        apply_opts.asset_check = None;
    }
    let done = apply(repo, step, &apply_opts, progress).await?;
    outcome
        .created
        .extend(done.created.into_iter().map(|i| (i.name, i.id)));
    outcome.deleted += done.deleted;
    Ok(())
}

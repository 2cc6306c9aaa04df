//! `get instances`: what the cloud holds for a cluster, each with its status against the spec —
//! and the instances the spec wants that the cloud does not hold.

use serde::Serialize;

use kprov_providers::Instance;

use crate::plan::{desired, diff, Change};
use crate::spec::ClusterConfig;

/// An instance's status against the spec (kops' `get instances` STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Running, made with the current spec.
    Ready,
    /// Running, but made with an older spec: `kprov rolling-update cluster` replaces it.
    NeedsUpdate,
    /// Held by the cloud but not running (starting, stopped, failed).
    NotReady,
    /// In the spec, not in the cloud: `kprov update cluster --yes` creates it.
    Missing,
}

impl Status {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "Ready",
            Status::NeedsUpdate => "NeedsUpdate",
            Status::NotReady => "NotReady",
            Status::Missing => "Missing",
        }
    }
}

/// One row of `get instances`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// The instance (a `Missing` one: the desired name and id, no state or address).
    #[serde(flatten)]
    pub instance: Instance,
    /// Its status against the spec.
    pub status: Status,
    /// For `NeedsUpdate`: what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Status of every instance in `observed` against `config`, plus a `Missing` row for each
/// desired instance the cloud does not hold; sorted by name. The same diff as `update`'s plan
/// decides. Readiness here is the cloud's view (running or not), not the Kubernetes Node's.
pub fn statuses(config: &ClusterConfig, observed: &[Instance]) -> Vec<InstanceStatus> {
    let plan = diff(&desired(config), observed);
    let mut rows: Vec<InstanceStatus> = observed
        .iter()
        .map(|i| {
            let outdated = plan.needs_update.iter().find(|u| u.old.id == i.id);
            let deleted = plan.changes.iter().find_map(|c| match c {
                Change::Delete { old, reason } if old.id == i.id => Some(reason.clone()),
                _ => None,
            });
            let (status, reason) = match (outdated, deleted) {
                (Some(u), _) => (
                    Status::NeedsUpdate,
                    Some(match &u.replaced_by {
                        Some(r) => format!(
                            "{}; replaced by {}, to be drained and deleted",
                            u.what, r.name
                        ),
                        None => u.what.to_string(),
                    }),
                ),
                (None, Some(why)) => (
                    Status::NeedsUpdate,
                    Some(format!("{why}: `kprov update cluster --yes` deletes it")),
                ),
                _ if i.state.eq_ignore_ascii_case("running") => (Status::Ready, None),
                _ => (Status::NotReady, None),
            };
            InstanceStatus {
                instance: i.clone(),
                status,
                reason,
            }
        })
        .collect();
    for c in &plan.changes {
        if let Change::Create(r) = c {
            rows.push(InstanceStatus {
                instance: Instance {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    state: "-".into(),
                    address: None,
                    tags: r.tags.clone(),
                },
                status: Status::Missing,
                reason: None,
            });
        }
    }
    rows.sort_by(|a, b| {
        a.instance
            .name
            .cmp(&b.instance.name)
            .then(a.instance.id.cmp(&b.instance.id))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::demo;

    fn held(config: &ClusterConfig) -> Vec<Instance> {
        desired(config)
            .instances
            .iter()
            .enumerate()
            .map(|(n, r)| Instance {
                id: format!("vm-{n}"),
                name: r.name.clone(),
                state: "Running".into(),
                address: Some(format!("10.0.0.{n}")),
                tags: r.tags.clone(),
            })
            .collect()
    }

    #[test]
    fn every_status_from_one_spec_change() {
        let before = demo(2, "{cpu: 16, memory: 64Gi}");
        let mut seen = held(&before);
        seen[1].state = "Starting".into();
        seen.remove(2); // demo-gpu-1 gone from the cloud
        let mut after = demo(3, "{cpu: 16, memory: 64Gi}");
        after.groups[0].spec.size = Some(crate::spec::Size {
            cpu: 8,
            memory: "16Gi".into(),
        });
        let rows = statuses(&after, &seen);
        let got: Vec<(&str, Status)> = rows
            .iter()
            .map(|r| (r.instance.name.as_str(), r.status))
            .collect();
        assert_eq!(
            got,
            [
                ("demo-control-plane-0", Status::NeedsUpdate),
                ("demo-gpu-0", Status::NotReady),
                ("demo-gpu-1", Status::Missing),
                ("demo-gpu-2", Status::Missing),
            ]
        );
        assert!(rows[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("machine changed")));
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["status"], "NeedsUpdate");
        assert_eq!(json["name"], "demo-control-plane-0");
    }
}

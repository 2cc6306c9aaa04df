//! The controllers that act after every change — kubelet (mirror pods), the DaemonSet
//! controller, the ReplicaSet controller, the scheduler (spreading a Deployment's pods over
//! Ready, schedulable workers) — plus PodDisruptionBudget status and the timeline samples.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::objects::{self as o, PodKind};
use super::select::selects;
use super::state::State;
use super::Sample;

impl State {
    /// Run the controllers until nothing changes: kubelets' mirror pods and the DaemonSets' pods
    /// on every node still reporting, the ReplicaSets' missing pods, and the scheduler.
    pub fn reconcile(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let node = self.nodes[&name].clone();
            if o::node_ready(&node) == "Unknown" {
                continue;
            }
            if o::is_control_plane(&node) {
                for c in o::STATIC_PODS {
                    let key = ("kube-system".to_string(), format!("{c}-{name}"));
                    if !self.pods.contains_key(&key) {
                        let pod = o::new_pod(&key.0, &key.1, &PodKind::Mirror(c), Some(&node));
                        self.insert_pod(pod);
                    }
                }
            }
            for (ns, ds) in [o::KUBE_PROXY, o::CNI] {
                let has = self.pods.values().any(|p| {
                    o::node_of(p) == Some(&name) && o::controller_of(p) == Some(("DaemonSet", ds))
                });
                if !has {
                    let pod_name = self.fresh_pod_name(ns, ds);
                    let pod = o::new_pod(ns, &pod_name, &PodKind::DaemonSet((ns, ds)), Some(&node));
                    self.insert_pod(pod);
                }
            }
        }
        let deployments: Vec<_> = self
            .deployments
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        for ((ns, name), d) in deployments {
            let rs = format!("{name}-{}", d.hash);
            let have = self
                .pods
                .iter()
                .filter(|((pns, _), p)| {
                    *pns == ns && o::controller_of(p) == Some(("ReplicaSet", &rs))
                })
                .count();
            for _ in have..d.replicas as usize {
                let pod_name = self.fresh_pod_name(&ns, &rs);
                let kind = PodKind::ReplicaSet {
                    rs: rs.clone(),
                    app: name.clone(),
                    hash: d.hash.clone(),
                    empty_dir: d.empty_dir,
                };
                let pod = o::new_pod(&ns, &pod_name, &kind, None);
                self.insert_pod(pod);
            }
        }
        self.schedule();
    }

    /// Bind every unscheduled pod to the eligible worker with the fewest pods of its app (then
    /// the fewest pods, then by name); a pod no node can take stays Pending, Unschedulable.
    pub fn schedule(&mut self) {
        let pending: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, p)| o::node_of(p).is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in pending {
            let app = self.pods[&key]
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app").cloned());
            let count = |node: &str, same_app: bool| {
                self.pods
                    .values()
                    .filter(|p| o::node_of(p) == Some(node))
                    .filter(|p| {
                        !same_app
                            || p.metadata.labels.as_ref().and_then(|l| l.get("app")) == app.as_ref()
                    })
                    .count()
            };
            let best = self
                .nodes
                .iter()
                .filter(|(_, n)| o::schedulable_worker(n))
                .min_by_key(|(name, _)| (count(name, true), count(name, false), (*name).clone()))
                .map(|(_, n)| n.clone());
            let mut pod = self.pods[&key].clone();
            match best {
                Some(node) => {
                    o::bind(&mut pod, &node);
                    self.pods.remove(&key);
                    self.insert_pod(pod);
                }
                None => {
                    let msg = format!(
                        "0/{} nodes are available: no Ready, schedulable worker.",
                        self.nodes.len()
                    );
                    let scheduled = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
                    if scheduled.is_none() {
                        o::unschedulable(&mut pod, &msg);
                        self.stamp(&mut pod.metadata);
                        self.pods.insert(key, pod);
                    }
                }
            }
        }
    }

    /// A PodDisruptionBudget's status computed from the pods now.
    pub fn pdb_status(&self, pdb: &PodDisruptionBudget) -> PodDisruptionBudgetStatus {
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let spec = pdb.spec.clone().unwrap_or_default();
        let sel = spec.selector.unwrap_or_default();
        let selected: Vec<&Pod> = self
            .pods
            .iter()
            .filter(|((pns, _), p)| *pns == ns && selects(&sel, p.metadata.labels.as_ref()))
            .map(|(_, p)| p)
            .collect();
        let expected = i32::try_from(selected.len()).unwrap_or(i32::MAX);
        let healthy =
            i32::try_from(selected.iter().filter(|p| o::pod_ready(p)).count()).unwrap_or(i32::MAX);
        let scaled = |v: &IntOrString, round_up: bool| match v {
            IntOrString::Int(n) => *n,
            IntOrString::String(s) => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
                let x = i64::from(expected) * pct;
                let r = if round_up { (x + 99) / 100 } else { x / 100 };
                i32::try_from(r).unwrap_or(i32::MAX)
            }
        };
        let desired = match (&spec.min_available, &spec.max_unavailable) {
            (Some(min), _) => scaled(min, true),
            (None, Some(max)) => (expected - scaled(max, true)).max(0),
            (None, None) => 1,
        };
        let allowed = (healthy - desired).max(0);
        PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: allowed,
            expected_pods: expected,
            observed_generation: pdb.metadata.generation,
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: if allowed > 0 { "True" } else { "False" }.into(),
                reason: if allowed > 0 {
                    "SufficientPods"
                } else {
                    "InsufficientPods"
                }
                .into(),
                message: String::new(),
                last_transition_time: pdb
                    .metadata
                    .creation_timestamp
                    .clone()
                    .unwrap_or_else(o::now),
                observed_generation: pdb.metadata.generation,
            }]),
            ..PodDisruptionBudgetStatus::default()
        }
    }

    /// Append a sample if anything changed (the resourceVersion moved) since the last one.
    pub fn sample(&mut self) {
        if !self.changed_since_sample() {
            return;
        }
        let ready = |n: &&Node| o::node_ready(n) == "True";
        let ready_workers = self
            .nodes
            .values()
            .filter(ready)
            .filter(|n| !o::is_control_plane(n) && !o::cordoned(n))
            .count();
        let ready_control_planes = self
            .nodes
            .values()
            .filter(ready)
            .filter(|n| o::is_control_plane(n))
            .count();
        let mut ready_pods = BTreeMap::new();
        for ((ns, name), d) in &self.deployments {
            let rs = format!("{name}-{}", d.hash);
            let n = self
                .pods
                .iter()
                .filter(|((pns, _), p)| {
                    pns == ns && o::controller_of(p) == Some(("ReplicaSet", &rs)) && o::pod_ready(p)
                })
                .count();
            *ready_pods.entry(name.clone()).or_insert(0) += n;
        }
        self.timeline.push(Sample {
            at: Instant::now(),
            ready_workers,
            ready_control_planes,
            ready_pods,
        });
    }
}

//! The objects kubelet, kubeadm and the controllers would create, built from k8s-openapi types:
//! the names and constants they share, metadata, PodDisruptionBudgets; Nodes are in `nodes`,
//! pods in `pods` (both re-exported here).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub(crate) use super::nodes::*;
pub(crate) use super::pods::*;

/// The Kubernetes version the stand-in reports (API server, kubelets, static pods).
pub(crate) const K8S_VERSION: &str = "v1.33.0";
/// The control-plane role label (and taint key).
pub(crate) const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
/// kubelet's taint until the node is Ready.
pub(crate) const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The node lifecycle controller's taint for a node whose kubelet stopped posting status.
pub(crate) const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint that mirrors `spec.unschedulable`.
pub(crate) const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The CNI DaemonSet every node runs (flannel, in its own namespace).
pub(crate) const CNI: (&str, &str) = ("kube-flannel", "kube-flannel-ds");
/// kube-proxy's DaemonSet.
pub(crate) const KUBE_PROXY: (&str, &str) = ("kube-system", "kube-proxy");
/// The static pods kubeadm writes on a control plane.
pub(crate) const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Now, as a `metav1.Time`.
pub(crate) fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::new(secs, nanos).unwrap_or_default())
}

/// Metadata for a new object (uid, creationTimestamp; the store sets resourceVersion).
pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        uid: Some(uuid::Uuid::new_v4().to_string()),
        creation_timestamp: Some(now()),
        ..ObjectMeta::default()
    }
}

pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        ..Taint::default()
    }
}

pub(crate) fn toleration(
    key: Option<&str>,
    effect: Option<&str>,
    seconds: Option<i64>,
) -> Toleration {
    Toleration {
        key: key.map(Into::into),
        operator: Some("Exists".into()),
        effect: effect.map(Into::into),
        toleration_seconds: seconds,
        ..Toleration::default()
    }
}

/// A policy/v1 PodDisruptionBudget `ns/name` with `minAvailable` selecting `app=APP`.
pub(crate) fn new_pdb(ns: &str, name: &str, app: &str, min_available: i32) -> PodDisruptionBudget {
    let mut m = meta(name, Some(ns));
    m.generation = Some(1);
    PodDisruptionBudget {
        metadata: m,
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(map(&[("app", app)])),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

//! `validate cluster`'s checks, kops-style: every instance the cloud holds is a registered,
//! Ready Node; no Node has an unexpected taint or `NetworkUnavailable`; every control plane
//! runs Ready kube-apiserver, kube-controller-manager, kube-scheduler and etcd pods; and every
//! `kube-system` pod and every system-critical pod is Ready. [`evaluate`] decides from the
//! objects (pure, unit-tested); [`validate`] reads them.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;

use kprov_providers::Role;

use super::K8sError;

/// An instance the cloud holds for the cluster, which must be a Node of the same name.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Instance (and host, and Node) name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its instance group.
    pub group: String,
}

/// One Node as validation saw it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// `control-plane` or `node`.
    pub role: String,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
}

/// Something that makes the cluster invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `Machine`, `Node` or `Pod`.
    pub kind: &'static str,
    /// The object (`namespace/name` for pods).
    pub name: String,
    /// What is wrong with it.
    pub message: String,
}

/// The result of one validation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    /// Every Node.
    pub nodes: Vec<NodeRow>,
    /// What is wrong; empty when the cluster is valid.
    pub failures: Vec<Failure>,
}

impl Validation {
    /// No failures.
    pub fn is_valid(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The control-plane components (kubeadm's static pods, label `component`).
pub const CONTROL_PLANE_COMPONENTS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// Taints a Node may carry in a valid cluster: the control-plane taint on control planes.
const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane";

/// Does the Node have condition `kind` with status `True`?
pub fn condition(node: &Node, kind: &str) -> Option<bool> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status == "True")
}

/// Is the pod Ready (condition `Ready` True)?
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn is_control_plane(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(CONTROL_PLANE_TAINT))
}

/// Decide whether the cluster is valid from its Nodes and pods and the machines of the cloud.
pub fn evaluate(machines: &[Machine], nodes: &[Node], pods: &[Pod]) -> Validation {
    let mut v = Validation::default();
    let fail = |v: &mut Validation, kind, name: &str, message: String| {
        v.failures.push(Failure {
            kind,
            name: name.to_string(),
            message,
        })
    };
    let node_named = |n: &str| nodes.iter().find(|x| x.metadata.name.as_deref() == Some(n));
    for m in machines {
        if node_named(&m.name).is_none() {
            fail(
                &mut v,
                "Machine",
                &m.name,
                format!(
                    "machine {} (instance group {}) has not joined the cluster: no Node of that name",
                    m.name, m.group
                ),
            );
        }
    }
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let machine = machines.iter().find(|m| m.name == name);
        let cp = machine.map_or_else(|| is_control_plane(node), |m| m.role == Role::ControlPlane);
        let ready = condition(node, "Ready") == Some(true);
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        v.nodes.push(NodeRow {
            name: name.clone(),
            role: if cp { "control-plane" } else { "node" }.into(),
            ready,
            unschedulable,
        });
        if machine.is_none() {
            fail(&mut v, "Node", &name, format!("node {name} has no instance in the cloud: delete it (`kubectl delete node {name}`) if its machine is gone"));
        }
        if !ready {
            fail(&mut v, "Node", &name, format!("node {name} is not Ready"));
        }
        if condition(node, "NetworkUnavailable") == Some(true) {
            fail(
                &mut v,
                "Node",
                &name,
                format!("node {name} has NetworkUnavailable: the CNI is not running on it"),
            );
        }
        for t in node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
        {
            // the control-plane taint on control planes; the cordon taint on a cordoned node
            // (a drain in progress, which a re-run of the roll finishes)
            let expected = (cp && t.key == CONTROL_PLANE_TAINT)
                || (unschedulable && t.key == "node.kubernetes.io/unschedulable");
            if !expected {
                fail(
                    &mut v,
                    "Node",
                    &name,
                    format!("node {name} has unexpected taint {}:{}", t.key, t.effect),
                );
            }
        }
        if cp {
            for component in CONTROL_PLANE_COMPONENTS {
                let found = pods.iter().find(|p| {
                    p.metadata.namespace.as_deref() == Some("kube-system")
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            == Some(name.as_str())
                        && p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("component"))
                            .map(String::as_str)
                            == Some(component)
                });
                match found {
                    None => fail(
                        &mut v,
                        "Node",
                        &name,
                        format!("control plane {name} runs no {component} pod"),
                    ),
                    Some(p) if !pod_ready(p) => fail(
                        &mut v,
                        "Pod",
                        &pod_name(p),
                        format!("{component} on control plane {name} is not Ready"),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    for p in pods {
        let system = p.metadata.namespace.as_deref() == Some("kube-system")
            || p.spec
                .as_ref()
                .and_then(|s| s.priority_class_name.as_deref())
                .is_some_and(|c| c == "system-cluster-critical" || c == "system-node-critical");
        let is_cp_component = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("component"))
            .is_some_and(|c| CONTROL_PLANE_COMPONENTS.contains(&c.as_str()));
        if system && !is_cp_component && pod_phase(p) != "Succeeded" && !pod_ready(p) {
            let on = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("no node");
            fail(
                &mut v,
                "Pod",
                &pod_name(p),
                format!(
                    "system pod {} on {on} is not Ready (phase {})",
                    pod_name(p),
                    if pod_phase(p).is_empty() {
                        "unknown"
                    } else {
                        pod_phase(p)
                    }
                ),
            );
        }
    }
    v
}

/// Read the Nodes and pods through `client` and [`evaluate`] them against `machines`, leaving
/// out the Nodes named in `leaving` (being taken out of the cluster by a rolling update).
pub async fn validate(
    client: &kube::Client,
    machines: &[Machine],
    leaving: &std::collections::BTreeSet<String>,
) -> Result<Validation, K8sError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| K8sError::api("listing Nodes", e))?
        .items
        .into_iter()
        .filter(|n| {
            !n.metadata
                .name
                .as_ref()
                .is_some_and(|n| leaving.contains(n))
        })
        .collect::<Vec<_>>();
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| K8sError::api("listing pods", e))?
        .items;
    Ok(evaluate(machines, &nodes, &pods))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodCondition, PodSpec, PodStatus, Taint,
    };
    use std::collections::BTreeMap;

    fn node(name: &str, cp: bool, ready: bool) -> Node {
        let mut labels = BTreeMap::new();
        if cp {
            labels.insert(CONTROL_PLANE_TAINT.to_string(), String::new());
        }
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: cp.then(|| {
                    vec![Taint {
                        key: CONTROL_PLANE_TAINT.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(ns: &str, name: &str, node: &str, component: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: component
                    .map(|c| BTreeMap::from([("component".to_string(), c.to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn machine(name: &str, role: Role) -> Machine {
        Machine {
            name: name.into(),
            role,
            group: "g".into(),
        }
    }

    fn healthy() -> (Vec<Machine>, Vec<Node>, Vec<Pod>) {
        let machines = vec![
            machine("cp-0", Role::ControlPlane),
            machine("w-0", Role::Node),
        ];
        let nodes = vec![node("cp-0", true, true), node("w-0", false, true)];
        let mut pods: Vec<Pod> = CONTROL_PLANE_COMPONENTS
            .iter()
            .map(|c| pod("kube-system", &format!("{c}-cp-0"), "cp-0", Some(c), true))
            .collect();
        pods.push(pod("kube-system", "kube-proxy-abc", "w-0", None, true));
        pods.push(pod("default", "web-1", "w-0", None, false));
        (machines, nodes, pods)
    }

    #[test]
    fn a_healthy_cluster_is_valid() {
        let (m, n, p) = healthy();
        let v = evaluate(&m, &n, &p);
        assert!(v.is_valid(), "{:?}", v.failures);
        assert_eq!(v.nodes.len(), 2);
        assert_eq!(v.nodes[0].role, "control-plane");
    }

    #[test]
    fn each_kind_of_failure_names_its_object() {
        let (mut m, mut n, mut p) = healthy();
        m.push(machine("w-1", Role::Node));
        n[1].status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "True".into(),
                ..Default::default()
            });
        n[1].spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        p.retain(|x| x.metadata.name.as_deref() != Some("etcd-cp-0"));
        p[0].status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        p[3].status.as_mut().unwrap().conditions = None;
        let v = evaluate(&m, &n, &p);
        let got: Vec<(&str, &str)> = v
            .failures
            .iter()
            .map(|f| (f.kind, f.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Machine", "w-1"),
                ("Pod", "kube-system/kube-apiserver-cp-0"),
                ("Node", "cp-0"),
                ("Node", "w-0"),
                ("Node", "w-0"),
                ("Pod", "kube-system/kube-proxy-abc"),
            ],
            "{:#?}",
            v.failures
        );
        assert!(v.failures[2].message.contains("runs no etcd pod"));
        assert!(v.failures[4]
            .message
            .contains("unexpected taint node.kubernetes.io/unschedulable"));
    }

    #[test]
    fn a_node_without_a_machine_and_a_not_ready_node_fail() {
        let (m, mut n, p) = healthy();
        n.push(node("old-0", false, false));
        let v = evaluate(&m, &n, &p);
        assert_eq!(v.failures.len(), 2, "{:?}", v.failures);
        assert!(v.failures.iter().all(|f| f.name == "old-0"));
    }
}

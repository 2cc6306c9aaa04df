//! Nodes as kubelet registers them with kubeadm's labels, annotations and taints, and the
//! condition and taint changes kubelet and the node lifecycle controller make (NotReady →
//! Ready, Unknown when the kubelet stops reporting, the unschedulable taint of a cordon).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::objects::{
    map, meta, now, taint, CONTROL_PLANE, K8S_VERSION, NOT_READY, UNREACHABLE, UNSCHEDULABLE,
};

/// A loopback address for node number `index` (1-based; 127.0.1.2, 127.0.1.3, …): data only,
/// nothing listens there.
pub(crate) fn node_ip(index: usize) -> String {
    format!("127.0.{}.{}", 1 + index / 254, 1 + index % 254)
}

/// A Node as kubelet registers it with kubeadm's labels and taints: NotReady (no CNI yet).
pub(crate) fn new_node(name: &str, control_plane: bool, index: usize) -> Node {
    let mut labels = map(&[
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
    ]);
    let mut taints = vec![taint(NOT_READY, "NoSchedule")];
    if control_plane {
        labels.insert(CONTROL_PLANE.into(), String::new());
        labels.insert(
            "node.kubernetes.io/exclude-from-external-load-balancers".into(),
            String::new(),
        );
        taints.insert(0, taint(CONTROL_PLANE, "NoSchedule"));
    }
    let mut m = meta(name, None);
    m.labels = Some(labels);
    m.annotations = Some(map(&[
        (
            "kubeadm.alpha.kubernetes.io/cri-socket",
            "unix:///var/run/containerd/containerd.sock",
        ),
        ("node.alpha.kubernetes.io/ttl", "0"),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true",
        ),
    ]));
    let cidr = format!("10.244.{}.0/24", index % 256);
    let q = |s: &str| Quantity(s.to_string());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", q("2")),
        ("memory", q("4010836Ki")),
        ("pods", q("110")),
        ("ephemeral-storage", q("20470Mi")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let machine = uuid::Uuid::new_v4().simple().to_string();
    let mut node = Node {
        metadata: m,
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.clone()),
            pod_cidrs: Some(vec![cidr]),
            taints: Some(taints),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: node_ip(index),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: uuid::Uuid::new_v4().to_string(),
                container_runtime_version: "containerd://1.7.24".into(),
                kernel_version: "6.1.0-28-amd64".into(),
                kube_proxy_version: K8S_VERSION.into(),
                kubelet_version: K8S_VERSION.into(),
                machine_id: machine.clone(),
                operating_system: "linux".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                system_uuid: machine,
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    };
    set_node_ready(&mut node, "False");
    node
}

/// The Ready condition's status: `True`, `False` or `Unknown`.
pub(crate) fn node_ready(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str())
}

/// Is it a control plane (kubeadm's role label)?
pub(crate) fn is_control_plane(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(CONTROL_PLANE))
}

/// `spec.unschedulable` (cordoned).
pub(crate) fn cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn taints_mut(node: &mut Node) -> &mut Vec<Taint> {
    node.spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new)
}

fn set_taint(node: &mut Node, key: &str, effect: &str, on: bool) {
    let taints = taints_mut(node);
    let has = taints.iter().any(|t| t.key == key && t.effect == effect);
    if on && !has {
        let mut t = taint(key, effect);
        if effect == "NoExecute" {
            t.time_added = Some(now());
        }
        taints.push(t);
    } else if !on {
        taints.retain(|t| !(t.key == key && t.effect == effect));
    }
    if taints.is_empty() {
        node.spec.get_or_insert_with(Default::default).taints = None;
    }
}

/// Keep the `node.kubernetes.io/unschedulable:NoSchedule` taint in step with
/// `spec.unschedulable`, as the node lifecycle controller does.
pub(crate) fn sync_unschedulable_taint(node: &mut Node) {
    let on = cordoned(node);
    set_taint(node, UNSCHEDULABLE, "NoSchedule", on);
}

/// Set the Ready condition (and the pressure conditions) to `status`, with kubelet's (or, for
/// `Unknown`, the node lifecycle controller's) reason, message and taints.
pub(crate) fn set_node_ready(node: &mut Node, status: &str) {
    let t = now();
    let (reason, message) = match status {
        "True" => ("KubeletReady", "kubelet is posting ready status"),
        "False" => (
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not \
             initialized",
        ),
        _ => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
    };
    let pressure = |ty: &str, ok_reason: &str| NodeCondition {
        type_: ty.into(),
        status: if status == "Unknown" {
            "Unknown"
        } else {
            "False"
        }
        .into(),
        reason: Some(
            if status == "Unknown" {
                reason
            } else {
                ok_reason
            }
            .into(),
        ),
        message: Some(if status == "Unknown" { message } else { "" }.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
    };
    let conditions = vec![
        pressure("MemoryPressure", "KubeletHasSufficientMemory"),
        pressure("DiskPressure", "KubeletHasNoDiskPressure"),
        pressure("PIDPressure", "KubeletHasSufficientPID"),
        NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
        },
    ];
    node.status.get_or_insert_with(Default::default).conditions = Some(conditions);
    set_taint(node, NOT_READY, "NoSchedule", status == "False");
    set_taint(node, UNREACHABLE, "NoSchedule", status == "Unknown");
    set_taint(node, UNREACHABLE, "NoExecute", status == "Unknown");
}

/// Can the scheduler put a Deployment's pod here: a Ready, uncordoned worker with no
/// NoSchedule/NoExecute taint.
pub(crate) fn schedulable_worker(node: &Node) -> bool {
    node_ready(node) == "True"
        && !cordoned(node)
        && !is_control_plane(node)
        && node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|ts| ts.iter().all(|t| t.effect == "PreferNoSchedule"))
}

/// The node's InternalIP.
pub(crate) fn internal_ip(node: &Node) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
}

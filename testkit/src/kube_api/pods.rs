//! Pods as kubelet (static-pod mirrors), the DaemonSet controller, the ReplicaSet controller
//! and the scheduler make them, and their readiness.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
    EmptyDirVolumeSource, Node, Pod, PodCondition, PodIP, PodSpec, PodStatus, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::nodes::internal_ip;
use super::objects::{
    map, meta, now, toleration, K8S_VERSION, KUBE_PROXY, NOT_READY, UNREACHABLE, UNSCHEDULABLE,
};

/// Who made a pod.
#[derive(Debug, Clone)]
pub(crate) enum PodKind {
    /// A static pod's mirror (`component`) on a control plane.
    Mirror(&'static str),
    /// A DaemonSet's pod: (namespace, DaemonSet name).
    DaemonSet((&'static str, &'static str)),
    /// A Deployment's pod: ReplicaSet name, app label, pod-template-hash, emptyDir.
    ReplicaSet {
        /// `NAME-HASH`.
        rs: String,
        /// The Deployment's name (label `app`).
        app: String,
        /// `pod-template-hash`.
        hash: String,
        /// Mount an emptyDir volume.
        empty_dir: bool,
    },
    /// No owner.
    Bare,
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A uid that stays the same for one owner name (the DaemonSets and ReplicaSets are not served).
fn owner_uid(kind: &str, ns: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{kind}/{ns}/{name}").as_bytes(),
    )
    .to_string()
}

/// A new pod `ns/name` of `kind`, bound to `node` (name, uid, InternalIP) when given: Pending,
/// not Ready.
pub(crate) fn new_pod(ns: &str, name: &str, kind: &PodKind, node: Option<&Node>) -> Pod {
    let node_name = node.and_then(|n| n.metadata.name.clone());
    let mut m = meta(name, Some(ns));
    let image;
    let mut spec = PodSpec {
        restart_policy: Some("Always".into()),
        scheduler_name: Some("default-scheduler".into()),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    let mut container_name = name.to_string();
    match kind {
        PodKind::Mirror(component) => {
            let node = node.expect("a mirror pod's node");
            let ip = internal_ip(node).unwrap_or_default();
            let nn = node_name.clone().unwrap_or_default();
            m.labels = Some(map(&[("component", component), ("tier", "control-plane")]));
            let hash = &owner_uid("static", ns, name).replace('-', "")[..32];
            let mut ann = map(&[
                ("kubernetes.io/config.hash", hash),
                ("kubernetes.io/config.mirror", hash),
                ("kubernetes.io/config.source", "file"),
            ]);
            match *component {
                "etcd" => ann.insert(
                    "kubeadm.kubernetes.io/etcd.advertise-client-urls".into(),
                    format!("https://{ip}:2379"),
                ),
                "kube-apiserver" => ann.insert(
                    "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint".into(),
                    format!("{ip}:6443"),
                ),
                _ => None,
            };
            m.annotations = Some(ann);
            let uid = node.metadata.uid.clone().unwrap_or_default();
            m.owner_references = Some(vec![OwnerReference {
                block_owner_deletion: None,
                ..owner("v1", "Node", &nn, &uid)
            }]);
            image = if *component == "etcd" {
                "registry.k8s.io/etcd:3.5.21-0".to_string()
            } else {
                format!("registry.k8s.io/{component}:{K8S_VERSION}")
            };
            container_name = component.to_string();
            spec.host_network = Some(true);
            spec.priority_class_name = Some("system-node-critical".into());
            spec.priority = Some(2_000_001_000);
            spec.tolerations = Some(vec![toleration(None, Some("NoExecute"), None)]);
        }
        PodKind::DaemonSet((_, ds)) => {
            let app = if *ds == KUBE_PROXY.1 {
                map(&[("k8s-app", "kube-proxy")])
            } else {
                map(&[("app", "flannel"), ("k8s-app", "flannel"), ("tier", "node")])
            };
            let mut labels = app;
            labels.insert("controller-revision-hash".into(), "6d8b9c7f54".into());
            labels.insert("pod-template-generation".into(), "1".into());
            m.labels = Some(labels);
            m.owner_references = Some(vec![owner(
                "apps/v1",
                "DaemonSet",
                ds,
                &owner_uid("DaemonSet", ns, ds),
            )]);
            image = if *ds == KUBE_PROXY.1 {
                format!("registry.k8s.io/kube-proxy:{K8S_VERSION}")
            } else {
                "ghcr.io/flannel-io/flannel:v0.26.7".to_string()
            };
            container_name = if *ds == KUBE_PROXY.1 {
                "kube-proxy"
            } else {
                "kube-flannel"
            }
            .into();
            spec.host_network = Some(true);
            spec.priority_class_name = Some("system-node-critical".into());
            spec.priority = Some(2_000_001_000);
            spec.tolerations = Some(vec![
                toleration(None, None, None),
                toleration(Some(NOT_READY), Some("NoExecute"), None),
                toleration(Some(UNREACHABLE), Some("NoExecute"), None),
                toleration(Some(UNSCHEDULABLE), Some("NoSchedule"), None),
            ]);
        }
        PodKind::ReplicaSet {
            rs,
            app,
            hash,
            empty_dir,
        } => {
            m.labels = Some(map(&[("app", app), ("pod-template-hash", hash)]));
            m.generate_name = Some(format!("{rs}-"));
            m.owner_references = Some(vec![owner(
                "apps/v1",
                "ReplicaSet",
                rs,
                &owner_uid("ReplicaSet", ns, rs),
            )]);
            image = "registry.k8s.io/pause:3.10".to_string();
            container_name = app.clone();
            spec.tolerations = Some(vec![
                toleration(Some(NOT_READY), Some("NoExecute"), Some(300)),
                toleration(Some(UNREACHABLE), Some("NoExecute"), Some(300)),
            ]);
            if *empty_dir {
                spec.volumes = Some(vec![Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                }]);
            }
        }
        PodKind::Bare => image = "registry.k8s.io/pause:3.10".to_string(),
    }
    let mounts = spec.volumes.as_ref().map(|vs| {
        vs.iter()
            .map(|v| VolumeMount {
                name: v.name.clone(),
                mount_path: format!("/{}", v.name),
                ..VolumeMount::default()
            })
            .collect()
    });
    spec.containers = vec![Container {
        name: container_name,
        image: Some(image),
        volume_mounts: mounts,
        ..Container::default()
    }];
    let mut pod = Pod {
        metadata: m,
        spec: Some(spec),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some("BestEffort".into()),
            ..PodStatus::default()
        }),
    };
    if let Some(node) = node {
        bind(&mut pod, node);
    }
    pod
}

fn condition(ty: &str, status: bool, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: ty.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        last_transition_time: Some(now()),
        ..PodCondition::default()
    }
}

/// Bind a pod to `node` (as the scheduler does): PodScheduled, containers creating.
pub(crate) fn bind(pod: &mut Pod, node: &Node) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = node.metadata.name.clone();
    let containers = spec.containers.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    status.host_ip = internal_ip(node);
    status.start_time = Some(now());
    status.conditions = Some(vec![
        condition("PodReadyToStartContainers", false, None),
        condition("Initialized", true, None),
        condition("Ready", false, Some("ContainersNotReady")),
        condition("ContainersReady", false, Some("ContainersNotReady")),
        condition("PodScheduled", true, None),
    ]);
    status.container_statuses = Some(
        containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        ..ContainerStateWaiting::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            })
            .collect(),
    );
}

/// A pod no node can take: Pending with PodScheduled False (Unschedulable).
pub(crate) fn unschedulable(pod: &mut Pod, message: &str) {
    let status = pod.status.get_or_insert_with(Default::default);
    let mut c = condition("PodScheduled", false, Some("Unschedulable"));
    c.message = Some(message.into());
    status.conditions = Some(vec![c]);
}

/// Set the pod Ready (Running, containers running and ready, a pod IP) or not Ready (kept
/// Running, as for a pod on a node that stopped reporting).
pub(crate) fn set_pod_ready(pod: &mut Pod, ready: bool, pod_ip: Option<String>) {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let status = pod.status.get_or_insert_with(Default::default);
    let reason = (!ready).then_some("ContainersNotReady");
    status.phase = Some("Running".into());
    status.conditions = Some(vec![
        condition("PodReadyToStartContainers", ready, None),
        condition("Initialized", true, None),
        condition("Ready", ready, reason),
        condition("ContainersReady", ready, reason),
        condition("PodScheduled", true, None),
    ]);
    let ip = if host_network {
        status.host_ip.clone()
    } else {
        pod_ip.or_else(|| status.pod_ip.clone())
    };
    status.pod_ips = ip.clone().map(|ip| vec![PodIP { ip }]);
    status.pod_ip = ip;
    for c in status.container_statuses.iter_mut().flatten() {
        c.ready = ready;
        c.started = Some(true);
        c.container_id = Some(format!("containerd://{}", uuid::Uuid::new_v4().simple()));
        c.image_id = format!("{}@sha256:{:064x}", c.image, c.name.len());
        c.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(now()),
            }),
            ..ContainerState::default()
        });
    }
}

/// Is the pod Ready (its Ready condition True)?
pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's node (`spec.nodeName`).
pub(crate) fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The pod's controller owner reference: (kind, name).
pub(crate) fn controller_of(pod: &Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

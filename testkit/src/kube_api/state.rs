//! The cluster the stand-in serves: its objects, the changes the API and the tests make to them,
//! and the readiness timers those start (the controllers acting after every change are in
//! `controllers`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::objects::{self as o, PodKind};
use super::Sample;

/// A Deployment the model keeps pods for.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    /// Wanted pods.
    pub replicas: u32,
    /// Pods get an emptyDir volume.
    pub empty_dir: bool,
    /// Its ReplicaSet's `pod-template-hash`.
    pub hash: String,
}

/// Something that happens later: a node or pod turns Ready (if it is still the same object).
#[derive(Debug, Clone)]
pub(crate) enum Timer {
    /// kubelet and CNI up on node `name` (uid).
    NodeReady(String, String),
    /// Pod `(ns, name)` (uid) passes its readiness probe.
    PodReady((String, String), String),
}

/// The whole cluster.
#[derive(Debug)]
pub(crate) struct State {
    rv: u64,
    seq: u64,
    registered_count: usize,
    sampled_rv: u64,
    node_ready_after: Duration,
    pod_ready_after: Duration,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// PodDisruptionBudgets by (namespace, name).
    pub pdbs: BTreeMap<(String, String), PodDisruptionBudget>,
    /// Deployments by (namespace, name).
    pub deployments: BTreeMap<(String, String), Deployment>,
    /// Namespaces that exist.
    pub namespaces: BTreeSet<String>,
    /// Samples after every change.
    pub timeline: Vec<Sample>,
    /// Timers to start once the lock is released: (after, what).
    pub timers: Vec<(Duration, Timer)>,
}

/// The base-36-ish alphabet Kubernetes uses for generated name suffixes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn rand_chars(seed: &str, n: usize) -> String {
    let h = Sha256::digest(seed.as_bytes());
    h.iter()
        .take(n)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl State {
    /// An empty cluster with kubeadm's namespaces.
    pub fn new(node_ready_after: Duration, pod_ready_after: Duration) -> State {
        let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
            .into_iter()
            .chain([o::CNI.0])
            .map(str::to_string)
            .collect();
        State {
            rv: 1000,
            seq: 0,
            registered_count: 0,
            sampled_rv: 0,
            node_ready_after,
            pod_ready_after,
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            secrets: BTreeMap::new(),
            pdbs: BTreeMap::new(),
            deployments: BTreeMap::new(),
            namespaces,
            timeline: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// The current resourceVersion (for lists).
    pub fn rv(&self) -> String {
        self.rv.to_string()
    }

    /// Did anything change since the last sample (and note that it is being taken)?
    pub fn changed_since_sample(&mut self) -> bool {
        let changed = self.rv != self.sampled_rv;
        self.sampled_rv = self.rv;
        changed
    }

    /// Give an object the next resourceVersion.
    pub fn stamp(&mut self, m: &mut ObjectMeta) {
        self.rv += 1;
        m.resource_version = Some(self.rv.to_string());
    }

    /// A generated-name suffix of `n` characters (as `generateName` makes).
    pub fn suffix(&mut self, base: &str, n: usize) -> String {
        self.seq += 1;
        rand_chars(&format!("{base}/{}", self.seq), n)
    }

    /// `BASE-XXXXX`, a pod name not taken in `ns`.
    pub fn fresh_pod_name(&mut self, ns: &str, base: &str) -> String {
        loop {
            let name = format!("{base}-{}", self.suffix(base, 5));
            if !self.pods.contains_key(&(ns.to_string(), name.clone())) {
                return name;
            }
        }
    }

    pub fn insert_pod(&mut self, mut pod: Pod) {
        self.stamp(&mut pod.metadata);
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        if o::node_of(&pod).is_some() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            self.timers
                .push((self.pod_ready_after, Timer::PodReady(key.clone(), uid)));
        }
        self.namespaces.insert(key.0.clone());
        self.pods.insert(key, pod);
    }

    /// Register node `name` as kubelet + kubeadm do; false if it exists already — unless it
    /// is lost (Ready=Unknown: its machine went away), when a new machine under that name is
    /// registering: its Node starts again, NotReady until the ready delay.
    pub fn register_node(&mut self, name: &str, control_plane: bool) -> bool {
        if let Some(n) = self.nodes.get(name) {
            if o::node_ready(n) != "Unknown" {
                return false;
            }
            // the lost machine's pods go (the DaemonSet controller and the new kubelet's mirror
            // pods replace them)
            self.nodes.remove(name);
            self.pods.retain(|_, p| o::node_of(p) != Some(name));
        }
        self.registered_count += 1;
        let mut node = o::new_node(name, control_plane, self.registered_count);
        self.stamp(&mut node.metadata);
        let uid = node.metadata.uid.clone().unwrap_or_default();
        self.nodes.insert(name.to_string(), node);
        self.timers
            .push((self.node_ready_after, Timer::NodeReady(name.into(), uid)));
        true
    }

    /// A timer went off.
    pub fn fire(&mut self, timer: &Timer) {
        match timer {
            Timer::NodeReady(name, uid) => {
                let Some(n) = self.nodes.get(name) else {
                    return;
                };
                if n.metadata.uid.as_ref() != Some(uid) || o::node_ready(n) != "False" {
                    return;
                }
                let mut n = n.clone();
                o::set_node_ready(&mut n, "True");
                self.stamp(&mut n.metadata);
                self.nodes.insert(name.clone(), n);
            }
            Timer::PodReady(key, uid) => {
                let Some(p) = self.pods.get(key) else { return };
                let node_ok = o::node_of(p)
                    .and_then(|n| self.nodes.get(n))
                    .is_some_and(|n| o::node_ready(n) != "Unknown");
                if p.metadata.uid.as_ref() != Some(uid) || !node_ok {
                    return;
                }
                let mut p = p.clone();
                let cidr = o::node_of(&p)
                    .and_then(|n| self.nodes.get(n))
                    .and_then(|n| n.spec.as_ref()?.pod_cidr.clone())
                    .unwrap_or_default();
                self.seq += 1;
                let ip = cidr.replace(".0/24", &format!(".{}", 2 + self.seq % 250));
                o::set_pod_ready(&mut p, true, Some(ip));
                self.stamp(&mut p.metadata);
                self.pods.insert(key.clone(), p);
            }
        }
    }

    /// The instance behind node `name` is gone: Ready=Unknown with the unreachable taints, and
    /// its pods not Ready (the node lifecycle controller).
    pub fn mark_lost(&mut self, name: &str) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        if o::node_ready(n) == "Unknown" {
            return;
        }
        let mut n = n.clone();
        o::set_node_ready(&mut n, "Unknown");
        self.stamp(&mut n.metadata);
        self.nodes.insert(name.to_string(), n);
        let keys: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, p)| o::node_of(p) == Some(name) && o::pod_ready(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let mut p = self.pods[&k].clone();
            o::set_pod_ready(&mut p, false, None);
            self.stamp(&mut p.metadata);
            self.pods.insert(k, p);
        }
    }

    /// Delete node `name` and (as the pod garbage collector does) every pod bound to it.
    pub fn delete_node(&mut self, name: &str) -> Option<Node> {
        let node = self.nodes.remove(name)?;
        self.pods.retain(|_, p| o::node_of(p) != Some(name));
        self.rv += 1;
        Some(node)
    }

    /// Delete a pod (at once, no grace period).
    pub fn delete_pod(&mut self, key: &(String, String)) -> Option<Pod> {
        let mut pod = self.pods.remove(key)?;
        pod.metadata.deletion_timestamp = Some(o::now());
        pod.metadata.deletion_grace_period_seconds = Some(0);
        self.stamp(&mut pod.metadata);
        Some(pod)
    }

    /// Add (or change) a Deployment with an optional PodDisruptionBudget.
    pub fn add_deployment(
        &mut self,
        ns: &str,
        name: &str,
        replicas: u32,
        pdb_min_available: Option<i32>,
        empty_dir: bool,
    ) {
        self.namespaces.insert(ns.into());
        let hash = rand_chars(&format!("{ns}/{name}/template"), 10);
        let key = (ns.to_string(), name.to_string());
        self.deployments.insert(
            key.clone(),
            Deployment {
                replicas,
                empty_dir,
                hash,
            },
        );
        match pdb_min_available {
            Some(min) => {
                let mut pdb = o::new_pdb(ns, name, name, min);
                self.stamp(&mut pdb.metadata);
                self.pdbs.insert(key, pdb);
            }
            None => {
                self.pdbs.remove(&key);
            }
        }
    }

    /// A pod without an owner, bound to `node`.
    pub fn add_bare_pod(&mut self, ns: &str, name: &str, node: &str) {
        let mut pod = o::new_pod(ns, name, &PodKind::Bare, self.nodes.get(node));
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        self.insert_pod(pod);
    }
}

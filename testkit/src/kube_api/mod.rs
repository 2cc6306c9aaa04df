//! A Kubernetes API server stand-in for tests where no kube-apiserver can run: the objects and
//! behaviour kprov's drain, validate, bootstrap-token and etcd port-forward code rely on,
//! served as real Kubernetes JSON (k8s-openapi types) over real TLS with client-certificate
//! authentication, so kube-rs talks to it exactly as to a cluster.
//!
//! * **TLS**: rustls (aws-lc-rs provider) on a free 127.0.0.1 port; the serving certificate is
//!   signed by the cluster CA handed in (SANs 127.0.0.1, localhost, `kubernetes.default…`);
//!   client certificates must be signed by that CA (a foreign one fails the handshake; no
//!   certificate gets `401 Unauthorized` for everything but `/version`, `/readyz`, `/livez`,
//!   `/healthz`). HTTP/1.1 only (ALPN `http/1.1`).
//! * **Model**: Nodes registered as kubelet + kubeadm do (labels, taints, NotReady → Ready),
//!   control planes' static-pod mirrors, kube-proxy and flannel DaemonSet pods on every node,
//!   Deployments' ReplicaSet pods spread over Ready, schedulable workers and replaced when
//!   deleted or evicted, PodDisruptionBudgets whose status is computed live, Secrets. A node
//!   whose cloud instance is gone turns Ready=Unknown (with its pods not Ready).
//! * **Endpoints**: `/version`, `/readyz`, `/livez`, `/healthz`; Nodes list/get/patch (merge
//!   and strategic-merge, JSON merge-patch semantics)/delete; Pods list/get/delete; evictions;
//!   PodDisruptionBudgets list/get; Secrets list/create/get/replace/patch/delete; port-forward
//!   over WebSockets (`v4.channel.k8s.io`, see `portforward`). Label selectors (`key`, `!key`,
//!   `=`, `==`, `!=`, `in`, `notin`) and the field selectors real servers support for those
//!   resources. Errors are `Status` objects with the real codes and reasons. Anything else is
//!   a `404` Status.
//! * **Instruments**: every request with the status served ([`KubeApi::requests`]), hanging the
//!   nth request ([`KubeApi::hang_at`]), and a timeline of Ready nodes and pods
//!   ([`KubeApi::timeline`]).
//!
//! Not served (a test using them fails loudly): watches (`?watch=true` is a `400`), JSON patch
//! and server-side apply (`415`), strategic-merge directives (`$patch`…, `400`), graceful
//! deletion (deletes are immediate), DaemonSet/ReplicaSet/Deployment objects themselves,
//! namespaces, RBAC (any CA-signed client may do anything), HTTP/2 and SPDY port-forward.
//!
//! The server runs on a runtime and thread of its own, so it keeps answering while the test's
//! thread blocks on a `kprov` child process; it stops when the [`KubeApi`] drops.

mod controllers;
mod nodes;
mod objects;
mod pods;
mod portforward;
mod routes;
mod secrets;
mod select;
mod server;
mod state;
mod status;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};

use server::{lock, Shared};

/// How the stand-in is set up.
#[derive(Clone)]
pub struct KubeApiOptions {
    /// The cluster CA (PEM): verifies client certificates, signs the serving certificate.
    pub ca_cert_pem: String,
    /// The cluster CA's private key (PEM).
    pub ca_key_pem: String,
    /// From a Node's registration to Ready (kubelet and CNI up).
    pub node_ready_after: Duration,
    /// From a pod's scheduling to Ready.
    pub pod_ready_after: Duration,
}

impl std::fmt::Debug for KubeApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApiOptions")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .field("node_ready_after", &self.node_ready_after)
            .field("pod_ready_after", &self.pod_ready_after)
            .finish()
    }
}

/// Lists the cloud's instances now (for [`KubeApi::watch_cloud`]).
pub type CloudLister =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<CloudInstance>> + Send>> + Send + Sync>;

/// A hook run after a Node registers: `(name, control_plane)` (see [`KubeApi::on_register`]).
pub type RegisterHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// An instance the cloud has: its Node name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInstance {
    /// The Node name its kubelet registers.
    pub name: String,
    /// Is it a control plane?
    pub control_plane: bool,
}

/// A request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// `GET`, `PATCH`…
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (`""` when none).
    pub query: String,
    /// The HTTP status served (`101` for a port-forward upgrade).
    pub status: u16,
}

/// The cluster's readiness after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// Ready, uncordoned worker Nodes.
    pub ready_workers: usize,
    /// Ready control-plane Nodes.
    pub ready_control_planes: usize,
    /// Ready pods per Deployment name.
    pub ready_pods: BTreeMap<String, usize>,
}

/// The running stand-in; stops (server, timers, background tasks) when dropped.
pub struct KubeApi {
    shared: Arc<Shared>,
    port: u16,
    ca_cert_pem: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("url", &self.url()).finish()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl KubeApi {
    /// Start serving on a free 127.0.0.1 port.
    pub async fn start(opts: KubeApiOptions) -> KubeApi {
        let (shared, port) = server::start(&opts);
        KubeApi {
            shared,
            port,
            ca_cert_pem: opts.ca_cert_pem,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Write a kubeconfig (server [`url`](Self::url), CA the cluster CA, the given client
    /// certificate and key, PEM) to `path`, mode 0600.
    pub fn write_kubeconfig(&self, path: &Path, cert_pem: &str, key_pem: &str) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kprov\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: kprov-admin\n  user:\n    \
             client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: \
             kprov-admin@kprov\n  context:\n    cluster: kprov\n    user: kprov-admin\n\
             current-context: kprov-admin@kprov\npreferences: {{}}\n",
            self.url(),
            b64(&self.ca_cert_pem),
            b64(cert_pem),
            b64(key_pem),
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .expect("create the kubeconfig");
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .expect("chmod 0600 the kubeconfig");
        f.write_all(yaml.as_bytes()).expect("write the kubeconfig");
    }

    /// Register Node `name` as kubelet + kubeadm would: labels `kubernetes.io/hostname`,
    /// `kubernetes.io/os=linux` (and, for a control plane, `node-role.kubernetes.io/control-plane`
    /// with its NoSchedule taint), NotReady with the `node.kubernetes.io/not-ready:NoSchedule`
    /// taint, Ready after `node_ready_after`. A control plane gets mirror pods of its static
    /// pods in kube-system (`kube-apiserver-NAME`, `kube-controller-manager-NAME`,
    /// `kube-scheduler-NAME`, `etcd-NAME`); every node gets `kube-proxy-XXXXX` (kube-system)
    /// and `kube-flannel-ds-XXXXX` (kube-flannel) DaemonSet pods. Pods are Ready after
    /// `pod_ready_after`. Nothing happens for an existing name. The registration hooks run on
    /// the calling thread.
    pub fn register_node(&self, name: &str, control_plane: bool) {
        if self.shared.mutate(|s| s.register_node(name, control_plane)) {
            self.shared.run_hooks(&[(name.to_string(), control_plane)]);
        }
    }

    /// Poll `lister` every `interval` on the server's runtime: register a Node (as
    /// [`register_node`](Self::register_node), hooks on a blocking thread of the server's
    /// runtime) for every instance that was not there at the previous poll (a machine made
    /// again under an old name registers again); a Node whose instance has gone from the
    /// cloud turns Ready=Unknown with the unreachable taints and its pods not Ready, as the
    /// node lifecycle controller does — it stays until someone deletes it. A Node deleted while
    /// its instance still exists is not registered again.
    pub fn watch_cloud(&self, lister: CloudLister, interval: Duration) {
        let shared = Arc::clone(&self.shared);
        self.shared.handle.spawn(async move {
            // instances of the previous poll: a name that (re)appears is a new machine whose
            // kubelet registers; one still there whose Node was deleted is not registered again
            let mut present: BTreeSet<String> = BTreeSet::new();
            loop {
                let instances = tokio::select! {
                    v = lister() => v,
                    () = shared.stop.cancelled() => return,
                };
                let now: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
                let registered = shared.mutate(|s| {
                    let mut new = Vec::new();
                    for i in &instances {
                        if !present.contains(&i.name) && s.register_node(&i.name, i.control_plane) {
                            new.push((i.name.clone(), i.control_plane));
                        }
                    }
                    for gone in present.iter().filter(|n| !now.contains(n.as_str())) {
                        s.mark_lost(gone);
                    }
                    new
                });
                present = now;
                if !registered.is_empty() {
                    let sh = Arc::clone(&shared);
                    let _ = tokio::task::spawn_blocking(move || sh.run_hooks(&registered)).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shared.stop.cancelled() => return,
                }
            }
        });
    }

    /// Deployment `namespace/name`: `replicas` pods (ReplicaSet `NAME-HASH`, labels
    /// `app=NAME`) spread over Ready, uncordoned, untainted workers; with `pdb_min_available`, a
    /// policy/v1 PodDisruptionBudget `NAME` (minAvailable, selector `app=NAME`); `empty_dir`
    /// gives the pods an emptyDir volume. The ReplicaSet controller keeps `replicas` pods: a
    /// deleted or evicted pod is replaced at once on an eligible node (Pending, Unschedulable
    /// while there is none) and is Ready `pod_ready_after` after scheduling. Calling it again
    /// for the same name changes replicas and the budget.
    pub fn add_deployment(
        &self,
        namespace: &str,
        name: &str,
        replicas: u32,
        pdb_min_available: Option<i32>,
        empty_dir: bool,
    ) {
        self.shared
            .mutate(|s| s.add_deployment(namespace, name, replicas, pdb_min_available, empty_dir));
    }

    /// A pod without an owner bound to `node` (Ready after `pod_ready_after` if the node exists).
    pub fn add_bare_pod(&self, namespace: &str, name: &str, node: &str) {
        self.shared
            .mutate(|s| s.add_bare_pod(namespace, name, node));
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> Vec<Node> {
        self.shared.read(|s| s.nodes.values().cloned().collect())
    }

    /// Every pod, by namespace and name.
    pub fn pods(&self) -> Vec<Pod> {
        self.shared.read(|s| s.pods.values().cloned().collect())
    }

    /// The Secrets in `namespace`, by name.
    pub fn secrets(&self, namespace: &str) -> Vec<Secret> {
        self.shared.read(|s| {
            s.secrets
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|(_, x)| x.clone())
                .collect()
        })
    }

    /// Every request answered so far, in the order the answers were sent (a `401` included).
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The `n`th request from now (1-based; 0 counts as 1) is not answered — the connection
    /// stays open, nothing is written, nothing is applied — until [`release`](Self::release);
    /// then it is applied and answered (applied even if its client has gone meanwhile).
    pub fn hang_at(&self, n: usize) {
        let mut h = lock(&self.shared.hang);
        h.target = Some(h.arrivals + n.max(1));
    }

    /// Take the API server down (`true`: every new connection is closed unanswered, as when no
    /// control plane runs it) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.shared
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Is a request hanging now?
    pub fn hung(&self) -> bool {
        lock(&self.shared.hang).hanging > 0
    }

    /// Let hanging requests go on, and disarm a [`hang_at`](Self::hang_at) not reached yet.
    pub fn release(&self) {
        let mut h = lock(&self.shared.hang);
        h.target = None;
        h.hanging = 0;
        h.generation += 1;
        self.shared.released.send_replace(h.generation);
    }

    /// Samples taken after every change of the cluster (every change that moved the
    /// resourceVersion: API writes, readiness timers, registrations, lost nodes, controllers):
    /// when, Ready uncordoned workers, Ready control planes, Ready pods per Deployment name.
    /// The first is the empty cluster at start.
    pub fn timeline(&self) -> Vec<Sample> {
        self.shared.read(|s| s.timeline.clone())
    }

    /// A port-forward to pod `namespace/pod` port `port` connects to `to` (a real TCP service
    /// on loopback). A port-forward to a pod that does not exist is a `404`; to a port with no
    /// target (or a target refusing), an error on the port's error channel.
    pub fn forward_pod_port(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        to: std::net::SocketAddr,
    ) {
        lock(&self.shared.forwards).insert((namespace.to_string(), pod.to_string(), port), to);
    }

    /// Run `hook(name, control_plane)` after each Node registration (see
    /// [`register_node`](Self::register_node) and [`watch_cloud`](Self::watch_cloud) for the
    /// thread it runs on) — to start an etcd member for a new control plane, for example.
    pub fn on_register(&self, hook: RegisterHook) {
        lock(&self.shared.hooks).push(hook);
    }
}

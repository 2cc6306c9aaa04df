//! The Kubernetes API server stand-in (`kprov_testkit::kube_api`) driven by the real client
//! kprov uses — kube-rs 5 with k8s-openapi 0.29, configured from the kubeconfig the stand-in
//! writes, over rustls with a client certificate minted by `kprov::pki` from the cluster CA.
//! It proves the stand-in behaves as a real API server does for what kprov relies on: a client
//! without a CA-signed certificate is refused (foreign CA: TLS handshake; none: `401`); Nodes
//! register NotReady with kubelet's taint and turn Ready; `watch_cloud` registers instances
//! (running the hooks) and turns a Node whose instance vanished Ready=Unknown; a cordon through
//! a merge patch adds the unschedulable taint (a strategic-merge uncordon removes it); label and
//! field selectors filter lists; an eviction a PodDisruptionBudget forbids is a `429`
//! TooManyRequests, one it allows deletes the pod and the ReplicaSet controller replaces it on
//! another node, where it turns Ready; `hang_at` holds a request until `release`; Secrets are
//! created (stringData merged into data), refused when they exist, read, filtered by type,
//! patched, replaced (stale resourceVersion refused) and deleted; port-forward carries bytes to
//! a real TCP echo server through two forwards at once, and reports a refused port on its error
//! channel and a missing pod as `404`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kprov::pki::{self, CaPair};
use kprov_testkit::kube_api::{CloudInstance, CloudLister, KubeApi, KubeApiOptions};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running stand-in, its CA, an admin client and the kubeconfig's directory.
struct Fixture {
    api: KubeApi,
    ca: CaPair,
    client: Client,
    dir: tempfile::TempDir,
}

/// A kube client from a kubeconfig written by the stand-in for `cert`/`key`.
async fn client_for(api: &KubeApi, dir: &std::path::Path, cert: &str, key: &str) -> Client {
    let path = dir.join(format!("kubeconfig-{}", rand_name()));
    api.write_kubeconfig(&path, cert, key);
    let kc = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a kube config");
    // kube-rs 5 retries 429/503/504 by default (15 times, backoff from 5 ms doubling up to
    // 1000 s: minutes): a refused eviction is to surface as the 429 it is.
    config.default_retry = false;
    Client::try_from(config).expect("a kube client")
}

fn rand_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn fixture(node_ready_after: Duration, pod_ready_after: Duration) -> Fixture {
    let ca = pki::new_ca("kubernetes").expect("cluster CA");
    let api = KubeApi::start(KubeApiOptions {
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        node_ready_after,
        pod_ready_after,
    })
    .await;
    let (cert, key) = pki::sign_client_cert(
        &ca,
        "kprov-admin",
        &["kubeadm:cluster-admins"],
        Duration::from_secs(3600),
    )
    .expect("client certificate");
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&api, dir.path(), &cert, &key).await;
    Fixture {
        api,
        ca,
        client,
        dir,
    }
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn taints(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|i| i.meta().name.clone().unwrap())
        .collect();
    v.sort();
    v
}

/// The API error's code and reason, or a panic naming what succeeded.
fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, kube::core::Status) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), *s),
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_ca_signed_certificate_are_refused() {
    let f = fixture(Duration::ZERO, Duration::ZERO).await;
    let nodes: Api<Node> = Api::all(f.client.clone());
    assert!(nodes.list(&ListParams::default()).await.is_ok());
    let v = f.client.apiserver_version().await.expect("version");
    assert!(v.git_version.starts_with("v1.33"), "{v:?}");

    // A certificate from another CA: the TLS handshake fails, nothing is served.
    let other = pki::new_ca("someone-else").unwrap();
    let (cert, key) =
        pki::sign_client_cert(&other, "mallory", &[], Duration::from_secs(3600)).unwrap();
    let foreign = client_for(&f.api, f.dir.path(), &cert, &key).await;
    let served = f.api.requests().len();
    let err = Api::<Node>::all(foreign).list(&ListParams::default()).await;
    assert!(
        matches!(&err, Err(e) if !matches!(e, kube::Error::Api(_))),
        "a foreign certificate must fail the handshake: {err:?}"
    );
    assert_eq!(f.api.requests().len(), served, "nothing served to it");

    // No certificate at all: 401 Unauthorized, except the public version endpoint.
    let ca_der = pem::parse(&f.ca.cert_pem).unwrap().contents().to_vec();
    let mut config = kube::Config::new(f.api.url().parse().unwrap());
    config.root_cert = Some(vec![ca_der]);
    let anonymous = Client::try_from(config).unwrap();
    let (code, reason, _) = api_error(
        Api::<Node>::all(anonymous.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    assert!(anonymous.apiserver_version().await.is_ok());
    let last = f.api.requests();
    assert!(last
        .iter()
        .any(|r| r.path == "/api/v1/nodes" && r.status == 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_not_ready_turn_ready_and_a_cordon_taints_them() {
    let f = fixture(Duration::from_millis(400), Duration::from_millis(100)).await;
    f.api.register_node("cp1", true);
    f.api.register_node("w1", false);
    f.api.register_node("w1", false); // idempotent
    let nodes: Api<Node> = Api::all(f.client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["cp1", "w1"]);
    for n in &list.items {
        assert_eq!(ready(n), "False", "registered NotReady");
        assert!(taints(n).contains(&"node.kubernetes.io/not-ready:NoSchedule".into()));
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(
            labels["kubernetes.io/hostname"],
            *n.metadata.name.as_ref().unwrap()
        );
    }
    let cps = nodes
        .list(&ListParams::default().labels("node-role.kubernetes.io/control-plane"))
        .await
        .unwrap();
    assert_eq!(names(&cps.items), ["cp1"]);
    assert!(
        taints(&cps.items[0]).contains(&"node-role.kubernetes.io/control-plane:NoSchedule".into())
    );
    let workers = nodes
        .list(&ListParams::default().labels("!node-role.kubernetes.io/control-plane"))
        .await
        .unwrap();
    assert_eq!(names(&workers.items), ["w1"]);
    let by_name = nodes
        .list(&ListParams::default().fields("metadata.name=cp1"))
        .await
        .unwrap();
    assert_eq!(names(&by_name.items), ["cp1"]);

    let w1 = eventually("w1 Ready", 10, || async {
        let n = nodes.get("w1").await.unwrap();
        (ready(&n) == "True").then_some(n)
    })
    .await;
    assert!(!taints(&w1).iter().any(|t| t.contains("not-ready")));

    // The control plane's mirror pods and every node's DaemonSet pods.
    let system: Api<Pod> = Api::namespaced(f.client.clone(), "kube-system");
    let mirrors = system
        .list(&ListParams::default().labels("tier=control-plane"))
        .await
        .unwrap();
    assert_eq!(
        names(&mirrors.items),
        [
            "etcd-cp1",
            "kube-apiserver-cp1",
            "kube-controller-manager-cp1",
            "kube-scheduler-cp1"
        ]
    );
    for p in &mirrors.items {
        let ann = p.metadata.annotations.clone().unwrap();
        assert!(ann.contains_key("kubernetes.io/config.mirror"));
        assert_eq!(
            p.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Node"
        );
    }
    let proxies = system
        .list(&ListParams::default().labels("k8s-app=kube-proxy"))
        .await
        .unwrap();
    assert_eq!(proxies.items.len(), 2);

    // Cordon (merge patch) adds the taint; uncordon (strategic merge patch) removes it.
    let rv0: u64 = w1
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let cordoned = nodes
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(cordoned.spec.as_ref().unwrap().unschedulable, Some(true));
    assert!(taints(&cordoned).contains(&"node.kubernetes.io/unschedulable:NoSchedule".into()));
    let rv1: u64 = cordoned
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv1 > rv0, "resourceVersion increases: {rv0} -> {rv1}");
    assert_eq!(cordoned.metadata.uid, w1.metadata.uid);
    let unschedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=true"))
        .await
        .unwrap();
    assert_eq!(names(&unschedulable.items), ["w1"]);
    let back = nodes
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"unschedulable": null}, "metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await
        .unwrap();
    assert!(!taints(&back).iter().any(|t| t.contains("unschedulable")));
    assert_eq!(back.metadata.labels.unwrap()["x"], "y");

    // The timeline saw the worker Ready, cordoned (not counted), then back.
    let mut counts: Vec<usize> = f.api.timeline().iter().map(|s| s.ready_workers).collect();
    counts.dedup();
    let w = counts.windows(3).any(|w| w == [1, 0, 1]);
    assert!(w, "ready workers over time: {counts:?}");
    let (code, reason, _) = api_error(nodes.get("nope").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cloud_registers_instances_and_marks_vanished_ones_unknown() {
    let f = fixture(Duration::from_millis(100), Duration::from_millis(50)).await;
    let cloud = Arc::new(Mutex::new(vec![
        CloudInstance {
            name: "cp1".into(),
            control_plane: true,
        },
        CloudInstance {
            name: "w1".into(),
            control_plane: false,
        },
        CloudInstance {
            name: "w2".into(),
            control_plane: false,
        },
    ]));
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let h = hooked.clone();
    f.api.on_register(Arc::new(move |name: &str, cp: bool| {
        h.lock().unwrap().push((name.to_string(), cp));
    }));
    let c = cloud.clone();
    let lister: CloudLister = Arc::new(move || {
        let v = c.lock().unwrap().clone();
        Box::pin(async move { v })
    });
    f.api.watch_cloud(lister, Duration::from_millis(50));
    let nodes: Api<Node> = Api::all(f.client.clone());
    eventually("three Ready nodes", 10, || async {
        let l = nodes.list(&ListParams::default()).await.unwrap();
        (l.items.len() == 3 && l.items.iter().all(|n| ready(n) == "True")).then_some(())
    })
    .await;
    let mut seen = hooked.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("cp1".to_string(), true),
            ("w1".to_string(), false),
            ("w2".to_string(), false)
        ]
    );

    let pods: Api<Pod> = Api::all(f.client.clone());
    let on_w2 = ListParams::default().fields("spec.nodeName=w2");
    eventually("w2's pods Ready", 10, || async {
        let l = pods.list(&on_w2).await.unwrap();
        (!l.items.is_empty() && l.items.iter().all(pod_ready)).then_some(())
    })
    .await;
    cloud.lock().unwrap().retain(|i| i.name != "w2");
    let w2 = eventually("w2 Unknown", 10, || async {
        let n = nodes.get("w2").await.unwrap();
        (ready(&n) == "Unknown").then_some(n)
    })
    .await;
    assert!(taints(&w2).contains(&"node.kubernetes.io/unreachable:NoExecute".into()));
    assert_eq!(ready(&nodes.get("w1").await.unwrap()), "True");
    let on_w2 = pods.list(&on_w2).await.unwrap();
    assert!(!on_w2.items.is_empty());
    assert!(
        on_w2.items.iter().all(|p| !pod_ready(p)),
        "pods on a lost node are not Ready"
    );

    // The Node stays until deleted; deleting it takes its pods; it is not registered again.
    nodes.delete("w2", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _, _) = api_error(nodes.get("w2").await);
    assert_eq!(code, 404);
    let on_w2 = pods
        .list(&ListParams::default().fields("spec.nodeName=w2"))
        .await
        .unwrap();
    assert!(on_w2.items.is_empty());
    assert_eq!(hooked.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_respect_the_budget_and_evicted_pods_come_back_elsewhere() {
    let f = fixture(Duration::from_millis(50), Duration::from_millis(300)).await;
    for n in ["w1", "w2", "w3"] {
        f.api.register_node(n, false);
    }
    f.api.register_node("cp1", true);
    // As a real scheduler, the stand-in binds pending pods to whichever worker is Ready first.
    eventually("Ready workers", 10, || async {
        let s = f.api.timeline().last().cloned().unwrap();
        (s.ready_workers == 3).then_some(())
    })
    .await;
    f.api.add_deployment("default", "web", 2, Some(2), true);
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "default");
    let running = eventually("2 Ready web pods", 10, || async {
        let l = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        (l.items.iter().filter(|p| pod_ready(p)).count() == 2).then_some(l.items)
    })
    .await;
    let hosts: Vec<String> = running.iter().map(node_of).collect();
    assert_ne!(hosts[0], hosts[1], "spread over nodes");
    assert!(
        hosts.iter().all(|h| h.starts_with('w')),
        "never on the control plane"
    );
    let owner = &running[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ReplicaSet", Some(true))
    );
    assert!(
        running[0].spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
            .empty_dir
            .is_some()
    );

    let victim = running[0].metadata.name.clone().unwrap();
    let on_host = Api::<Pod>::all(f.client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", hosts[0])))
        .await
        .unwrap();
    assert!(names(&on_host.items).contains(&victim));
    assert!(on_host.items.iter().all(|p| node_of(p) == hosts[0]));

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(f.client.clone(), "default");
    let pdb = pdbs.list(&ListParams::default()).await.unwrap().items;
    let st = pdb[0].status.clone().unwrap();
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed
        ),
        (2, 2, 0)
    );

    // minAvailable = replicas: refused with 429, the pod stays.
    let (code, reason, status) = api_error(pods.evict(&victim, &EvictParams::default()).await);
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(status.details.unwrap().causes[0].reason, "DisruptionBudget");
    assert!(pods.get(&victim).await.is_ok());
    let (code, _, _) = api_error(pods.evict("nope", &EvictParams::default()).await);
    assert_eq!(code, 404);

    // One spare: allowed after a cordon; the replacement lands elsewhere and turns Ready.
    f.api.add_deployment("default", "web", 2, Some(1), true);
    Api::<Node>::all(f.client.clone())
        .patch(
            &hosts[0],
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let ok = pods.evict(&victim, &EvictParams::default()).await.unwrap();
    assert_eq!(ok.code, 201);
    let (code, _, _) = api_error(pods.get(&victim).await);
    assert_eq!(code, 404, "the evicted pod is gone");
    let replaced = eventually("2 Ready web pods again", 10, || async {
        let l = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        (l.items.iter().filter(|p| pod_ready(p)).count() == 2).then_some(l.items)
    })
    .await;
    let new: Vec<&Pod> = replaced
        .iter()
        .filter(|p| p.metadata.name.as_deref() != running[1].metadata.name.as_deref())
        .collect();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].metadata.name.as_deref(), Some(victim.as_str()));
    assert_ne!(node_of(new[0]), hosts[0], "not on the cordoned node");
    let mut web: Vec<usize> = f
        .api
        .timeline()
        .iter()
        .map(|s| s.ready_pods.get("web").copied().unwrap_or(0))
        .collect();
    web.dedup();
    assert!(
        web.windows(3).any(|w| w == [2, 1, 2]),
        "ready web pods: {web:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_waits_for_release() {
    let f = fixture(Duration::ZERO, Duration::ZERO).await;
    f.api.register_node("w1", false);
    let nodes: Api<Node> = Api::all(f.client.clone());
    assert!(!f.api.hung());
    f.api.hang_at(1);
    let before = f.api.requests().len();
    let task = tokio::spawn(async move { nodes.get("w1").await });
    eventually("a hung request", 10, || async {
        f.api.hung().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "answered while hung");
    assert_eq!(f.api.requests().len(), before);
    f.api.release();
    assert!(!f.api.hung());
    let n = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("answered after release")
        .unwrap()
        .unwrap();
    assert_eq!(n.metadata.name.as_deref(), Some("w1"));
    assert_eq!(f.api.requests().last().unwrap().path, "/api/v1/nodes/w1");

    // A hung cordon whose client gives up (and drops its connection) is applied on release.
    f.api.hang_at(1);
    let nodes: Api<Node> = Api::all(f.client.clone());
    let cordon = tokio::spawn(async move {
        let p = Patch::Merge(json!({"spec": {"unschedulable": true}}));
        nodes.patch("w1", &PatchParams::default(), &p).await
    });
    eventually("the cordon hung", 10, || async {
        f.api.hung().then_some(())
    })
    .await;
    cordon.abort();
    let _ = cordon.await;
    let unschedulable = |api: &KubeApi| {
        api.nodes()[0]
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    };
    assert!(!unschedulable(&f.api), "not applied while hung");
    f.api.release();
    eventually("the cordon applied", 10, || async {
        unschedulable(&f.api).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_created_refused_when_present_read_patched_and_deleted() {
    let f = fixture(Duration::ZERO, Duration::ZERO).await;
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), "kube-system");
    let token: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-abcdef"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true"}
    }))
    .unwrap();
    let made = secrets
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let data = made.data.clone().unwrap();
    assert_eq!(data["token-id"].0, b"abcdef");
    assert!(made.string_data.is_none(), "stringData is merged into data");
    let (code, reason, _) = api_error(secrets.create(&PostParams::default(), &token).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "other"}, "data": {"k": "dmFsdWU="}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &opaque)
        .await
        .unwrap();
    let tokens = secrets
        .list(&ListParams::default().fields("type=bootstrap.kubernetes.io/token"))
        .await
        .unwrap();
    assert_eq!(names(&tokens.items), ["bootstrap-token-abcdef"]);
    assert_eq!(
        names(&f.api.secrets("kube-system")),
        ["bootstrap-token-abcdef", "other"]
    );
    let got = secrets.get("other").await.unwrap();
    assert_eq!(got.data.clone().unwrap()["k"].0, b"value");
    assert_eq!(got.type_.as_deref(), Some("Opaque"));

    let patched = secrets
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k2": "v2"}})),
        )
        .await
        .unwrap();
    let d = patched.data.clone().unwrap();
    assert_eq!(
        (d["k"].0.as_slice(), d["k2"].0.as_slice()),
        (&b"value"[..], &b"v2"[..])
    );
    let mut stale = got.clone();
    stale.data = None;
    let (code, reason, _) = api_error(
        secrets
            .replace("other", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let mut fresh = patched.clone();
    fresh.data.as_mut().unwrap().remove("k");
    let replaced = secrets
        .replace("other", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(!replaced.data.unwrap().contains_key("k"));
    secrets
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _, _) = api_error(secrets.get("other").await);
    assert_eq!(code, 404);
    let (code, _, _) = api_error(
        Api::<Secret>::namespaced(f.client.clone(), "no-such-ns")
            .create(&PostParams::default(), &opaque)
            .await,
    );
    assert_eq!(code, 404, "no namespace");
}

/// A TCP echo server on loopback.
async fn echo_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_carries_bytes_through_two_forwards_at_once() {
    let f = fixture(Duration::ZERO, Duration::ZERO).await;
    f.api.register_node("cp1", true);
    let echo = echo_server().await;
    f.api
        .forward_pod_port("kube-system", "etcd-cp1", 2379, echo);
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "kube-system");
    let mut a = pods.portforward("etcd-cp1", &[2379]).await.unwrap();
    let mut b = pods.portforward("etcd-cp1", &[2379]).await.unwrap();
    let mut sa = a.take_stream(2379).unwrap();
    let mut sb = b.take_stream(2379).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    sa.write_all(&big).await.unwrap();
    sb.write_all(b"hello from b").await.unwrap();
    let mut got_b = vec![0u8; 12];
    sb.read_exact(&mut got_b).await.unwrap();
    assert_eq!(&got_b, b"hello from b");
    let mut got_a = vec![0u8; big.len()];
    sa.read_exact(&mut got_a).await.unwrap();
    assert!(got_a == big, "200 kB round-trip through forward a");
    drop((sa, sb));
    tokio::time::timeout(Duration::from_secs(10), a.join())
        .await
        .expect("forward a closes")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.join())
        .await
        .expect("forward b closes")
        .unwrap();
    let upgrades = f
        .api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/portforward") && r.status == 101)
        .count();
    assert_eq!(upgrades, 2);

    // A port nothing listens on: an error on its channel; a missing pod: 404.
    let mut c = pods.portforward("etcd-cp1", &[2379, 2380]).await.unwrap();
    let err = c.take_error(2380).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), err)
        .await
        .expect("an error message")
        .expect("an error, not a closed channel");
    assert!(msg.contains("2380") && msg.contains("refused"), "{msg}");
    let mut s = c.take_stream(2379).unwrap();
    s.write_all(b"still works").await.unwrap();
    let mut got = vec![0u8; 11];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still works");
    let (code, _, _) = api_error(pods.portforward("etcd-nope", &[2379]).await.map(|_| ()));
    assert_eq!(code, 404);
}

//! `validate cluster` and `rolling-update` through the Kubernetes API, driving the real `kprov`
//! binary against the ZStack simulator and the Kubernetes API stand-in
//! (`kprov_testkit::kube_api`: real TLS with client-certificate auth against the cluster CA
//! from the state store, k8s-openapi JSON, Eviction with PodDisruptionBudget arithmetic). The
//! stand-in registers a Node for every VM the simulator holds and marks it Ready after a delay,
//! as kubelet would; a Deployment of 3 replicas with a PDB of minAvailable 2 runs on the
//! workers.
//!
//! Proves: validation fails (exit 1, each unjoined machine named) until the nodes register, then
//! passes with kprov's own minted credentials at `spec.controlPlane.endpoint` and with
//! `--kubeconfig`; a rolling update of the workers waits for each replacement's Node, cordons and
//! drains the old node through evictions (a 429 from the budget retried), deletes its Node and
//! validates — while at no time fewer than 3 worker Nodes were Ready and schedulable and fewer
//! than 2 of the Deployment's pods Ready; a drain blocked by a budget fails after
//! `--drain-timeout` naming the pod and keeps the node's instance.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kprov::repo::Repo;
use kprov_testkit::kube_api::{CloudInstance, CloudLister, KubeApi, KubeApiOptions};

use crate::zstack_e2e::Env;

/// The spec of cluster `demo`: `cps` control planes and `nodes` workers (2 CPU, 2 GiB), its
/// control-plane endpoint `endpoint`.
fn spec(env: &Env, cps: u32, nodes: u32, endpoint: &str) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\nspec:\n  provider: {{zstack: {{endpoint: \"{}\"}}}}\n  kubernetesVersion: {}\n  controlPlane: {{endpoint: \"{endpoint}\"}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: {cps}, arch: arm64, size: {{cpu: 2, memory: 2Gi}}}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: {nodes}, arch: arm64, size: {{cpu: 2, memory: 2Gi}}}}\n",
        env.sim.endpoint(),
        kprov::spec::versions::default_version()
    );
    let file = env.state.path().join("demo.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Cluster `demo` (`cps` control planes, `nodes` workers) on the simulator, its endpoint the
/// stand-in (set before any instance exists, so nothing needs a rolling update), created; the
/// stand-in (not yet watching the cloud), the state store and an admin kubeconfig for it.
pub(crate) async fn cluster_with_api(
    env: &Env,
    cps: u32,
    nodes: u32,
) -> (KubeApi, Repo, std::path::PathBuf) {
    let file = spec(env, cps, nodes, "127.0.0.1:9");
    env.ok(&["create", "-f", file.to_str().unwrap()]).await;
    let repo = env.repo().await;
    let secrets = kprov::secrets::load(&repo, "demo").await.unwrap();
    let api = KubeApi::start(KubeApiOptions {
        ca_cert_pem: secrets.ca.cert_pem.clone(),
        ca_key_pem: secrets.ca.key_pem.clone(),
        node_ready_after: Duration::from_millis(300),
        pod_ready_after: Duration::from_millis(300),
    })
    .await;
    let file = spec(env, cps, nodes, &format!("127.0.0.1:{}", api.port()));
    env.ok(&["create", "-f", file.to_str().unwrap(), "--replace"])
        .await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    let access = kprov::ops::access::admin(&repo, "demo", Duration::from_secs(3600))
        .await
        .unwrap();
    let kubeconfig = env.state.path().join("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, &access.cert_pem, &access.key_pem);
    (api, repo, kubeconfig)
}

/// The simulator's running VMs, as the stand-in's kubelet sees them.
pub(crate) fn lister(env: &Env) -> CloudLister {
    let sim = env.sim.vm_reader();
    Arc::new(move || {
        let vms: Vec<CloudInstance> = sim
            .vms()
            .into_iter()
            .filter(|v| v.state == "Running")
            .map(|v| CloudInstance {
                control_plane: v.name.contains("-control-plane-"),
                name: v.name,
            })
            .collect();
        Box::pin(async move { vms })
    })
}

/// Running VMs of the simulator, by name.
pub(crate) fn running_vms(env: &Env) -> BTreeSet<String> {
    env.sim
        .vms()
        .into_iter()
        .filter(|v| v.state == "Running")
        .map(|v| v.name)
        .collect()
}

/// After the re-run that followed a kill at call `n`: `count` VMs running, every instance
/// `Ready` (up to date), the Nodes exactly the running VMs and none left cordoned. Returns the
/// running VMs.
pub(crate) async fn assert_converged(
    env: &Env,
    api: &KubeApi,
    n: usize,
    count: usize,
) -> BTreeSet<String> {
    let running = running_vms(env);
    assert_eq!(running.len(), count, "after kill at call {n}: {running:?}");
    let listed = env.ok(&["get", "instances", "demo", "-o", "json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Ready"),
        "after kill at call {n}: {rows}"
    );
    let nodes = api.nodes();
    let names: BTreeSet<String> = nodes
        .iter()
        .filter_map(|x| x.metadata.name.clone())
        .collect();
    assert_eq!(
        names, running,
        "after kill at call {n}: the Nodes are the running VMs"
    );
    assert!(
        nodes
            .iter()
            .all(|x| x.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)),
        "after kill at call {n}: a node is left cordoned"
    );
    running
}

/// A kubeconfig in `dir` whose API server is a closed loopback port (nothing answers).
pub(crate) fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("unreachable.kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    path
}

/// Run `kprov args` with the stand-in's `n`th request from now held unanswered, and kill -9 it
/// once that request hangs; then release the stand-in. Blocks (call it where blocking is
/// allowed). Returns whether kprov was killed (false: it finished before request `n`).
pub(crate) fn kill_at_api_call(env: &Env, api: &KubeApi, args: &[&str], n: usize) -> bool {
    api.hang_at(n);
    let mut child = env.spawn_quiet(args);
    let until = std::time::Instant::now() + Duration::from_secs(180);
    let killed = loop {
        if api.hung() {
            child.kill().unwrap();
            child.wait().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(
            std::time::Instant::now() < until,
            "kprov neither reached call {n} nor exited"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    api.release();
    killed
}

/// `update cluster demo --yes` with the API server unreachable: it must fail with exit 1;
/// returns its stderr.
pub(crate) async fn update_refused_unreachable(env: &Env) -> String {
    let unreachable = unreachable_kubeconfig(env.state.path());
    let out = env
        .run(&[
            "update",
            "cluster",
            "demo",
            "--yes",
            "--kubeconfig",
            unreachable.to_str().unwrap(),
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// `rolling-update cluster demo --yes` through the API at `kubeconfig`: short polls, 60 s to
/// validate, `drain_timeout` to drain.
pub(crate) fn roll_args<'a>(kubeconfig: &'a str, drain_timeout: &'a str) -> Vec<&'a str> {
    vec![
        "rolling-update",
        "cluster",
        "demo",
        "--yes",
        "--kubeconfig",
        kubeconfig,
        "--poll-interval",
        "100ms",
        "--validation-timeout",
        "60s",
        "--drain-timeout",
        drain_timeout,
    ]
}

/// Wait (30 s at most) until `n` pods of Deployment `app` are Ready: the roll's budget checks
/// start from a healthy Deployment (validation, as kops', does not look at user pods).
pub(crate) fn wait_app_ready(api: &KubeApi, app: &str, n: usize) {
    let ready = || {
        api.pods()
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str)
                    == Some(app)
                    && kprov::k8s::validate::pod_ready(p)
            })
            .count()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while ready() < n {
        assert!(
            std::time::Instant::now() < until,
            "{app}: only {} of {n} pods Ready",
            ready()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_then_roll_workers_with_drain_and_budgets() {
    let env = Env::default().await;
    let (api, _repo, kubeconfig) = cluster_with_api(&env, 1, 3).await;
    let kc = kubeconfig.to_str().unwrap();

    // nothing registered yet: invalid, each machine named, exit 1
    let out = env
        .run(&["validate", "cluster", "demo", "-o", "json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&out);
    assert_eq!(v["valid"], false, "{v}");
    let machines: Vec<&str> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "Machine")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(machines.len(), 4, "{v}");
    assert!(machines.contains(&"demo-control-plane-0"), "{v}");

    // kubelets register; --wait validates until Ready (kprov's own credentials, endpoint)
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    api.add_deployment("default", "web", 3, Some(2), false);
    let out = env
        .run(&["validate", "cluster", "demo", "--wait", "60s", "-o", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4, "{v}");
    // the table, through the user's kubeconfig
    let table = env
        .ok(&["validate", "cluster", "demo", "--kubeconfig", kc])
        .await;
    assert!(table.contains("Your cluster demo is ready"), "{table}");
    assert!(table.contains("demo-nodes-2"), "{table}");

    // the roll of the workers, through the API
    env.set_group_spec("nodes", "size", "{cpu: 2, memory: 4Gi}")
        .await;
    wait_app_ready(&api, "web", 3);
    let before = api.requests().len();
    let started = std::time::Instant::now();
    let out = env.run(&roll_args(kc, "60s")).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("3 replacement(s) created, 3 old instance(s) deleted"),
        "{text}"
    );

    // never fewer than 3 Ready, schedulable workers; never fewer than 2 Ready web pods
    let timeline = api.timeline();
    let rolled: Vec<_> = timeline.iter().filter(|s| s.at >= started).collect();
    assert!(
        rolled.len() > 10,
        "{} samples during the roll",
        rolled.len()
    );
    let min_workers = rolled.iter().map(|s| s.ready_workers).min().unwrap();
    let min_web = rolled
        .iter()
        .map(|s| s.ready_pods.get("web").copied().unwrap_or(0))
        .min()
        .unwrap();
    assert!(
        min_workers >= 3,
        "Ready schedulable workers fell to {min_workers}"
    );
    if min_web < 2 {
        let t0 = rolled[0].at;
        let trace: Vec<String> = rolled
            .iter()
            .map(|s| {
                format!(
                    "+{:?} workers {} web {:?}",
                    s.at - t0,
                    s.ready_workers,
                    s.ready_pods.get("web")
                )
            })
            .collect();
        let reqs: Vec<String> = api.requests()[before..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect();
        panic!(
            "web's Ready pods fell to {min_web} (PDB minAvailable 2)\n{}\n{}",
            trace.join("\n"),
            reqs.join("\n")
        );
    }

    // every old node was cordoned, drained through evictions and deleted from the API
    let reqs = api.requests()[before..].to_vec();
    let count = |m: &str, suffix: &str| {
        reqs.iter()
            .filter(|r| r.method == m && r.path.ends_with(suffix) && r.status < 300)
            .count()
    };
    assert!(count("POST", "/eviction") >= 3, "{reqs:?}");
    for n in 0..3 {
        let node = format!("/api/v1/nodes/demo-nodes-{n}");
        assert!(
            reqs.iter().any(|r| r.method == "PATCH" && r.path == node),
            "cordon of {node}: {reqs:?}"
        );
        assert!(
            reqs.iter()
                .any(|r| r.method == "DELETE" && r.path == node && r.status < 300),
            "Node {node} deleted: {reqs:?}"
        );
    }
    let names: Vec<String> = api
        .nodes()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| !["demo-nodes-0", "demo-nodes-1", "demo-nodes-2"].contains(&n.as_str())),
        "{names:?}"
    );
    println!(
        "API calls per replaced node: {:.1} ({} calls, 3 nodes)",
        reqs.len() as f64 / 3.0,
        reqs.len()
    );
    let out = env
        .run(&["validate", "cluster", "demo", "-o", "json"])
        .await;
    assert_eq!(json(&out)["valid"], true);

    // a drain a budget blocks: minAvailable = replicas; it fails after --drain-timeout naming
    // the pod, the node stays cordoned and its instance is kept
    api.add_deployment("default", "db", 2, Some(2), false);
    env.ok(&["validate", "cluster", "demo", "--wait", "30s"])
        .await;
    env.set_group_spec("nodes", "size", "{cpu: 2, memory: 8Gi}")
        .await;
    let vms_before = env.live_vm_names().len();
    let out = env.run(&roll_args(kc, "2s")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("default/db-") && err.contains("--drain-timeout"),
        "{err}"
    );
    assert_eq!(
        env.live_vm_names().len(),
        vms_before + 1,
        "only the surge instance was added"
    );
}

/// Write an expired bootstrap token into cluster `demo`'s store, as if its TTL had passed.
async fn expire_token(repo: &Repo) {
    let doc = r#"{"token": "abcdef.0123456789abcdef", "expires": "2020-01-01T00:00:00Z"}"#;
    repo.store
        .put(
            &kprov::secrets::keys::bootstrap_token("demo"),
            doc.as_bytes(),
            kprov_state::Condition::None,
        )
        .await
        .unwrap();
}

/// Scaling a running cluster up after its bootstrap token expired: kprov mints a new token,
/// creates its `bootstrap-token-ID` Secret in `kube-system` through the API (kprov's own
/// credentials, at the spec's endpoint) before it creates the node, and renders the node with
/// that token; a second scale-up with the token still valid does not touch the API; with the
/// API unreachable the scale-up stops before creating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_after_the_token_expired_installs_a_new_token() {
    let env = Env::default().await;
    let (api, repo, _kubeconfig) = cluster_with_api(&env, 1, 1).await;
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    assert!(api.secrets("kube-system").is_empty());

    expire_token(&repo).await;
    env.set_group_spec("nodes", "count", "2").await;
    env.ok(&["update", "cluster", "demo", "--yes", "--wait-ready=60s"])
        .await;
    let token = kprov::secrets::load(&repo, "demo").await.unwrap().token;
    assert_ne!(token.id(), "abcdef", "a new token was minted");
    let secrets = api.secrets("kube-system");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let s = &secrets[0];
    assert_eq!(
        s.metadata.name.as_deref(),
        Some(format!("bootstrap-token-{}", token.id()).as_str())
    );
    assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
    let data = s.data.as_ref().unwrap();
    let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(
        format!("{}.{}", field("token-id"), field("token-secret")),
        token.token
    );
    assert_eq!(field("usage-bootstrap-authentication"), "true");
    assert_eq!(
        field("auth-extra-groups"),
        "system:bootstrappers:kubeadm:default-node-token"
    );
    let ud = env
        .ok(&[
            "get",
            "userdata",
            "demo",
            "--instance-group",
            "nodes",
            "--index",
            "1",
            "--show-secrets",
        ])
        .await;
    assert!(
        ud.contains(&token.token),
        "the new node joins with the new token"
    );

    // the token is still valid: no API call about it
    let calls = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.path.contains("/secrets"))
            .count()
    };
    let before = calls(&api);
    env.set_group_spec("nodes", "count", "3").await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert_eq!(calls(&api), before);

    // expired again and the API unreachable: nothing is created
    expire_token(&repo).await;
    env.set_group_spec("nodes", "count", "4").await;
    let vms = env.live_vm_names().len();
    let err = update_refused_unreachable(&env).await;
    assert!(
        err.contains("does not hold yet") && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(env.live_vm_names().len(), vms, "nothing was created");
}

/// kill -9 of `rolling-update --yes` at Kubernetes API calls spread over a whole roll of 3
/// workers (carrying a Deployment of 3 with a PDB of minAvailable 2), each after a new node
/// size: the nth API call from the start of the roll is never answered and kprov is killed
/// while it waits; a re-run (`--force-unlock`) finishes. Then: one running VM per slot, all up
/// to date, the Nodes exactly the running VMs, none cordoned, the cluster valid — and, sampled
/// through the killed run and the re-run, never fewer than 3 Ready schedulable workers nor
/// fewer than 2 Ready pods of the Deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_api_calls_during_a_roll_then_rerun_converges() {
    let env = Env::default().await;
    let (api, _repo, kubeconfig) = cluster_with_api(&env, 1, 3).await;
    let kc = kubeconfig.to_str().unwrap();
    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let reg = registered.clone();
    api.on_register(Arc::new(move |n: &str, _| {
        reg.lock().unwrap().push(n.to_string())
    }));
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    env.ok(&[
        "validate",
        "cluster",
        "demo",
        "--wait",
        "60s",
        "--kubeconfig",
        kc,
    ])
    .await;
    api.add_deployment("default", "web", 3, Some(2), false);
    env.ok(&[
        "validate",
        "cluster",
        "demo",
        "--wait",
        "60s",
        "--kubeconfig",
        kc,
    ])
    .await;
    let roll = roll_args(kc, "60s");
    let sizes = ["{cpu: 2, memory: 4Gi}", "{cpu: 2, memory: 2Gi}"];
    // how many API calls an uninterrupted roll makes
    env.set_group_spec("nodes", "size", sizes[0]).await;
    let before = api.requests().len();
    env.ok(&roll).await;
    let total = api.requests().len() - before;
    let mut points: Vec<usize> = (0..8).map(|i| 1 + i * total / 8).collect();
    points.dedup();
    let mut killed_at = Vec::new();
    for (k, &n) in points.iter().enumerate() {
        env.set_group_spec("nodes", "size", sizes[(k + 1) % 2])
            .await;
        wait_app_ready(&api, "web", 3);
        let started = std::time::Instant::now();
        let killed = tokio::task::block_in_place(|| kill_at_api_call(&env, &api, &roll, n));
        let mut rerun = roll.to_vec();
        rerun.push("--force-unlock");
        let out = env.run(&rerun).await;
        if !out.status.success() {
            let vms: Vec<(String, String)> = env
                .sim
                .vms()
                .into_iter()
                .map(|v| (v.name, v.state))
                .collect();
            let nodes: Vec<_> = api
                .nodes()
                .iter()
                .map(|x| x.metadata.name.clone())
                .collect();
            let all = api.requests();
            let reqs: Vec<String> = all[all.len().saturating_sub(40)..]
                .iter()
                .map(|r| format!("{} {} {}", r.method, r.path, r.status))
                .collect();
            panic!("re-run after kill at {n} failed: {}\nvms {vms:?}\nnodes {nodes:?}\nregistered {:?}\nrequests {reqs:?}", String::from_utf8_lossy(&out.stderr), registered.lock().unwrap());
        }
        if killed {
            killed_at.push(n);
        }
        assert_converged(&env, &api, n, 4).await;
        let samples: Vec<_> = api
            .timeline()
            .into_iter()
            .filter(|s| s.at >= started)
            .collect();
        let min_workers = samples.iter().map(|s| s.ready_workers).min().unwrap();
        let min_web = samples
            .iter()
            .map(|s| s.ready_pods.get("web").copied().unwrap_or(0))
            .min()
            .unwrap();
        assert!(
            min_workers >= 3 && min_web >= 2,
            "after kill at call {n}: workers fell to {min_workers}, web to {min_web}"
        );
    }
    env.ok(&["validate", "cluster", "demo", "--kubeconfig", kc])
        .await;
    println!("KILL POINTS API rolling-update: {total} API calls a roll, killed at {killed_at:?}");
    assert!(
        killed_at.len() >= 7,
        "only {} kill points reached: {killed_at:?}",
        killed_at.len()
    );
}

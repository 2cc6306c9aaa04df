//! Instances leaving a running cluster outside a rolling update — a scale-down through `update
//! --yes`, `delete instancegroup` — are taken out through the Kubernetes API first, as a
//! rolling update's old ones are: cordoned, drained through the Eviction API with the
//! disruption budgets holding, their Node deleted, and only then their VM. Driven through the
//! real `kprov` binary against the ZStack simulator and the Kubernetes API stand-in.
//!
//! Proves: with the API server unreachable both refuse (exit 1, `--cloudonly` named) and change
//! nothing; a scale-down evicts exactly the pods of the node that goes, keeps the Deployment's
//! budget and its workers Ready, and leaves no Node behind; a `delete ig` whose drain a budget
//! blocks stops after `--drain-timeout` with the group still in the spec, its VMs kept and its
//! nodes cordoned, and `--fail-on-drain-error=false` then deletes it anyway.

use std::time::Duration;

use kprov_testkit::kube_api::KubeApi;

use crate::rolling_live::{cluster_with_api, lister, update_refused_unreachable, wait_app_ready};
use crate::zstack_e2e::Env;

/// The names of the pods of Deployment `app` on node `node`.
fn pods_on(api: &KubeApi, node: &str) -> Vec<String> {
    api.pods()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| p.metadata.namespace.as_deref() == Some("default"))
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Whether the stand-in holds Node `name`, and whether it is cordoned.
fn node(api: &KubeApi, name: &str) -> Option<bool> {
    api.nodes()
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .map(|n| n.spec.and_then(|s| s.unschedulable) == Some(true))
}

/// The paths of the requests served since request number `from`, as `METHOD path`.
fn calls_since(api: &KubeApi, from: usize) -> Vec<String> {
    api.requests()[from..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_and_delete_instancegroup_drain_first() {
    let env = Env::default().await;
    let (api, _repo, kubeconfig) = cluster_with_api(&env, 1, 3).await;
    let kc = kubeconfig.to_str().unwrap();
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    env.ok(&["validate", "cluster", "demo", "--wait", "60s"])
        .await;
    // scheduled once every worker is Ready: one pod each
    api.add_deployment("default", "web", 3, Some(2), false);
    wait_app_ready(&api, "web", 3);

    // 3 → 2 workers with the API unreachable: refused before anything changes
    env.set_group_spec("nodes", "count", "2").await;
    let vms = env.live_vm_names();
    let err = update_refused_unreachable(&env).await;
    assert!(
        err.contains("must be drained first") && err.contains("--cloudonly"),
        "{err}"
    );
    assert_eq!(env.live_vm_names(), vms, "nothing was deleted");
    assert_eq!(node(&api, "demo-nodes-2"), Some(false), "nor cordoned");

    // through the API: demo-nodes-2 cordoned, its pods evicted, its Node deleted, its VM deleted
    let going = pods_on(&api, "demo-nodes-2");
    assert!(
        !going.is_empty(),
        "the Deployment spreads over every worker"
    );
    let from = api.requests().len();
    let since = api.timeline().len();
    let out = env
        .ok(&[
            "update",
            "cluster",
            "demo",
            "--yes",
            "--kubeconfig",
            kc,
            "--poll-interval",
            "100ms",
        ])
        .await;
    assert!(out.contains("node demo-nodes-2 drained"), "{out}");
    let calls = calls_since(&api, from);
    assert!(
        calls.contains(&"PATCH /api/v1/nodes/demo-nodes-2".to_string()),
        "cordoned: {calls:?}"
    );
    for pod in &going {
        let eviction = format!("POST /api/v1/namespaces/default/pods/{pod}/eviction");
        assert!(calls.contains(&eviction), "{pod} evicted: {calls:?}");
    }
    let evictions = calls.iter().filter(|c| c.ends_with("/eviction")).count();
    assert!(
        calls
            .iter()
            .filter(|c| c.ends_with("/eviction") && !going.iter().any(|p| c.contains(p)))
            .count()
            == 0,
        "only the leaving node's pods are evicted ({evictions}): {calls:?}"
    );
    assert_eq!(node(&api, "demo-nodes-2"), None, "its Node is deleted");
    assert!(!env.live_vm_names().contains(&"demo-nodes-2".to_string()));
    // the budget held: never fewer than 2 of the web pods Ready, and the 2 kept workers stayed
    // Ready and schedulable
    wait_app_ready(&api, "web", 3);
    for s in &api.timeline()[since..] {
        let web = s.ready_pods.get("web").copied().unwrap_or(0);
        assert!(web >= 2, "budget broken: {s:?}");
        assert!(s.ready_workers >= 2, "a kept worker went down: {s:?}");
    }
    let noop = env.ok(&["update", "cluster", "demo"]).await;
    assert!(noop.contains("No changes needed"), "{noop}");

    // delete the whole worker group: its pods have nowhere to go, so the budget stops the drain
    let vms = env.live_vm_names();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "delete",
            "ig",
            "nodes",
            "--name",
            "demo",
            "--yes",
            "--kubeconfig",
            kc,
            "--poll-interval",
            "100ms",
            "--drain-timeout",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| {
        let env = &env;
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            env.run(&a).await
        }
    };
    let out = run(args(&[])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused by a disruption budget") && err.contains("stays cordoned"),
        "{err}"
    );
    assert_eq!(env.live_vm_names(), vms, "no VM deleted");
    let groups = env.ok(&["get", "instancegroups", "demo"]).await;
    assert!(
        groups.contains("nodes"),
        "the group stays in the spec: {groups}"
    );
    for n in ["demo-nodes-0", "demo-nodes-1"] {
        assert_eq!(node(&api, n), Some(true), "{n} stays cordoned");
    }

    // --fail-on-drain-error=false: drained as far as the budget allows, then deleted anyway
    let out = run(args(&["--fail-on-drain-error=false"])).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Deleted instance group nodes of cluster demo and 2 instance(s)")
            && text.contains("deleting node demo-nodes-0 anyway"),
        "{text}"
    );
    assert_eq!(env.live_vm_names(), ["demo-control-plane-0"]);
    for n in ["demo-nodes-0", "demo-nodes-1"] {
        assert_eq!(node(&api, n), None, "{n}'s Node is deleted");
    }
    let groups = env.ok(&["get", "instancegroups", "demo"]).await;
    assert!(!groups.contains("nodes"), "{groups}");
}

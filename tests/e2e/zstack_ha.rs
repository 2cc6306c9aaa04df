//! Highly available control planes on ZStack (issue 17, part 1), driving the real `kprov`
//! binary against the simulator: 3 control planes + 2 workers behind a VIP, a load balancer and
//! a TCP listener on 6443 whose backends are the control planes' NICs; kill -9 at every
//! load-balancer call of the create and of the delete, then a re-run; scale and rolling update
//! keep the backends right. The cloud is read back through the simulator's REST API (admin
//! session), never through kprov.

use std::collections::BTreeSet;
use std::time::Duration;

use kprov_zstack_sim::{FaultRule, SimConfig};
use serde_json::Value;

use crate::zstack_e2e::{kill_at_fault, Env};

/// The load-balancer APIs (the VIP's, the load balancer's, the listener's and its backends').
const LB_PATHS: &str = "^/zstack/v1/(vips|load-balancers)";

async fn env() -> Env {
    Env::new(SimConfig {
        job_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await
}

/// `kprov create cluster demo`: 3 control planes and 2 workers on the simulator.
async fn create(env: &Env) {
    let ep = env.sim.endpoint();
    env.ok(&[
        "create",
        "cluster",
        "demo",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        &ep,
        "--arch",
        "arm64",
        "--control-plane-count",
        "3",
        "--node-count",
        "2",
        "--node-size",
        "2:4Gi",
        "--control-plane-size",
        "2:4Gi",
    ])
    .await;
}

/// `GET /zstack/v1/PATH` with an admin session: the `inventories`.
async fn query(env: &Env, path: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/zstack/v1/{path}", env.sim.endpoint()))
        .header(
            "Authorization",
            format!("OAuth {}", env.sim.admin_session()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["inventories"].as_array().cloned().unwrap_or_default()
}

/// The endpoint as the cloud holds it.
struct Seen {
    vips: Vec<Value>,
    lbs: Vec<Value>,
    listeners: Vec<Value>,
}

async fn seen(env: &Env) -> Seen {
    Seen {
        vips: query(env, "vips").await,
        lbs: query(env, "load-balancers").await,
        listeners: query(env, "load-balancers/listeners").await,
    }
}

/// NIC uuids of the running control-plane VMs.
fn control_plane_nics(env: &Env) -> BTreeSet<String> {
    env.sim
        .vms()
        .into_iter()
        .filter(|v| v.state == "Running" && v.name.contains("-control-plane-"))
        .flat_map(|v| v.vm_nics.into_iter().map(|n| n.uuid))
        .collect()
}

/// Exactly one VIP, one load balancer on it, one TCP listener on 6443 of it, whose backends
/// are the running control planes' NICs; VIP and load balancer carry the cluster tag. Returns
/// the VIP's address.
async fn assert_one_endpoint(env: &Env, when: &str) -> String {
    let s = seen(env).await;
    assert_eq!(s.vips.len(), 1, "{when}: one VIP: {:?}", s.vips);
    assert_eq!(s.lbs.len(), 1, "{when}: one load balancer: {:?}", s.lbs);
    assert_eq!(
        s.listeners.len(),
        1,
        "{when}: one listener: {:?}",
        s.listeners
    );
    let (vip, lb, l) = (&s.vips[0], &s.lbs[0], &s.listeners[0]);
    assert_eq!(
        lb["vipUuid"], vip["uuid"],
        "{when}: the load balancer serves the VIP"
    );
    assert_eq!(l["loadBalancerUuid"], lb["uuid"], "{when}");
    assert_eq!(
        (l["loadBalancerPort"].as_u64(), l["instancePort"].as_u64()),
        (Some(6443), Some(6443)),
        "{when}"
    );
    assert_eq!(l["protocol"], "tcp", "{when}");
    let backends: BTreeSet<String> = l["vmNicRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["vmNicUuid"].as_str().unwrap().to_string())
        .collect();
    let cps = control_plane_nics(env);
    assert_eq!(cps.len(), 3, "{when}: 3 running control planes");
    assert_eq!(
        backends, cps,
        "{when}: the backends are the control planes' NICs"
    );
    let tag = "kprov::kprov.io/cluster::demo";
    for kind in ["vips", "load-balancers"] {
        let tagged = query(env, &format!("{kind}?q=__userTag__={tag}")).await;
        assert_eq!(
            tagged.len(),
            1,
            "{when}: the {kind} carries the cluster tag"
        );
    }
    vip["ip"].as_str().unwrap().to_string()
}

/// Nothing of the endpoint is left.
async fn assert_no_endpoint(env: &Env, when: &str) {
    let s = seen(env).await;
    assert!(
        s.vips.is_empty() && s.lbs.is_empty() && s.listeners.is_empty(),
        "{when}: VIP {:?}, load balancers {:?}, listeners {:?} left",
        s.vips,
        s.lbs,
        s.listeners
    );
    let tags = query(env, "user-tags?q=tag~=kprov::%25").await;
    assert!(tags.is_empty(), "{when}: kprov tags left: {tags:?}");
    assert_eq!(env.sim.vm_count(), 0, "{when}: VMs left");
}

/// `KEY` of a node's `/etc/kprov/bootstrap.env`, as the simulator received it.
fn bootstrap_var(env: &Env, vm: &str, key: &str) -> String {
    let ud = env.sim.user_data(vm).expect("user-data");
    let cc = kprov::bootstrap::decompress_user_data(&ud).unwrap();
    let files = kprov_testkit::fetch_trace::trace(&cc).files;
    let text = &files[kprov::bootstrap::ENV_PATH];
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{vm}: no {key} in {text}"))
        .trim_matches('\'')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_behind_a_vip_every_node_at_once_and_delete_leaves_nothing() {
    let env = env().await;
    create(&env).await;
    let plan = env.ok(&["update", "cluster", "demo"]).await;
    assert!(
        plan.contains("LoadBalancer kprov-demo-api") && plan.contains("TCP :6443"),
        "the plan shows the load balancer: {plan}"
    );
    assert_no_endpoint(&env, "after a plan").await;

    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    let vip = assert_one_endpoint(&env, "after the apply").await;
    let addresses: BTreeSet<String> = env
        .sim
        .vms()
        .iter()
        .flat_map(|v| v.vm_nics.iter().filter_map(|n| n.ip.clone()))
        .collect();
    assert!(
        !addresses.contains(&vip),
        "the VIP {vip} is no VM's address"
    );
    // Every node was told the VIP before any VM existed: nobody waited for the first control
    // plane's address, and the first one initialises through the load balancer.
    let endpoint = format!("{vip}:6443");
    for vm in env.live_vm_names() {
        assert_eq!(
            bootstrap_var(&env, &vm, "KPROV_API_ENDPOINT"),
            endpoint,
            "{vm}"
        );
    }
    assert_eq!(
        bootstrap_var(&env, "demo-control-plane-0", "KPROV_ACTION"),
        "init-or-join"
    );
    for vm in [
        "demo-control-plane-1",
        "demo-control-plane-2",
        "demo-nodes-0",
    ] {
        assert_eq!(bootstrap_var(&env, vm, "KPROV_ACTION"), "join", "{vm}");
    }

    let noop = env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert!(noop.contains("No changes"), "{noop}");
    let kubeconfig = env.state.path().join("kubeconfig");
    env.ok(&[
        "export",
        "kubeconfig",
        "demo",
        "--admin",
        "1h",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .await;
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        text.contains(&format!("server: https://{endpoint}")),
        "kubectl goes through the load balancer: {text}"
    );

    // A backend lost behind kprov's back (a run killed between a create and its registration
    // looks the same) is a repair in the plan, and put back.
    let listener = seen(&env).await.listeners[0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let nic = control_plane_nics(&env).into_iter().next().unwrap();
    let session = env.sim.admin_session();
    let removed = reqwest::Client::new()
        .delete(format!(
            "{}/zstack/v1/load-balancers/listeners/{listener}/vm-instances/nics?vmNicUuids={nic}",
            env.sim.endpoint()
        ))
        .header("Authorization", format!("OAuth {session}"))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{removed:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plan = env.ok(&["update", "cluster", "demo"]).await;
    assert!(
        plan.contains("behind the API load balancer"),
        "the missing backend is a repair: {plan}"
    );
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert_one_endpoint(&env, "after the repair").await;

    env.ok(&["delete", "cluster", "demo", "--yes"]).await;
    assert_no_endpoint(&env, "after delete").await;
}

/// Scaling the control planes and rolling them keep the listener's backends equal to the
/// running control planes: replacements are added, destroyed VMs leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_rolling_update_keep_the_backends() {
    let env = env().await;
    create(&env).await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    let vip = assert_one_endpoint(&env, "created").await;
    env.set_group_spec("control-plane", "size", "{cpu: 4, memory: 8Gi}")
        .await;
    let out = env
        .ok(&[
            "rolling-update",
            "cluster",
            "demo",
            "--yes",
            "--cloudonly",
            "--instance-group-roles",
            "control-plane",
        ])
        .await;
    assert!(out.contains("3 replacement(s) created"), "{out}");
    assert_eq!(
        assert_one_endpoint(&env, "after the roll").await,
        vip,
        "the endpoint survives the roll"
    );
    let names = env.live_vm_names();
    assert!(
        names
            .iter()
            .filter(|n| n.contains("-control-plane-"))
            .all(|n| ![
                "demo-control-plane-0",
                "demo-control-plane-1",
                "demo-control-plane-2"
            ]
            .contains(&n.as_str())),
        "the old control planes are gone: {names:?}"
    );
    env.ok(&["delete", "cluster", "demo", "--yes"]).await;
    assert_no_endpoint(&env, "after delete").await;
}

/// kill -9 of `update --yes` at every load-balancer call of a create (each call hanging
/// unanswered, then each create's answer lost after it was carried out), then a re-run of the
/// update: exactly one VIP, one load balancer, one listener, the right backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_load_balancer_call_of_the_create_then_rerun_converges() {
    let env = env().await;
    create(&env).await;
    let mut killed_at = Vec::new();
    for (execute, method) in [(false, None), (true, Some("POST"))] {
        let mut n = 1;
        loop {
            assert!(n < 100, "the create never finished before its nth call");
            let mut rule = FaultRule::hang(execute).path(LB_PATHS).nth(n).times(1);
            if let Some(m) = method {
                rule = rule.method(m);
            }
            let rule = env.sim.add_fault(rule).unwrap();
            let killed = kill_at_fault(&env, &["update", "cluster", "demo", "--yes"], &rule).await;
            if !killed {
                // every call of this kind has been a kill point; start the next from nothing
                assert_one_endpoint(&env, "a run that was not killed").await;
                env.ok(&["delete", "cluster", "demo", "--yes"]).await;
                create(&env).await;
                break;
            }
            let point = format!("{}#{n}", if execute { "lost-answer" } else { "hang" });
            env.ok(&["update", "cluster", "demo", "--yes", "--force-unlock"])
                .await;
            assert_one_endpoint(&env, &format!("after kill at {point}")).await;
            let noop = env.ok(&["update", "cluster", "demo"]).await;
            assert!(noop.contains("No changes"), "after kill at {point}: {noop}");
            killed_at.push(point);
            env.ok(&["delete", "cluster", "demo", "--yes"]).await;
            assert_no_endpoint(&env, "between points").await;
            create(&env).await;
            n += 1;
        }
    }
    println!(
        "KILL POINTS zstack HA create: {} load-balancer calls {killed_at:?}",
        killed_at.len()
    );
    let lost = killed_at.iter().filter(|p| p.starts_with("lost")).count();
    assert!(killed_at.len() >= 12 && lost >= 6, "only {killed_at:?}");
}

/// kill -9 of `delete cluster --yes` at every load-balancer call it makes, then a re-run:
/// nothing of the cluster is left (listener → load balancer → VIP, tags, VMs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_load_balancer_call_of_the_delete_then_rerun_leaves_nothing() {
    let env = env().await;
    create(&env).await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    let mut killed_at = Vec::new();
    let mut n = 1;
    loop {
        assert!(n < 100, "the delete never finished before its nth call");
        let rule = env
            .sim
            .add_fault(FaultRule::hang(n % 2 == 0).path(LB_PATHS).nth(n).times(1))
            .unwrap();
        let killed = kill_at_fault(&env, &["delete", "cluster", "demo", "--yes"], &rule).await;
        if !killed {
            assert_no_endpoint(&env, "a delete that was not killed").await;
            break;
        }
        env.ok(&["delete", "cluster", "demo", "--yes", "--force-unlock"])
            .await;
        assert_no_endpoint(&env, &format!("after kill at delete call {n}")).await;
        killed_at.push(n);
        create(&env).await;
        env.ok(&["update", "cluster", "demo", "--yes"]).await;
        n += 1;
    }
    println!(
        "KILL POINTS zstack HA delete: {} load-balancer calls {killed_at:?}",
        killed_at.len()
    );
    assert!(killed_at.len() >= 5, "only {killed_at:?}");
}

/// An L3 network without the LoadBalancer service (a flat network): `update --yes` of a
/// cluster of 3 control planes is refused before anything is made, naming the network and the
/// ways out; with `loadBalancer: none` the same cluster is created, nodes joining the first
/// control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_network_without_load_balancers_is_refused_before_anything_is_made() {
    let mut inventory = kprov_zstack_sim::Inventory::default_seed();
    for l3 in &mut inventory.l3_networks {
        l3.network_services
            .retain(|s| s.network_service_type != "LoadBalancer");
    }
    let env = Env::new(SimConfig {
        job_delay: Duration::from_millis(10),
        inventory,
        ..SimConfig::default()
    })
    .await;
    create(&env).await;
    let out = env.run(&["update", "cluster", "demo", "--yes"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("L3 network `k8s-net` has no LoadBalancer network service")
            && err.contains("loadBalancer: none")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(env.sim.vm_count(), 0, "no VM made");
    assert_no_endpoint(&env, "after the refusal").await;
    // the Cluster document is named like the cluster
    env.set_group_spec("demo", "controlPlane", "{port: 6443, loadBalancer: none}")
        .await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert_eq!(env.live_vm_names().len(), 5);
    assert!(
        seen(&env).await.vips.is_empty(),
        "no VIP with loadBalancer: none"
    );
    let first = env
        .sim
        .vms()
        .into_iter()
        .find(|v| v.name == "demo-control-plane-0")
        .and_then(|v| v.vm_nics[0].ip.clone())
        .unwrap();
    assert_eq!(
        bootstrap_var(&env, "demo-nodes-0", "KPROV_API_ENDPOINT"),
        format!("{first}:6443"),
        "nodes join the first control plane"
    );
}

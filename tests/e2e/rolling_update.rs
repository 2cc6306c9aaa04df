//! `rolling-update --cloudonly` against the ZStack simulator, driving the real `kprov` binary:
//! a changed node size is replaced one surge instance at a time while the simulator is watched
//! (never fewer running nodes than the group's count), the result is what `update` then calls
//! up to date, a run killed with SIGKILL after its first replacement is finished by the next
//! without duplicates, and the refusals change nothing; `delete instancegroup` deletes a group
//! and its VMs; kill -9 at calls spread over a roll of 3 control planes and 4 nodes converges.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::zstack_e2e::Env;

/// Live (not Destroyed) VMs of the simulator: (name, uuid, state).
fn live(env: &Env) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = env
        .sim
        .vms()
        .into_iter()
        .filter(|v| v.state != "Destroyed")
        .map(|v| (v.name, v.uuid, v.state))
        .collect();
    v.sort();
    v
}

/// The slot of a VM name: a replacement's `-xxxxxx` spec suffix removed.
fn slot(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((head, tail)) if tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// Running VMs of group `nodes`.
fn running_nodes(env: &Env) -> usize {
    live(env)
        .iter()
        .filter(|(n, _, s)| n.starts_with("demo-nodes-") && s == "Running")
        .count()
}

async fn create_demo(env: &Env) {
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
        "--node-count",
        "3",
        "--node-size",
        "4:8Gi",
        "--control-plane-size",
        "4:8Gi",
    ])
    .await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_replaced_with_surge_and_a_killed_run_is_finished() {
    let env = Env::default().await;
    create_demo(&env).await;
    let cp_uuid = |env: &Env| {
        live(env)
            .into_iter()
            .find(|(n, _, _)| n == "demo-control-plane-0")
            .map(|(_, u, _)| u)
    };
    let cp_before = cp_uuid(&env).expect("control plane");
    let nodes_before: BTreeSet<String> = live(&env)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .map(|(_, u, _)| u)
        .collect();
    assert_eq!(nodes_before.len(), 3);

    env.set_group_spec("nodes", "size", "{cpu: 8, memory: 16Gi}")
        .await;
    // the table, and nothing changes
    let table = env.ok(&["rolling-update", "cluster", "demo"]).await;
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("nodes"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["nodes", "NeedsUpdate", "3", "0", "3", "3"],
        "{table}"
    );
    assert!(table.contains("Must specify --yes"), "{table}");
    let json = env
        .ok(&["rolling-update", "cluster", "demo", "-o", "json"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["groups"][0]["name"], "control-plane",
        "control planes first: {v}"
    );
    assert_eq!(v["groups"][1]["need_update"], 3, "{v}");

    // without --cloudonly the roll goes through the API server: none answers here (a closed
    // loopback port), so it stops before changing anything and says how to go on
    let kubeconfig = crate::rolling_live::unreachable_kubeconfig(env.state.path());
    let out = env
        .run(&[
            "rolling-update",
            "cluster",
            "demo",
            "--yes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("API server") && err.contains("add --cloudonly"),
        "{err}"
    );
    // refusals: an unknown group
    for (args, says) in [(
        &["--yes", "--cloudonly", "--instance-group", "nosuch"][..],
        "no such instance group",
    )] {
        let mut all = vec!["rolling-update", "cluster", "demo"];
        all.extend_from_slice(args);
        let out = env.run(&all).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(says) && err.contains("fix"), "{all:?}: {err}");
    }
    assert_eq!(live(&env).len(), 4, "a refusal changes nothing");

    // the roll, watched: never fewer than 3 running nodes (maxSurge 1, maxUnavailable 0)
    let stop = AtomicBool::new(false);
    let min_seen = AtomicUsize::new(usize::MAX);
    let out = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    min_seen.fetch_min(running_nodes(&env), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let out = env
                .cmd(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
                .output()
                .unwrap();
            stop.store(true, Ordering::SeqCst);
            out
        })
    });
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.contains("3 replacement(s) created, 3 old instance(s) deleted"),
        "{out}"
    );
    assert_eq!(
        min_seen.load(Ordering::SeqCst),
        3,
        "running nodes never below the group's count during the roll"
    );
    let after = live(&env);
    let nodes: Vec<&(String, String, String)> = after
        .iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .collect();
    assert_eq!(nodes.len(), 3, "{after:?}");
    for (n, u, _) in &nodes {
        assert!(!nodes_before.contains(u), "{n} is a new VM");
        assert!(
            n.len() == "demo-nodes-0-".len() + 6,
            "{n}: slot name + spec suffix"
        );
    }
    assert_eq!(
        cp_uuid(&env),
        Some(cp_before.clone()),
        "control plane untouched"
    );
    let noop = env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert!(noop.contains("No changes needed"), "{noop}");
    assert!(!noop.contains("rolling update"), "{noop}");

    // kill -9 once the first replacement of the next change exists; the re-run finishes
    env.set_group_spec("nodes", "size", "{cpu: 4, memory: 8Gi}")
        .await;
    let before_kill: BTreeSet<String> = live(&env).into_iter().map(|(_, u, _)| u).collect();
    let mut child = env
        .cmd(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    loop {
        let new_one = live(&env).iter().any(|(_, u, _)| !before_kill.contains(u));
        if new_one {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("rolling-update exited ({st}) before any replacement existed");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no replacement within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env
        .ok(&[
            "rolling-update",
            "cluster",
            "demo",
            "--yes",
            "--cloudonly",
            "--force-unlock",
        ])
        .await;
    assert!(out.contains("Rolling update of cluster demo done"), "{out}");
    let nodes: Vec<(String, String, String)> = live(&env)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .collect();
    let names: BTreeSet<&String> = nodes.iter().map(|(n, _, _)| n).collect();
    assert_eq!(nodes.len(), 3, "no duplicate, no orphan: {nodes:?}");
    assert_eq!(names.len(), 3, "{nodes:?}");
    let listed = env.ok(&["get", "instances", "demo", "-o", "json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["status"], "Ready", "{r}");
    }
    env.ok(&["delete", "cluster", "demo", "--yes"]).await;
    assert!(live(&env).is_empty());
}

/// One control plane: rolling it is refused (no quorum survives), nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_control_plane_is_not_rolled() {
    let env = Env::default().await;
    create_demo(&env).await;
    let before = live(&env);
    env.set_group_spec("control-plane", "size", "{cpu: 8, memory: 16Gi}")
        .await;
    let out = env
        .run(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("has 1 control plane(s)")
            && err.contains("nothing was replaced")
            && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(live(&env), before, "nothing changed");
    // the workers alone may roll (there is nothing to roll there)
    let out = env
        .ok(&[
            "rolling-update",
            "cluster",
            "demo",
            "--yes",
            "--cloudonly",
            "--instance-group-roles",
            "node",
        ])
        .await;
    assert!(out.contains("0 replacement(s) created"), "{out}");
    assert_eq!(live(&env), before);
}

/// `delete instancegroup`: a preview, refusals (the only control-plane group, an unknown group)
/// that change nothing, then the group's VMs deleted and the group gone from the spec
/// (`--cloudonly`: this cluster has no API server to drain through; `scale_down` drains).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_instance_group_deletes_its_instances_and_the_group() {
    let env = Env::default().await;
    create_demo(&env).await;
    let before = live(&env);
    let preview = env
        .ok(&["delete", "instancegroup", "nodes", "--name", "demo"])
        .await;
    assert!(
        preview.contains("its 3 instance(s)")
            && preview.contains("demo-nodes-2")
            && preview.contains("Must specify --yes"),
        "{preview}"
    );
    for (group, says) in [
        ("control-plane", "no control-plane instance group"),
        ("nosuch", "no instance group"),
    ] {
        let out = env
            .run(&["delete", "ig", group, "--name", "demo", "--yes"])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{group}: {err}");
        assert!(err.contains(says), "{group}: {err}");
    }
    assert_eq!(live(&env), before, "refusals change nothing");
    let out = env
        .ok(&[
            "delete",
            "ig",
            "nodes",
            "--name",
            "demo",
            "--yes",
            "--cloudonly",
        ])
        .await;
    assert!(
        out.contains("Deleted instance group nodes of cluster demo and 3 instance(s)"),
        "{out}"
    );
    let names: Vec<String> = live(&env).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["demo-control-plane-0"]);
    let groups = env.ok(&["get", "instancegroups", "demo"]).await;
    assert!(!groups.contains("nodes"), "{groups}");
    let noop = env.ok(&["update", "cluster", "demo"]).await;
    assert!(noop.contains("No changes needed"), "{noop}");
}

/// kill -9 of `rolling-update --yes --cloudonly` at calls spread over a whole roll of 3 control
/// planes (behind a stable endpoint) and 4 nodes, each after a new size for both groups: the
/// nth ZStack call from the start of the roll hangs and kprov is killed while it waits; a re-run
/// finishes. Then: exactly one current VM per slot (no duplicate, no orphan), every instance
/// Ready, and — watched through the killed run and the re-run — never fewer than 3 running
/// control planes or 4 running nodes (maxSurge 1, maxUnavailable 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_roll_then_rerun_converges() {
    let env = Env::default().await;
    let spec = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\nspec:\n  provider: {{zstack: {{endpoint: \"{}\"}}}}\n  kubernetesVersion: {}\n  controlPlane: {{endpoint: api.demo.internal}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 3, arch: arm64, size: {{cpu: 2, memory: 2Gi}}}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: 4, arch: arm64, size: {{cpu: 2, memory: 2Gi}}}}\n",
        env.sim.endpoint(),
        kprov::spec::versions::default_version()
    );
    let file = env.state.path().join("demo.yaml");
    std::fs::write(&file, spec).unwrap();
    env.ok(&["create", "-f", file.to_str().unwrap()]).await;
    env.ok(&["update", "cluster", "demo", "--yes"]).await;
    let sizes = ["{cpu: 2, memory: 8Gi}", "{cpu: 2, memory: 4Gi}"];
    let resize = |k: usize| {
        let env = &env;
        async move {
            for g in ["control-plane", "nodes"] {
                env.set_group_spec(g, "size", sizes[k % 2]).await;
            }
        }
    };
    // how many calls an uninterrupted roll of all 7 makes
    resize(1).await;
    env.sim.reset_stats();
    env.ok(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
        .await;
    let total = env.sim.stats().total;
    let mut points: Vec<u64> = (0..8).map(|i| 1 + i * total / 8).collect();
    points.dedup();
    let running = |prefix: &str| {
        live(&env)
            .iter()
            .filter(|(n, _, s)| n.starts_with(prefix) && s == "Running")
            .count()
    };
    let mut killed_at = Vec::new();
    for (k, &n) in points.iter().enumerate() {
        resize(k).await;
        let stop = AtomicBool::new(false);
        let (min_cp, min_nodes) = (AtomicUsize::new(9), AtomicUsize::new(9));
        let rule = env
            .sim
            .add_fault(
                kprov_zstack_sim::FaultRule::latency(60_000, 0)
                    .nth(n)
                    .times(1),
            )
            .unwrap();
        let killed = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        min_cp.fetch_min(running("demo-control-plane-"), Ordering::SeqCst);
                        min_nodes.fetch_min(running("demo-nodes-"), Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                });
                let mut child = env
                    .cmd(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let killed = tokio::runtime::Handle::current()
                    .block_on(crate::zstack_e2e::kill_when_fired(&env, &mut child, &rule));
                env.sim.clear_faults();
                let out = env
                    .cmd(&[
                        "rolling-update",
                        "cluster",
                        "demo",
                        "--yes",
                        "--cloudonly",
                        "--force-unlock",
                    ])
                    .output()
                    .unwrap();
                stop.store(true, Ordering::SeqCst);
                assert!(out.status.success(), "re-run after kill at {n}: {out:?}");
                killed
            })
        });
        if killed {
            killed_at.push(n);
        }
        let vms = live(&env);
        let slots: BTreeSet<String> = vms
            .iter()
            .map(|(name, _, _)| slot(name).to_string())
            .collect();
        assert_eq!(vms.len(), 7, "after kill at call {n}: {vms:?}");
        assert_eq!(
            slots.len(),
            7,
            "one VM per slot after kill at call {n}: {vms:?}"
        );
        let listed = env.ok(&["get", "instances", "demo", "-o", "json"]).await;
        let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "Ready"),
            "after kill at call {n}: {rows}"
        );
        assert!(
            min_cp.load(Ordering::SeqCst) >= 3 && min_nodes.load(Ordering::SeqCst) >= 4,
            "after kill at call {n}: running control planes fell to {}, nodes to {}",
            min_cp.load(Ordering::SeqCst),
            min_nodes.load(Ordering::SeqCst)
        );
    }
    println!("KILL POINTS zstack rolling-update: {total} calls a roll, killed at {killed_at:?}");
    assert!(
        killed_at.len() >= 7,
        "only {} kill points reached: {killed_at:?}",
        killed_at.len()
    );
}

/// The uuids of the live VMs of group `nodes`.
fn node_uuids(env: &Env) -> BTreeSet<String> {
    live(env)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .map(|(_, u, _)| u)
        .collect()
}

/// `rolling-update --force` replaces up-to-date instances (a new generation: names and ids of
/// their own); killed after its first replacement, the next `--force` run continues the same
/// roll — the replacement made before the kill is kept, not replaced again — and ends with
/// every node new, no duplicate, nothing for `update` to do; a later `--force` is a new roll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_roll_replaces_up_to_date_nodes_and_resumes() {
    let env = Env::default().await;
    create_demo(&env).await;
    let preview = env
        .ok(&["rolling-update", "cluster", "demo", "--force", "-o", "json"])
        .await;
    let rows: serde_json::Value = serde_json::from_str(&preview).unwrap();
    let nodes_row = rows["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nodes")
        .unwrap()
        .clone();
    assert_eq!(nodes_row["need_update"], 3, "{rows}");
    let plain = env
        .ok(&["rolling-update", "cluster", "demo", "-o", "json"])
        .await;
    assert!(
        plain.contains("\"need_update\": 0"),
        "without --force: {plain}"
    );

    let args = [
        "rolling-update",
        "cluster",
        "demo",
        "--yes",
        "--force",
        "--cloudonly",
        "--instance-group-roles",
        "node",
    ];
    let first = node_uuids(&env);
    let mut child = env
        .cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    // killed once a first old node is gone: its slot's replacement alone is up to date, and
    // only the roll's record tells the re-run not to force it again
    let made_before_kill = loop {
        let now = node_uuids(&env);
        let new: BTreeSet<String> = now.difference(&first).cloned().collect();
        if !new.is_empty() && now.intersection(&first).count() < 3 {
            break new;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("rolling-update exited ({st}) before any replacement existed");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no replacement in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let mut again = args.to_vec();
    again.push("--force-unlock");
    let out = env.ok(&again).await;
    assert!(out.contains("Rolling update of cluster demo done"), "{out}");
    let second = node_uuids(&env);
    assert_eq!(second.len(), 3, "no duplicate, no orphan: {:?}", live(&env));
    assert!(second.is_disjoint(&first), "every node is new");
    assert!(
        made_before_kill.is_subset(&second),
        "the killed run's replacement is kept, not replaced again"
    );
    let names: BTreeSet<String> = live(&env)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .map(|(n, _, _)| slot(&n).to_string())
        .collect();
    assert_eq!(names.len(), 3, "one per slot: {names:?}");
    let noop = env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert!(noop.contains("No changes needed"), "{noop}");
    assert!(!noop.contains("rolling update"), "{noop}");

    // the roll is over: the next --force is a new one, a generation further
    env.ok(&args).await;
    let third = node_uuids(&env);
    assert_eq!(third.len(), 3);
    assert!(third.is_disjoint(&second), "every node is new again");
    let names: BTreeSet<String> = live(&env)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("demo-nodes-"))
        .map(|(n, _, _)| slot(&n).to_string())
        .collect();
    assert_eq!(names.len(), 3, "one per slot: {names:?}");
}

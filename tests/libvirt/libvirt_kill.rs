//! kill -9 of `kprov update --yes` and `kprov delete --yes` against the host's real libvirtd
//! (qemu:///system, TCG), then a re-run: exactly the desired domains exist (never a second one
//! for a node), and after delete nothing of the cluster is left (domains, volumes, pool).
//!
//! libvirt's `test:///default` driver lives inside one process, so a kill and a re-run can only
//! be observed on a real daemon. The domains need not boot an OS: the base image is a blank
//! qcow2 of a few MiB made with `qemu-img`, since only kprov's resource convergence is checked.
//! Kill points are picked by polling libvirt (one `virsh` call per poll) until the next step of
//! the run is visible — pool defined, base volume uploaded, its `.ok` marker, then per node its
//! root volume, seed ISO, domain defined, domain running; for delete, domains and volumes going
//! away — and the state libvirt holds right after the kill is recorded: each distinct state is
//! one kill point. Between the two, a rolling update of the workers through the Kubernetes API
//! stand-in (its kubelet registers a Node for each running domain): replacement domains live
//! next to the old ones, each old node is cordoned and drained before its domain goes, and never
//! fewer than 2 Ready schedulable workers. Shares the host's libvirtd with `tests/libvirt/libvirt_vm.rs` under the same host lock.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use kprov_testkit::kube_api::{CloudInstance, KubeApi, KubeApiOptions};
use kprov_testkit::vm::*;

use crate::KPROV;

/// On the way out (also on a failed assertion): delete the cluster, destroy what is left, and
/// undo the host setup.
struct Cleanup {
    store: String,
    cluster: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_cluster_and_leftovers(KPROV, &self.store, &self.cluster);
        host_teardown();
    }
}

/// A Kubernetes API stand-in for cluster `c` (its CA from the state store) whose kubelet
/// registers a Node for every running domain of the cluster, and an admin kubeconfig for it.
fn api_for(kprov: &Kprov, c: &str) -> (KubeApi, std::path::PathBuf) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = format!("file://{}", kprov.state.path().display());
    let (api, access) = rt.block_on(async {
        let repo = kprov::repo::Repo::new(kprov_state::open(&store).await.unwrap());
        let secrets = kprov::secrets::load(&repo, c).await.unwrap();
        let api = KubeApi::start(KubeApiOptions {
            ca_cert_pem: secrets.ca.cert_pem.clone(),
            ca_key_pem: secrets.ca.key_pem.clone(),
            node_ready_after: Duration::from_millis(300),
            pod_ready_after: Duration::from_millis(300),
        })
        .await;
        let access = kprov::ops::access::admin(&repo, c, Duration::from_secs(3600))
            .await
            .unwrap();
        (api, access)
    });
    let prefix = format!("{c}-");
    api.watch_cloud(
        Arc::new(move || {
            let prefix = prefix.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    virsh("list --name --state-running")
                        .lines()
                        .map(str::trim)
                        .filter(|d| d.starts_with(&prefix))
                        .map(|d| CloudInstance {
                            control_plane: d.contains("-control-plane-"),
                            name: d.to_string(),
                        })
                        .collect()
                })
                .await
                .unwrap()
            })
        }),
        Duration::from_millis(200),
    );
    let kubeconfig = kprov.state.path().join("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, &access.cert_pem, &access.key_pem);
    (api, kubeconfig)
}

/// What libvirt holds for cluster `c`, read in one `virsh` call: `domain NAME STATE`,
/// `pool NAME`, `volume NAME` lines.
fn snapshot(c: &str) -> BTreeSet<String> {
    let pool = format!("kprov.{c}");
    let out = Command::new("virsh")
        .args([
            "-q",
            "-c",
            "qemu:///system",
            &format!("list --all; pool-list --all --name; vol-list {pool}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("virsh");
    let mut s = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name] if *name == pool => {
                s.insert(format!("pool {name}"));
            }
            [name, ..] if name.starts_with(&format!("{pool}.")) => {
                s.insert(format!("volume {name}"));
            }
            [_id, name, state @ ..] if name.starts_with(&format!("{c}-")) => {
                s.insert(format!("domain {name} {}", state.join(" ")));
            }
            _ => {}
        }
    }
    s
}

fn has(s: &BTreeSet<String>, prefix: &str) -> bool {
    s.iter().any(|x| x.starts_with(prefix))
}

/// Start `kprov ARGS`, poll libvirt until `reached` holds for what it shows (or kprov exits),
/// then SIGKILL it. Returns the state right after the kill, or `None` if kprov finished first.
fn kill_when(
    kprov: &Kprov,
    args: &[&str],
    cluster: &str,
    reached: &dyn Fn(&BTreeSet<String>) -> bool,
) -> Option<BTreeSet<String>> {
    let mut child = kprov
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if reached(&snapshot(cluster)) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return Some(snapshot(cluster));
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "kprov {args:?} neither reached the kill point nor exited"
        );
    }
}

#[test]
fn libvirt_kill_9_of_update_and_delete_at_distinct_points_then_rerun_converges() {
    let test = "libvirt_kill_9_of_update_and_delete_at_distinct_points_then_rerun_converges";
    let _serial = vm_lock();
    let _host = host_lock();
    if !require_vm_peers(test) {
        return;
    }
    let t_all = Instant::now();
    host_setup();
    let cluster = format!("lk{}", std::process::id() % 100000);
    let kprov = Kprov::for_vms(KPROV);
    let _guard = Cleanup {
        store: format!("file://{}", kprov.state.path().display()),
        cluster: cluster.clone(),
    };
    // A blank 16 MiB qcow2 as the base image: nothing boots, every libvirt object is real.
    let img = tempfile::tempdir().unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(img.path().join("base.qcow2"))
        .arg("16M")
        .status()
        .expect("qemu-img");
    assert!(st.success(), "qemu-img create failed");
    let create = || {
        // forwards to a port nothing listens on: the guests never run an OS anyway
        kprov.create_cluster(&cluster, "amd64", 2, "2:2Gi", "1:1Gi", img.path(), 9, 9, 9)
    };
    let cp = format!("{cluster}-control-plane-0");
    let nodes = [format!("{cluster}-nodes-0"), format!("{cluster}-nodes-1")];
    let mut want: Vec<String> = vec![cp.clone(), nodes[0].clone(), nodes[1].clone()];
    want.sort();
    let pool = format!("pool kprov.{cluster}");
    let vol = |suffix: &str| format!("volume kprov.{cluster}.{suffix}");
    let converged = |when: &str| {
        assert_eq!(
            domains(&format!("{cluster}-")),
            want,
            "{when}: exactly the desired domains"
        );
        // A start the killed run asked for may still be finishing inside libvirtd.
        let t = Instant::now();
        let mut s = snapshot(&cluster);
        while t.elapsed() < Duration::from_secs(15)
            && !want
                .iter()
                .all(|d| s.contains(&format!("domain {d} running")))
        {
            std::thread::sleep(Duration::from_millis(200));
            s = snapshot(&cluster);
        }
        for d in &want {
            assert!(
                s.contains(&format!("domain {d} running")),
                "{when}: {d} runs: {s:?}"
            );
        }
    };

    // --- update --yes: kill at each visible step of the run, re-run, check.
    type Step = Box<dyn Fn(&BTreeSet<String>) -> bool>;
    let mut steps: Vec<(String, Step)> = vec![
        (
            "pool defined".into(),
            Box::new({
                let p = pool.clone();
                move |s| s.contains(&p)
            }),
        ),
        (
            "base volume created".into(),
            Box::new({
                let v = vol("base-amd64");
                move |s| s.iter().any(|x| x.starts_with(&v) && x.ends_with(".qcow2"))
            }),
        ),
        (
            "base upload marked complete".into(),
            Box::new({
                let v = vol("base-amd64");
                move |s| s.iter().any(|x| x.starts_with(&v) && x.ends_with(".ok"))
            }),
        ),
    ];
    // Every step of the first control plane (it is created alone); of the workers, created in
    // parallel, one define and one start (their volume steps add no new kind of state, and
    // every iteration costs ~7 s of CI).
    for (d, all_steps) in [(&cp, true), (&nodes[0], false), (&nodes[1], false)] {
        let (root, seed) = (vol(&format!("{d}.root")), vol(&format!("{d}.seed")));
        let dom = format!("domain {d} ");
        let running = format!("domain {d} running");
        if all_steps {
            steps.push((format!("{d} root volume"), Box::new(move |s| has(s, &root))));
            steps.push((format!("{d} seed ISO"), Box::new(move |s| has(s, &seed))));
        }
        if all_steps || d == &nodes[0] {
            steps.push((format!("{d} defined"), Box::new(move |s| has(s, &dom))));
        }
        if all_steps || d == &nodes[1] {
            steps.push((
                format!("{d} running"),
                Box::new(move |s| s.contains(&running)),
            ));
        }
    }
    let mut update_points: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut named = Vec::new();
    for (what, reached) in &steps {
        create();
        let at = kill_when(
            &kprov,
            &["update", "cluster", &cluster, "--yes"],
            &cluster,
            reached.as_ref(),
        );
        let Some(at) = at else {
            eprintln!("[kill] update finished before {what}");
            kprov.ok(&["delete", "cluster", &cluster, "--yes"]);
            continue;
        };
        if update_points.insert(at.clone()) {
            named.push(what.clone());
        }
        let out = kprov.ok(&["update", "cluster", &cluster, "--yes", "--force-unlock"]);
        assert!(out.contains("up to date"), "after kill at {what}: {out}");
        converged(&format!("update killed at {what} ({} objects)", at.len()));
        let again = kprov.ok(&["update", "cluster", &cluster]);
        assert!(
            again.contains("No changes needed"),
            "after kill at {what}: {again}"
        );
        kprov.ok(&["delete", "cluster", &cluster, "--yes"]);
        let left = leftovers(&cluster);
        assert!(
            left.is_empty(),
            "after kill at {what}, delete left {left:?}"
        );
    }
    println!(
        "KILL POINTS libvirt update: {} distinct states {named:?}",
        update_points.len()
    );

    // --- rolling-update through the Kubernetes API: the nodes' memory changes; each node is
    // replaced by a domain named SLOT-xxxxxx (the new spec's suffix) made next to the old one,
    // whose Node the API stand-in registers once libvirt runs it (as its kubelet would); the
    // old node is cordoned, drained (a Deployment of 2 with minAvailable 1 on the workers) and
    // its Node deleted before its domain goes; never fewer than 2 Ready schedulable workers.
    create();
    kprov.ok(&["update", "cluster", &cluster, "--yes", "--force-unlock"]);
    converged("before the roll");
    let spec = kprov.ok(&["get", "cluster", &cluster, "-o", "yaml"]);
    assert_eq!(
        spec.matches("memory: 1Gi").count(),
        1,
        "only the nodes have 1Gi: {spec}"
    );
    let (api, kubeconfig) = api_for(&kprov, &cluster);
    let kc = kubeconfig.to_str().unwrap();
    api.add_deployment("default", "web", 2, Some(1), false);
    kprov.ok(&[
        "validate",
        "cluster",
        &cluster,
        "--wait",
        "120s",
        "--kubeconfig",
        kc,
    ]);
    let file = kprov.state.path().join("resized.yaml");
    std::fs::write(&file, spec.replace("memory: 1Gi", "memory: 1536Mi")).unwrap();
    kprov.ok(&["create", "-f", file.to_str().unwrap(), "--replace"]);
    let started = Instant::now();
    let out = kprov.ok(&[
        "rolling-update",
        "cluster",
        &cluster,
        "--yes",
        "--kubeconfig",
        kc,
        "--poll-interval",
        "200ms",
        "--validation-timeout",
        "120s",
    ]);
    assert!(
        out.contains("2 replacement(s) created, 2 old instance(s) deleted"),
        "{out}"
    );
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
        min_workers >= 2 && min_web >= 1,
        "workers fell to {min_workers}, web to {min_web} ({} samples)",
        samples.len()
    );
    let cordons = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/api/v1/nodes/"))
        .count();
    assert!(cordons >= 2, "both old nodes cordoned: {cordons} PATCHes");
    let rolled = domains(&format!("{cluster}-"));
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    assert!(rolled.contains(&cp), "the control plane stays: {rolled:?}");
    for n in &nodes {
        assert!(
            rolled
                .iter()
                .any(|d| d.len() == n.len() + 7 && d.starts_with(&format!("{n}-"))),
            "{n} replaced by {n}-xxxxxx: {rolled:?}"
        );
    }
    let s = snapshot(&cluster);
    assert!(
        rolled
            .iter()
            .all(|d| s.contains(&format!("domain {d} running"))),
        "{s:?}"
    );
    let nodes_left: BTreeSet<String> = api
        .nodes()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(
        nodes_left,
        rolled.iter().cloned().collect::<BTreeSet<_>>(),
        "the old Nodes are deleted"
    );
    drop(api);
    kprov.ok(&["delete", "cluster", &cluster, "--yes"]);
    assert!(
        leftovers(&cluster).is_empty(),
        "after the roll, delete left {:?}",
        leftovers(&cluster)
    );

    // --- delete --yes: from a full cluster, kill as domains and volumes go away (counted
    // against what the full cluster holds, console logs included).
    type Gone = Box<dyn Fn(&BTreeSet<String>, &BTreeSet<String>) -> bool>;
    let count = |s: &BTreeSet<String>, kind: &str| s.iter().filter(|x| x.starts_with(kind)).count();
    let mut delete_steps: Vec<(String, Gone)> = Vec::new();
    for k in 1..=3usize {
        delete_steps.push((
            format!("{k} domain(s) gone"),
            Box::new(move |full, s| count(s, "domain ") + k <= count(full, "domain ")),
        ));
    }
    for k in [1usize, 3, 5, 7] {
        delete_steps.push((
            format!("{k} volume(s) gone"),
            Box::new(move |full, s| count(s, "volume ") + k <= count(full, "volume ")),
        ));
    }
    delete_steps.push((
        "pool gone".into(),
        Box::new({
            let p = pool.clone();
            move |_, s| !s.contains(&p)
        }),
    ));
    let mut delete_points: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut named = Vec::new();
    for (what, reached) in &delete_steps {
        create();
        // A delete killed after it removed the cluster's state but before it released its lease
        // leaves that lease (≤ 60 s) behind the re-created cluster: break it.
        kprov.ok(&["update", "cluster", &cluster, "--yes", "--force-unlock"]);
        converged("before delete");
        let full = snapshot(&cluster);
        let at = kill_when(
            &kprov,
            &["delete", "cluster", &cluster, "--yes"],
            &cluster,
            &|s| reached(&full, s),
        );
        let Some(at) = at else {
            eprintln!("[kill] delete finished before {what}");
            let left = leftovers(&cluster);
            assert!(left.is_empty(), "a complete delete left {left:?}");
            continue;
        };
        if at != full && delete_points.insert(at.clone()) {
            named.push(what.clone());
        }
        let out = kprov.run(&["delete", "cluster", &cluster, "--yes", "--force-unlock"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The state objects go last, once the cloud is empty: a run killed after removing them
        // leaves nothing for the re-run to find (checked below through libvirt).
        assert!(
            (out.status.success() && text.contains("Deleted cluster"))
                || (!out.status.success() && text.contains("not found")),
            "after kill at {what}: {text}"
        );
        let left = leftovers(&cluster);
        assert!(
            left.is_empty(),
            "after kill at {what}, the re-run left {left:?}"
        );
        assert!(
            snapshot(&cluster).is_empty(),
            "after kill at {what}: {:?}",
            snapshot(&cluster)
        );
    }
    println!(
        "KILL POINTS libvirt delete: {} distinct states {named:?}",
        delete_points.len()
    );

    // --- two update --yes at once: exactly one proceeds, the other exits 3 naming the holder.
    create();
    // as above: a dead delete's lease may remain (file store: the object `CLUSTER/lock`)
    let _ = std::fs::remove_file(kprov.state.path().join(&cluster).join("lock"));
    let spawn = || {
        kprov
            .cmd(&["update", "cluster", &cluster, "--yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(3)),
        "codes {codes:?}"
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    let msg = String::from_utf8_lossy(&loser.stderr);
    assert!(msg.contains("locked by") && msg.contains("pid"), "{msg}");
    converged("after two racing updates");
    kprov.ok(&["delete", "cluster", &cluster, "--yes"]);
    assert!(leftovers(&cluster).is_empty());

    // libvirt's steps take milliseconds on a blank image, so how many targeted steps leave a
    // state of their own varies from run to run (6–14 seen); fewer than 6 means the kills are
    // not landing inside the runs at all.
    assert!(
        update_points.len() + delete_points.len() >= 6,
        "only {} + {} distinct kill points",
        update_points.len(),
        delete_points.len()
    );
    eprintln!(
        "[kill] libvirt kill matrix done in {:.1}s",
        t_all.elapsed().as_secs_f64()
    );
}

//! A rolling update of a control-plane group of 3 with real etcd, first uninterrupted: each
//! control plane's etcd pod is a real etcd member (Debian's etcd 3.4, TLS, certificates from
//! the cluster's etcd CA) reached by kprov only through the stand-in's port-forward; a
//! replacement control plane "runs kubeadm join" (the test adds its etcd member when its Node
//! registers); kprov removes each old member with `MemberRemove` only once the replacement is a
//! caught-up member: at the end etcd's members are the three replacements, and at no time were
//! fewer than 2 control-plane Nodes Ready.
//!
//! Then kill -9 of `rolling-update --yes` through the Kubernetes API while it rolls the
//! control-plane group of 3 (real etcd members, reached only through the stand-in's port-forwards) next to a
//! node group of 4, on the ZStack simulator: the nth API call of the roll — the port-forwards
//! kprov opens to etcd (MemberList, Status, MemberRemove go through them), cordons, evictions,
//! Node deletions, waits — hangs and kprov is killed while it waits; a re-run (`--force-unlock`)
//! finishes. After every re-run: one up-to-date VM per slot, etcd's members exactly the 3
//! running control planes, the Nodes exactly the running VMs, none cordoned; sampled through
//! the killed run and the re-run, never fewer than 2 Ready control planes (never two down) nor
//! fewer than 4 Ready schedulable workers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kprov_testkit::etcd::EtcdCluster;
use kprov_testkit::kube_api::KubeApi;

use crate::rolling_live::{
    assert_converged, cluster_with_api, kill_at_api_call, lister, roll_args, running_vms,
};
use crate::zstack_e2e::Env;

/// Sets `stop` when dropped, so the etcd thread ends even when an assertion fails.
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Point the stand-in's port-forward for `etcd-NAME` at member `name`.
pub(crate) fn forward(api: &KubeApi, name: &str, etcd: &EtcdCluster) {
    let m = etcd
        .members
        .iter()
        .rev()
        .find(|m| m.name == name)
        .expect("member");
    let addr = format!("127.0.0.1:{}", m.client_port).parse().unwrap();
    api.forward_pod_port("kube-system", &format!("etcd-{name}"), 2379, addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_api_and_etcd_points_of_a_control_plane_roll_then_rerun_converges() {
    let test = "kill_9_at_api_and_etcd_points_of_a_control_plane_roll";
    let env = Env::default().await;
    let (api, repo, kubeconfig) = cluster_with_api(&env, 3, 4).await;
    let kc = kubeconfig.to_str().unwrap().to_string();
    let etcd_ca = kprov::secrets::load(&repo, "demo").await.unwrap().etcd_ca;
    let first: Vec<String> = (0..3).map(|i| format!("demo-control-plane-{i}")).collect();
    let Some(etcd) = tokio::task::block_in_place(|| {
        EtcdCluster::start_named(
            test,
            &env.state.path().join("etcd"),
            &etcd_ca.cert_pem,
            &etcd_ca.key_pem,
            &first,
        )
    }) else {
        return;
    };
    for n in &first {
        forward(&api, n, &etcd);
    }
    let etcd = Mutex::new(etcd);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (tx, rx) = (Mutex::new(tx), Mutex::new(rx));
    api.on_register(std::sync::Arc::new(move |name: &str, cp: bool| {
        if cp {
            let _ = tx.lock().unwrap().send(name.to_string());
        }
    }));
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    let rt = tokio::runtime::Handle::current();
    let stop = AtomicBool::new(false);
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            // "kubeadm join --control-plane" for every new control plane whose Node registers;
            // a control plane whose VM is gone stops its member
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(name) = rx.lock().unwrap().recv_timeout(Duration::from_millis(50)) {
                        if !first.contains(&name) {
                            let mut e = etcd.lock().unwrap();
                            e.kubeadm_join(&name);
                            forward(&api, &name, &e);
                        }
                    }
                    let up = running_vms(&env);
                    let mut e = etcd.lock().unwrap();
                    let gone: Vec<String> = e
                        .members
                        .iter()
                        .map(|m| m.name.clone())
                        .filter(|n| !up.contains(n))
                        .collect();
                    for n in gone {
                        e.stop(&n);
                    }
                }
            });
            rt.block_on(env.ok(&[
                "validate",
                "cluster",
                "demo",
                "--wait",
                "60s",
                "--kubeconfig",
                &kc,
            ]));
            matrix(&env, &api, &etcd, &kc, &rt);
        })
    });
}

/// The kill points: an uninterrupted roll first, to count its API calls and find its
/// port-forwards to etcd; then a kill at each of those (up to 5) and at 3 calls spread over
/// the rest, the control planes' size toggled before each.
fn matrix(
    env: &Env,
    api: &KubeApi,
    etcd: &Mutex<EtcdCluster>,
    kc: &str,
    rt: &tokio::runtime::Handle,
) {
    let roll = roll_args(kc, "60s");
    let sizes = ["{cpu: 2, memory: 4Gi}", "{cpu: 2, memory: 2Gi}"];
    rt.block_on(env.set_group_spec("control-plane", "size", sizes[0]));
    let first = running_vms(env);
    let before = api.requests().len();
    let started = std::time::Instant::now();
    let out = rt.block_on(env.ok(&roll));
    // the uninterrupted roll: each old member removed once its replacement caught up
    assert!(
        out.contains("3 replacement(s) created, 3 old instance(s) deleted"),
        "{out}"
    );
    let members = etcd.lock().unwrap().member_names();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members
            .iter()
            .all(|m| m.starts_with("demo-control-plane-") && !first.contains(m)),
        "etcd's members are the 3 replacements: {members:?}"
    );
    let min_cp = api
        .timeline()
        .iter()
        .filter(|s| s.at >= started)
        .map(|s| s.ready_control_planes)
        .min()
        .unwrap();
    assert!(min_cp >= 2, "Ready control planes fell to {min_cp}");
    let calls = api.requests()[before..].to_vec();
    let total = calls.len();
    let forwards: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path.ends_with("/portforward"))
        .map(|(i, _)| i + 1)
        .collect();
    assert!(
        !forwards.is_empty(),
        "etcd is reached through port-forwards"
    );
    let step = (forwards.len() / 5).max(1);
    let mut points: Vec<usize> = forwards.iter().step_by(step).take(5).copied().collect();
    points.extend([total / 4, total / 2, 3 * total / 4]);
    points.sort();
    points.dedup();
    let mut killed_at = Vec::new();
    for (k, &n) in points.iter().enumerate() {
        rt.block_on(env.set_group_spec("control-plane", "size", sizes[(k + 1) % 2]));
        let started = std::time::Instant::now();
        let killed = kill_at_api_call(env, api, &roll, n);
        let mut rerun = roll.to_vec();
        rerun.push("--force-unlock");
        let out = rt.block_on(env.run(&rerun));
        assert!(
            out.status.success(),
            "re-run after kill at call {n} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if killed {
            killed_at.push(n);
        }
        let up = rt.block_on(assert_converged(env, api, n, 7));
        let cps: BTreeSet<String> = up
            .iter()
            .filter(|v| v.contains("-control-plane-"))
            .cloned()
            .collect();
        let mut members = etcd.lock().unwrap().member_names();
        members.sort();
        assert_eq!(
            members.iter().cloned().collect::<BTreeSet<_>>(),
            cps,
            "after kill at call {n}: etcd's members are the running control planes"
        );
        assert_eq!(members.len(), 3, "after kill at call {n}: {members:?}");
        let samples: Vec<_> = api
            .timeline()
            .into_iter()
            .filter(|s| s.at >= started)
            .collect();
        let min_cp = samples
            .iter()
            .map(|s| s.ready_control_planes)
            .min()
            .unwrap();
        let min_workers = samples.iter().map(|s| s.ready_workers).min().unwrap();
        assert!(
            min_cp >= 2 && min_workers >= 4,
            "after kill at call {n}: Ready control planes fell to {min_cp}, workers to {min_workers}"
        );
    }
    println!(
        "KILL POINTS API+etcd control-plane roll: {total} API calls a roll ({} port-forwards to etcd at {forwards:?}), killed at {killed_at:?}",
        forwards.len()
    );
    assert!(
        killed_at.len() + 1 >= points.len(),
        "only {killed_at:?} of {points:?} reached"
    );
}

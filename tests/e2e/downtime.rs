//! `rolling-update --allow-control-plane-downtime`: a cluster's only control plane replaced by
//! etcd snapshot and restore, with the state in a real `s3://` store (moto), the cloud the
//! ZStack simulator, the API the Kubernetes stand-in and etcd a real member (Debian's etcd 3.4,
//! TLS, certificates from the store's etcd CA) reached only through the stand-in's
//! port-forward.
//!
//! The replacement's boot is played by the test from the user-data the simulator received:
//! the `bootstrap.sh` and `etcd-restore.env` kprov rendered are run as cloud-init would run
//! them — the restore phase fetches the encrypted copy from the store's presigned URL with
//! curl, checks its SHA-256, decrypts it with `openssl enc -d -chacha20` and restores it (a
//! `ctr` stand-in runs Debian's `etcdctl snapshot restore` where a node runs the etcd image's
//! `etcdutl`, same flags) — then an etcd member starts on the restored data directory. While no
//! control plane runs, the stand-in is down (connections closed unanswered), so kprov must wait
//! for the replacement's API server.
//!
//! Proves: a key written before the roll is served by the replacement's etcd; the old Node (back
//! from the snapshot) is deleted; the restore record and copy are gone and the snapshot is kept
//! as a secret; a re-run after kill -9 while deleting the old control plane (not done / done)
//! and while creating the replacement converges the same way; a `file://` store and a missing
//! flag are refused with exit 2 and nothing changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kprov_testkit::etcd::EtcdCluster;
use kprov_testkit::kube_api::KubeApi;
use kprov_testkit::moto::Moto;
use kprov_testkit::raw_http;
use kprov_zstack_sim::{FaultRule, SimConfig};

use crate::rolling_crash::{forward, StopOnDrop};
use crate::rolling_live::{cluster_with_api, lister, running_vms};
use crate::zstack_e2e::{kill_when_fired, Env};

/// A `ctr` for running the node's restore phase here: `images pull` does nothing; `run ...
/// etcdutl ARGS` runs `etcdctl ARGS` (etcd 3.4's `snapshot restore` takes the same flags).
const FAKE_CTR: &str = r#"#!/bin/sh
case " $* " in
  *" images pull "*) exit 0 ;;
esac
while [ $# -gt 0 ] && [ "$1" != etcdutl ]; do shift; done
[ "$1" = etcdutl ] || { echo "fake ctr: no etcdutl command in: $*" >&2; exit 2; }
shift
ETCDCTL_API=3 exec etcdctl "$@"
"#;

/// What cloud-init does on control plane `name` up to `kubeadm init`, as far as etcd goes: its
/// user-data's `bootstrap.sh` and restore settings, then the restore phase, in `dir`. Returns
/// the restored data directory.
fn boot_restore(env: &Env, name: &str, dir: &Path, api_port: u16) -> PathBuf {
    let ud = env
        .sim
        .user_data(name)
        .expect("the replacement has user-data");
    let cc = kprov::bootstrap::decompress_user_data(&ud).unwrap();
    let files = kprov_testkit::fetch_trace::trace(&cc).files;
    let etc = dir.join("etc");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let script = dir.join("bootstrap.sh");
    std::fs::write(&script, &files[kprov::bootstrap::SCRIPT_PATH]).unwrap();
    let restore_env = files
        .get(kprov::bootstrap::RESTORE_ENV_PATH)
        .unwrap_or_else(|| panic!("{name}'s user-data has no etcd restore settings"));
    std::fs::write(etc.join("etcd-restore.env"), restore_env).unwrap();
    let ctr = bin.join("ctr");
    std::fs::write(&ctr, FAKE_CTR).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&ctr, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.join("etcd-data");
    let out = std::process::Command::new("bash")
        .arg("-c")
        // a function named ctr wins over the PATH the script sets
        .arg(format!(
            ". {} && ctr() {{ {} \"$@\"; }} && phase_etcd_restore",
            script.display(),
            ctr.display()
        ))
        .env("KPROV_SOURCE_ONLY", "1")
        .env("KPROV_ENV", "/dev/null")
        .env("KPROV_ETC", &etc)
        .env("KPROV_ETCD_DATA_DIR", &data)
        .env("KPROV_RESTORE_DIR", dir.join("restore"))
        .env("KPROV_LOG", dir.join("bootstrap.log"))
        .env("KPROV_NODE_NAME", name)
        .env("KPROV_API_ENDPOINT", format!("127.0.0.1:{api_port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the restore phase of {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("restore").exists(),
        "the decrypted snapshot is removed"
    );
    data
}

/// The control planes among the running VMs.
fn running_control_planes(env: &Env) -> BTreeSet<String> {
    running_vms(env)
        .into_iter()
        .filter(|n| n.contains("-control-plane-"))
        .collect()
}

/// The test's model of the cluster's control plane: whose etcd serves, and the API's state.
struct ControlPlane {
    current: String,
    down: bool,
    boots: usize,
}

/// One step of the boot thread: when the control plane's VM is gone, its etcd stops and the
/// API goes down; when a new control plane runs, it restores, its etcd starts and the API is up.
fn watch_step(
    env: &Env,
    api: &KubeApi,
    etcd: &Mutex<EtcdCluster>,
    cp: &Mutex<ControlPlane>,
    dir: &Path,
) {
    let up = running_control_planes(env);
    let mut cp = cp.lock().unwrap();
    if !cp.down && !up.contains(&cp.current) {
        api.set_down(true);
        etcd.lock().unwrap().stop(&cp.current);
        cp.down = true;
    }
    if cp.down {
        // any control plane running now is a new machine (possibly under the lost one's name)
        if let Some(new) = up.iter().next() {
            cp.boots += 1;
            let data = boot_restore(
                env,
                new,
                &dir.join(format!("boot-{}", cp.boots)),
                api.port(),
            );
            let mut e = etcd.lock().unwrap();
            e.start_restored(new, &data);
            forward(api, new, &e);
            cp.current = new.clone();
            cp.down = false;
            api.set_down(false);
        }
    }
}

/// `etcdctl get KEY` through the member serving now.
fn etcd_get(etcd: &Mutex<EtcdCluster>, key: &str) -> String {
    let mut e = etcd.lock().unwrap();
    let eps = e.endpoints();
    let out = e.etcdctl(&eps, &["get", key, "--print-value-only"]);
    assert!(out.status.success(), "etcdctl get: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn etcd_put(etcd: &Mutex<EtcdCluster>, key: &str, value: &str) {
    let mut e = etcd.lock().unwrap();
    let eps = e.endpoints();
    let out = e.etcdctl(&eps, &["put", key, value]);
    assert!(out.status.success(), "etcdctl put: {out:?}");
}

fn roll_args(kc: &str) -> Vec<&str> {
    vec![
        "rolling-update",
        "cluster",
        "demo",
        "--yes",
        "--allow-control-plane-downtime",
        "--kubeconfig",
        kc,
        "--poll-interval",
        "100ms",
        "--validation-timeout",
        "90s",
    ]
}

/// Cluster `demo` on the simulator with its state in moto's S3: 1 control plane (its etcd a
/// real member, reached through the API stand-in's port-forward) and `nodes` workers,
/// validated.
struct Setup {
    _moto: Option<Moto>,
    env: Env,
    api: KubeApi,
    repo: kprov::repo::Repo,
    kc: String,
    etcd: Mutex<EtcdCluster>,
    first: String,
}

/// [`Setup`], or `None` when a peer is missing (after its install hint) under
/// `KPROV_SKIP_PEERS=1`.
async fn setup(test: &str, nodes: u32) -> Option<Setup> {
    setup_on(test, nodes, true).await
}

/// [`setup`] with the state in moto's S3 (`s3`) or in a `file://` directory.
async fn setup_on(test: &str, nodes: u32, s3: bool) -> Option<Setup> {
    let moto = if s3 { Some(Moto::start(test)?) } else { None };
    let mut env = Env::new(SimConfig {
        job_delay: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    if let Some(moto) = &moto {
        let (status, body) = raw_http::request(moto.port, "PUT", "/kprov-state", "").unwrap();
        assert_eq!(status, 200, "create bucket: {body}");
        env.s3 = Some(("s3://kprov-state/team".into(), moto.endpoint()));
    }
    let (api, repo, kubeconfig) = cluster_with_api(&env, 1, nodes).await;
    let kc = kubeconfig.to_str().unwrap().to_string();
    let etcd_ca = kprov::secrets::load(&repo, "demo").await.unwrap().etcd_ca;
    let first = "demo-control-plane-0".to_string();
    let etcd = tokio::task::block_in_place(|| {
        EtcdCluster::start_named(
            test,
            &env.state.path().join("etcd"),
            &etcd_ca.cert_pem,
            &etcd_ca.key_pem,
            std::slice::from_ref(&first),
        )
    })?;
    forward(&api, &first, &etcd);
    api.watch_cloud(lister(&env), Duration::from_millis(100));
    env.ok(&[
        "validate",
        "cluster",
        "demo",
        "--wait",
        "60s",
        "--kubeconfig",
        &kc,
    ])
    .await;
    Some(Setup {
        _moto: moto,
        env,
        api,
        repo,
        kc,
        etcd: Mutex::new(etcd),
        first,
    })
}

/// Run `f` while a thread plays the control planes' machines ([`watch_step`]); returns the
/// number of control planes that booted and restored.
fn with_boots(s: &Setup, f: impl std::future::Future<Output = ()>) -> usize {
    let cp = Mutex::new(ControlPlane {
        current: s.first.clone(),
        down: false,
        boots: 0,
    });
    let boots = s.env.state.path().join("boots");
    let stop = AtomicBool::new(false);
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    watch_step(&s.env, &s.api, &s.etcd, &cp, &boots);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            rt.block_on(f);
        })
    });
    let n = cp.lock().unwrap().boots;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_control_plane_is_replaced_from_an_etcd_snapshot_and_kills_resume() {
    let test = "the_only_control_plane_is_replaced_from_an_etcd_snapshot";
    let Some(s) = setup(test, 2).await else {
        return;
    };
    let (env, kc, first) = (&s.env, s.kc.as_str(), &s.first);

    // refused without the flag: exit 2, naming it
    env.set_group_spec("control-plane", "size", "{cpu: 2, memory: 4Gi}")
        .await;
    let mut plain = roll_args(kc);
    plain.retain(|a| *a != "--allow-control-plane-downtime");
    let out = env.run(&plain).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--allow-control-plane-downtime"), "{err}");
    assert_eq!(running_control_planes(env), BTreeSet::from([first.clone()]));

    let boots = with_boots(&s, scenarios(&s));
    assert_eq!(boots, 4, "one restore per roll");
}

/// An uninterrupted roll, then one killed at each of three points of the cloud side.
async fn scenarios(s: &Setup) {
    let (env, api, repo, etcd, kc) = (&s.env, &s.api, &s.repo, &s.etcd, s.kc.as_str());
    let sizes = ["{cpu: 2, memory: 2Gi}", "{cpu: 2, memory: 4Gi}"];
    // (what is killed, the fault that holds kprov there)
    let kills: [(&str, Option<FaultRule>); 4] = [
        ("nothing", None),
        (
            "the old control plane's destroy, not carried out",
            Some(
                FaultRule::hang(false)
                    .method("DELETE")
                    .path("^/zstack/v1/vm-instances/"),
            ),
        ),
        (
            "the old control plane's destroy, carried out",
            Some(
                FaultRule::hang(true)
                    .method("DELETE")
                    .path("^/zstack/v1/vm-instances/"),
            ),
        ),
        (
            "the replacement's create, carried out",
            Some(
                FaultRule::hang(true)
                    .method("POST")
                    .path("^/zstack/v1/vm-instances$"),
            ),
        ),
    ];
    for (k, (what, rule)) in kills.into_iter().enumerate() {
        if k > 0 {
            env.set_group_spec("control-plane", "size", sizes[(k + 1) % 2])
                .await;
        }
        let value = format!("written before roll {k}");
        etcd_put(etcd, "/registry/kprov-test", &value);
        if let Some(rule) = rule {
            let id = env.sim.add_fault(rule.times(1)).unwrap();
            let mut child = env
                .cmd(&roll_args(kc))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            assert!(
                kill_when_fired(env, &mut child, &id).await,
                "roll {k}: kprov finished before {what}"
            );
            env.sim.clear_faults();
            if k >= 2 {
                assert!(
                    repo.store
                        .get("demo/secrets/etcd-restore.yaml")
                        .await
                        .unwrap()
                        .is_some(),
                    "roll {k}: killed at {what}, the restore is pending"
                );
                // another command than the interrupted one is refused while it is pending
                let out = env
                    .run(&[
                        "rolling-update",
                        "cluster",
                        "demo",
                        "--yes",
                        "--kubeconfig",
                        kc,
                        "--force-unlock",
                    ])
                    .await;
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "roll {k}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut args = roll_args(kc);
        args.push("--force-unlock");
        let text = env.ok(&args).await;
        let new = running_control_planes(env).into_iter().next().unwrap();
        assert!(
            text.contains(&format!("replaced by {new} from etcd backup")),
            "roll {k} (killed at {what}): {text}"
        );
        converged(env, api, repo, etcd, k, &new, &value).await;
    }
}

/// After roll `k`: the control plane `new` and the 2 workers run, the Nodes are the running VMs,
/// etcd serves what was written before the roll, the restore record and copy are gone and the
/// snapshot is kept as a backup; `update` is a no-op.
async fn converged(
    env: &Env,
    api: &KubeApi,
    repo: &kprov::repo::Repo,
    etcd: &Mutex<EtcdCluster>,
    k: usize,
    new: &str,
    value: &str,
) {
    let running = running_vms(env);
    assert_eq!(running.len(), 3, "roll {k}: {running:?}");
    assert_eq!(
        running_control_planes(env),
        BTreeSet::from([new.to_string()])
    );
    let nodes: BTreeSet<String> = api
        .nodes()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(nodes, running, "roll {k}: the old Node is deleted");
    assert_eq!(etcd_get(etcd, "/registry/kprov-test"), value, "roll {k}");
    for key in [
        "demo/secrets/etcd-restore.yaml",
        "demo/restore/etcd-snapshot.enc",
    ] {
        assert!(
            repo.store.get(key).await.unwrap().is_none(),
            "roll {k}: {key} left"
        );
    }
    let backups = kprov::ops::backup::list(repo, "demo").await.unwrap();
    assert!(
        backups.len() > k,
        "roll {k}: the snapshots are kept as backups: {backups:?}"
    );
    let last = kprov::ops::backup::read(repo, "demo", &backups.last().unwrap().id)
        .await
        .unwrap();
    assert!(last.len() > 1000, "roll {k}: a real snapshot");
    let plan = env.ok(&["update", "cluster", "demo"]).await;
    assert!(
        plan.contains("No changes needed") && !plan.contains("rolling update"),
        "roll {k}: {plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_control_plane_cannot_read_is_refused_before_anything_changes() {
    let env = Env::default().await;
    let (_api, _repo, kubeconfig) = cluster_with_api(&env, 1, 0).await;
    env.set_group_spec("control-plane", "size", "{cpu: 2, memory: 4Gi}")
        .await;
    let before = running_vms(&env);
    let kc = kubeconfig.to_str().unwrap();
    let out = env.run(&roll_args(kc)).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("s3://") && err.contains("file://"), "{err}");
    assert!(err.contains("--snapshot-to"), "{err}");
    assert_eq!(running_vms(&env), before, "nothing changed");
    // --snapshot-to without a file repository the node could fetch it from: refused too
    let mut args = roll_args(kc);
    args.extend(["--snapshot-to", "file:///var/tmp/nowhere"]);
    let out = env.run(&args).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("spec.assets.fileRepository is not set"),
        "{err}"
    );
    assert_eq!(running_vms(&env), before, "nothing changed");
    assert!(!std::path::Path::new("/var/tmp/nowhere").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_control_plane_is_lost_is_restored_from_a_backup() {
    let test = "a_cluster_whose_control_plane_is_lost_is_restored_from_a_backup";
    let Some(s) = setup(test, 1).await else {
        return;
    };
    restored_from_a_backup(&s, &[]).await;
}

/// The same with the state in a `file://` directory, which the node cannot read: the snapshot
/// copy goes to the cluster's file repository (a real nginx serving a directory) through
/// `--snapshot-to file:///DIR`, the node fetches it from there, and it is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_a_file_store_is_restored_through_its_file_repository() {
    let test = "a_cluster_on_a_file_store_is_restored_through_its_file_repository";
    let Some(s) = setup_on(test, 1, false).await else {
        return;
    };
    let dir = s.env.state.path().join("file-repository");
    let Some(nginx) = kprov_testkit::nginx::Nginx::start(test, &dir) else {
        return;
    };
    s.env
        .set_group_spec(
            "demo",
            "assets",
            &format!("{{fileRepository: \"http://{}/put\"}}", nginx.addr),
        )
        .await;
    let served = nginx.root.join("put");
    let to = format!("file://{}", served.display());
    // (the repository holds no Kubernetes binaries here: no node runs their install)
    restored_from_a_backup(&s, &["--snapshot-to", &to, "--skip-asset-check"]).await;
    let fetched: Vec<String> = nginx
        .requests("GET")
        .into_iter()
        .filter(|r| r.contains("/put/kprov/etcd-restore/demo/snapshot-"))
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "the node fetched the copy once: {fetched:?}"
    );
    assert!(fetched[0].ends_with(" 200"), "{fetched:?}");
    assert!(
        !served
            .join("kprov/etcd-restore/demo")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the copy is removed from the file repository once restored"
    );
}

/// Back up etcd, lose the only control plane, `restore etcd` (with `extra` arguments) and check
/// the restored cluster.
async fn restored_from_a_backup(s: &Setup, extra: &[&str]) {
    let (env, api, repo, etcd, kc) = (&s.env, &s.api, &s.repo, &s.etcd, s.kc.as_str());
    etcd_put(etcd, "/registry/kprov-test", "in the backup");
    let out = env
        .run(&["backup", "etcd", "demo", "--kubeconfig", kc, "-o", "json"])
        .await;
    assert!(out.status.success(), "{out:?}");
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = b["id"].as_str().unwrap().to_string();
    let mut argv = vec![
        "restore",
        "etcd",
        "demo",
        "--backup",
        &id,
        "--yes",
        "--kubeconfig",
        kc,
        "--poll-interval",
        "100ms",
        "--validation-timeout",
        "90s",
    ];
    argv.extend(extra);
    // refused while the control plane runs: etcd's history would fork
    let out = env.run(&argv).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fork"), "{err}");
    etcd_put(etcd, "/registry/kprov-test", "after the backup");

    // the control plane is lost: its VM destroyed behind kprov's back
    let uuid = env.sim.uuid_of(&s.first).unwrap();
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/zstack/v1/vm-instances/{uuid}",
            env.sim.endpoint()
        ))
        .header(
            "Authorization",
            format!("OAuth {}", env.sim.admin_session()),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let boots = with_boots(s, async {
        let text = env.ok(&argv).await;
        assert!(
            text.contains(&format!("restored from backup {id}")),
            "{text}"
        );
    });
    assert_eq!(boots, 1, "one control plane restored");
    assert_eq!(
        etcd_get(etcd, "/registry/kprov-test"),
        "in the backup",
        "etcd is the backup's"
    );
    let running = running_vms(env);
    let nodes: BTreeSet<String> = api
        .nodes()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(nodes, running, "Nodes are the machines");
    assert!(repo
        .store
        .get("demo/secrets/etcd-restore.yaml")
        .await
        .unwrap()
        .is_none());
    let plan = env.ok(&["update", "cluster", "demo"]).await;
    assert!(plan.contains("No changes needed"), "{plan}");
}

//! `kprov backup etcd` and `get backups` against a real 3-member etcd (Debian's etcd 3.4, TLS,
//! certificates from the cluster's etcd CA in the state store) reached only through the
//! Kubernetes API stand-in's port-forward, for a `file://` store and for an `s3://` store
//! (moto) with client-side encryption on: keys are put, a backup taken, every member stopped
//! and its data wiped, the backup read back from the store and restored with `etcdctl snapshot
//! restore` into a fresh member, which serves the keys; `spec.etcd.backups.keep` prunes the
//! oldest; an unreachable API server fails naming the fix, with nothing stored.

use std::time::Duration;

use kprov_testkit::etcd::EtcdCluster;
use kprov_testkit::kube_api::KubeApi;
use kprov_testkit::moto::Moto;
use kprov_testkit::raw_http;

use crate::rolling_live::{cluster_with_api, lister, unreachable_kubeconfig};
use crate::zstack_e2e::Env;

fn forward(api: &KubeApi, etcd: &EtcdCluster) {
    for m in &etcd.members {
        let addr = format!("127.0.0.1:{}", m.client_port).parse().unwrap();
        api.forward_pod_port("kube-system", &format!("etcd-{}", m.name), 2379, addr);
    }
}

/// `kprov ARGS`'s stdout (stderr has the progress lines and warnings), asserting success.
async fn stdout(env: &Env, args: &[&str]) -> String {
    let out = env.run(args).await;
    assert!(
        out.status.success(),
        "kprov {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn backup_ids(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The whole round trip on `env`; `raw` reads an object's bytes as the backend holds them.
async fn round_trip(env: &Env, test: &str) {
    let (api, repo, kubeconfig) = cluster_with_api(env, 3, 0).await;
    let kc = kubeconfig.to_str().unwrap();
    let etcd_ca = kprov::secrets::load(&repo, "demo").await.unwrap().etcd_ca;
    let names: Vec<String> = (0..3).map(|i| format!("demo-control-plane-{i}")).collect();
    let Some(mut etcd) = tokio::task::block_in_place(|| {
        EtcdCluster::start_named(
            test,
            &env.state.path().join("etcd"),
            &etcd_ca.cert_pem,
            &etcd_ca.key_pem,
            &names,
        )
    }) else {
        return;
    };
    forward(&api, &etcd);
    api.watch_cloud(lister(env), Duration::from_millis(100));
    let eps = etcd.endpoints();
    for i in 0..3 {
        let out = etcd.etcdctl(&eps, &["put", &format!("/registry/k{i}"), &format!("v{i}")]);
        assert!(out.status.success(), "{out:?}");
    }

    // an unreachable API server: exit 1 naming --kubeconfig, nothing stored
    let unreachable = unreachable_kubeconfig(env.state.path());
    let out = env
        .run(&[
            "backup",
            "etcd",
            "demo",
            "--kubeconfig",
            unreachable.to_str().unwrap(),
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--kubeconfig") && err.contains("no backup"),
        "{err}"
    );
    let none = stdout(env, &["get", "backups", "demo", "-o", "json"]).await;
    assert_eq!(backup_ids(&none), Vec::<String>::new());

    let taken = stdout(
        env,
        &["backup", "etcd", "demo", "--kubeconfig", kc, "-o", "json"],
    )
    .await;
    let b: serde_json::Value = serde_json::from_str(&taken).unwrap();
    let id = b["id"].as_str().unwrap().to_string();
    assert!(b["size"].as_u64().unwrap() > 1000, "{b}");
    let listed = stdout(env, &["get", "backups", "demo", "-o", "json"]).await;
    assert_eq!(backup_ids(&listed), vec![id.clone()]);

    // every member stopped and its data wiped; the backup restored into a fresh member
    for i in 0..3 {
        etcd.kill(i);
        std::fs::remove_dir_all(&etcd.members[i].data_dir).unwrap();
    }
    let bytes = kprov::ops::backup::read(&repo, "demo", &id).await.unwrap();
    let file = env.state.path().join("restore.db");
    std::fs::write(&file, &bytes).unwrap();
    tokio::task::block_in_place(|| etcd.restore("fresh", &file));
    let eps = etcd.endpoints();
    for i in 0..3 {
        let out = etcd.etcdctl(
            &eps,
            &["get", &format!("/registry/k{i}"), "--print-value-only"],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("v{i}"));
    }

    // retention: keep 2 of 3 (the fresh member serves the port-forwards now)
    api.forward_pod_port(
        "kube-system",
        "etcd-demo-control-plane-0",
        2379,
        format!("127.0.0.1:{}", etcd.members[3].client_port)
            .parse()
            .unwrap(),
    );
    // the Cluster document is named after the cluster: the same edit as a group's
    env.set_group_spec("demo", "etcd", "{backups: {keep: 2}}")
        .await;
    let mut ids = vec![id];
    for _ in 0..2 {
        let t = stdout(
            env,
            &["backup", "etcd", "demo", "--kubeconfig", kc, "-o", "json"],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let listed = stdout(env, &["get", "backups", "demo", "-o", "json"]).await;
    assert_eq!(
        backup_ids(&listed),
        ids[1..].to_vec(),
        "the oldest is pruned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_etcd_to_a_file_store_and_restore_it_into_a_fresh_member() {
    let env = Env::default().await;
    round_trip(&env, "backup_etcd_to_a_file_store").await;
    let key = "demo/secrets/etcd-backups";
    let dir = env.state.path().join(key);
    for f in std::fs::read_dir(&dir).unwrap() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "backups are secrets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_etcd_to_an_encrypted_s3_store_and_restore_it_into_a_fresh_member() {
    let test = "backup_etcd_to_an_encrypted_s3_store";
    let Some(moto) = Moto::start(test) else {
        return;
    };
    let (status, body) = raw_http::request(moto.port, "PUT", "/kprov-state", "").unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let mut env = Env::default().await;
    env.s3 = Some(("s3://kprov-state/team".into(), moto.endpoint()));
    let key_file = env.state.path().join("state.key");
    kprov_state::crypt::generate_key_file(&key_file).unwrap();
    env.encryption_key = Some(key_file);
    round_trip(&env, test).await;
    // as S3 holds them: encrypted with the store's key
    let raw =
        kprov_testkit::s3_store::store(&moto.endpoint(), "s3://kprov-state/team", |_| {}).await;
    let keys = kprov_testkit::s3_store::raw_keys(&raw).await;
    let backups: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("etcd-backups/"))
        .collect();
    assert_eq!(backups.len(), 2, "{keys:?}");
    for k in backups {
        let k = k.strip_prefix("team/").unwrap();
        let bytes = kprov_testkit::s3_store::raw_get(&raw, k).await;
        assert!(
            kprov_state::crypt::is_encrypted(&bytes),
            "{k} is stored encrypted"
        );
    }
}

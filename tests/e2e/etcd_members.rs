//! kprov's etcd code (`kprov::etcd`) against a real 3-member etcd cluster (Debian's
//! `etcd-server` 3.4) on loopback with TLS and client-certificate auth, every certificate signed
//! by the etcd CA of a cluster kprov created in a real state store, and kprov's client
//! certificate minted from that CA: list, add a member that joins, remove an old member once its
//! replacement is caught up (and again: already gone), refuse a removal that would lose quorum
//! or whose replacement is not there, snapshot to a 0600 file, and `etcdctl snapshot restore` of
//! that snapshot into a fresh member that serves the same keys.

use std::os::unix::fs::PermissionsExt as _;

use kprov::etcd::{Access, Etcd, EtcdError, Removal};
use kprov::repo::Repo;
use kprov_testkit::etcd::EtcdCluster;

use crate::KPROV;

/// Names of the members `MemberList` shows.
async fn names(etcd: &mut Etcd) -> Vec<String> {
    let mut n: Vec<String> = etcd
        .members()
        .await
        .expect("MemberList")
        .into_iter()
        .map(|m| m.name)
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_added_removed_with_quorum_checks_and_snapshots_restore() {
    let test = "members_are_listed_added_removed_with_quorum_checks_and_snapshots_restore";
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", dir.path().join("state").display());
    let out = KPROV
        .command()
        .args(["create", "cluster", "c1", "--provider", "zstack"])
        .args(["--zstack-endpoint", "http://127.0.0.1:9"])
        .env("KPROV_STATE_STORE", &store_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "create: {out:?}");
    let repo = Repo::new(kprov_state::open(&store_url).await.unwrap());
    let secrets = kprov::secrets::load(&repo, "c1").await.unwrap();
    let ca = &secrets.etcd_ca;
    let Some(mut cluster) = tokio::task::block_in_place(|| {
        EtcdCluster::start(test, &dir.path().join("etcd"), &ca.cert_pem, &ca.key_pem, 3)
    }) else {
        return;
    };
    let access = |c: &mut EtcdCluster| Access::from_ca(ca, c.endpoints()).unwrap();
    let mut etcd = Etcd::connect(&access(&mut cluster)).await.unwrap();
    assert_eq!(names(&mut etcd).await, ["m0", "m1", "m2"]);

    // keys written through etcdctl, then a snapshot through kprov
    let eps = cluster.endpoints();
    for (k, v) in [("/registry/k1", "v1"), ("/registry/k2", "v2")] {
        let o = cluster.etcdctl(&eps, &["put", k, v]);
        assert!(o.status.success(), "{o:?}");
    }
    let snap = dir.path().join("etcd.snapshot");
    let size = etcd.snapshot(&snap).await.unwrap();
    assert!(size > 0 && std::fs::metadata(&snap).unwrap().len() == size);
    assert_eq!(
        std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777,
        0o600,
        "a snapshot holds every secret"
    );
    assert!(!snap.with_extension("partial").exists());

    // a replacement joins; the old member goes once it is caught up
    let port = cluster.next_peer_port();
    etcd.add_member(&format!("https://127.0.0.1:{port}"))
        .await
        .unwrap();
    tokio::task::block_in_place(|| cluster.join("m3", port));
    assert_eq!(names(&mut etcd).await, ["m0", "m1", "m2", "m3"]);
    match etcd.remove_member("m0", Some("nosuch")).await {
        Err(EtcdError::ReplacementNotReady { name, .. }) => assert_eq!(name, "nosuch"),
        other => panic!("a missing replacement must refuse: {other:?}"),
    }
    let removed = etcd.remove_member("m0", Some("m3")).await.unwrap();
    assert!(
        matches!(removed, Removal::Removed(ref m) if m.name == "m0"),
        "{removed:?}"
    );
    cluster.kill(0);
    let mut etcd = Etcd::connect(&access(&mut cluster)).await.unwrap();
    assert_eq!(names(&mut etcd).await, ["m1", "m2", "m3"]);
    assert_eq!(
        etcd.remove_member("m0", Some("m3")).await.unwrap(),
        Removal::AlreadyGone,
        "a re-run does not remove twice"
    );

    // m1 crashes: removing a healthy member would leave 1 healthy of 2 (quorum 2)
    cluster.kill(1);
    let mut etcd = Etcd::connect(&access(&mut cluster)).await.unwrap();
    match etcd.remove_member("m2", None).await {
        Err(e @ EtcdError::QuorumLoss { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("1 healthy") && text.contains("2 needed") && text.contains("fix:"),
                "{text}"
            );
        }
        other => panic!("removing m2 must be refused: {other:?}"),
    }
    assert_eq!(
        names(&mut etcd).await,
        ["m1", "m2", "m3"],
        "nothing removed"
    );
    // removing the dead one keeps 2 healthy of 2
    etcd.remove_member("m1", None).await.unwrap();
    // etcd 3.4 answers MemberList from the asked member's own state: a follower may show the
    // removal a moment after the leader committed it
    let mut left = names(&mut etcd).await;
    for _ in 0..50 {
        if left == ["m2", "m3"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        left = names(&mut etcd).await;
    }
    assert_eq!(left, ["m2", "m3"]);

    // the snapshot restores into a fresh member that serves the keys written before it
    let r = tokio::task::block_in_place(|| cluster.restore("r0", &snap));
    let url = cluster.members[r].client_url();
    let o = cluster.etcdctl(&[url], &["get", "/registry/k2", "--print-value-only"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "v2");
}

//! The `s3://` backend against a real moto server (and the lab's fault proxy in front of it).
//!
//! Each test starts its own moto on a free loopback port so tests stay independent (moto keeps
//! all state in one process) and is killed when the test ends, pass or fail.
#![cfg(feature = "s3")]

use std::sync::Arc;
use std::time::Duration;

use kprov_state::crypt::{generate_key_file, EncryptedStore, EncryptionKey, MAGIC};
use kprov_state::lease::{current, force_unlock};
use kprov_state::s3::{ConditionalWrites, S3Store, PROBE_DIR};
use kprov_state::{suite, Condition, Lease, StateError, StateStore};
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;
use kprov_testkit::s3_store::{self, create_bucket, raw_get, raw_keys, store};

/// Start moto, or return from the test when it is missing and `KPROV_SKIP_PEERS=1`.
macro_rules! moto {
    () => {
        match Moto::start("the s3:// state store tests") {
            Some(m) => m,
            None => return,
        }
    };
}

fn lease(ttl_ms: u64) -> Lease {
    Lease {
        cluster: "c".into(),
        command: "update cluster c --yes".into(),
        ttl: Duration::from_millis(ttl_ms),
    }
}

fn backend_message(r: Result<impl std::fmt::Debug, StateError>) -> String {
    match r {
        Err(StateError::Backend { message, .. }) => message,
        other => panic!("expected StateError::Backend, got {other:?}"),
    }
}

#[tokio::test]
async fn s3_store_passes_the_conformance_suite_under_a_prefix() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-suite/team/clusters/", |_| {}).await;
    create_bucket(&s).await;
    assert_eq!(s.url(), "s3://kprov-suite/team/clusters");
    suite::run_all(&s).await;
    let raw = raw_keys(&s).await;
    assert!(!raw.is_empty());
    assert!(
        raw.iter().all(|k| k.starts_with("team/clusters/suite/")),
        "objects outside the prefix: {raw:?}"
    );
    assert!(
        !raw.iter().any(|k| k.contains(PROBE_DIR)),
        "the probe object must be deleted: {raw:?}"
    );
}

#[tokio::test]
async fn moto_honours_if_none_match_and_if_match_so_the_probe_passes() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-probe-ok", |_| {}).await;
    create_bucket(&s).await;
    assert_eq!(
        s.verify_conditional_writes().await.unwrap(),
        ConditionalWrites::Honoured
    );
    assert!(
        raw_keys(&s).await.is_empty(),
        "the probe object must be deleted"
    );

    // PutObject If-Match on a missing key, DeleteObject If-Match with a stale or a current ETag.
    let missing = s
        .put(
            "c/x",
            b"1",
            Condition::IfVersion(kprov_state::Version("\"abc\"".into())),
        )
        .await;
    assert!(
        matches!(missing, Err(StateError::Conflict { .. })),
        "{missing:?}"
    );
    let v1 = s.put("c/x", b"1", Condition::None).await.unwrap();
    assert!(
        v1.0.starts_with('"'),
        "the version is the ETag as S3 sends it: {v1}"
    );
    let v2 = s
        .put("c/x", b"2", Condition::IfVersion(v1.clone()))
        .await
        .unwrap();
    assert!(matches!(
        s.delete("c/x", Condition::IfVersion(v1)).await,
        Err(StateError::Conflict { .. })
    ));
    s.delete("c/x", Condition::IfVersion(v2.clone()))
        .await
        .unwrap();
    assert!(s.get("c/x").await.unwrap().is_none());
    let gone = s.delete("c/x", Condition::IfVersion(v2)).await;
    assert!(
        matches!(gone, Err(StateError::Conflict { .. })),
        "conditional delete of a missing key: {gone:?}"
    );
}

#[tokio::test]
async fn s3_racing_creates_have_exactly_one_winner() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-race", |_| {}).await;
    create_bucket(&s).await;
    suite::racing_creates(Arc::new(s), 16).await;
}

#[tokio::test]
async fn s3_lease_acquire_refuse_takeover_force_unlock_and_renewal() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-lease/state", |_| {}).await;
    create_bucket(&s).await;
    let store: Arc<dyn StateStore> = Arc::new(s);

    let g = lease(60_000).acquire(store.clone()).await.unwrap();
    match lease(60_000).acquire(store.clone()).await {
        Err(StateError::Locked { holder, .. }) => {
            assert!(holder.contains("update cluster c"), "{holder}")
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    g.release().await.unwrap();
    assert!(
        current(store.as_ref(), "c").await.unwrap().is_none(),
        "release deletes the lease"
    );

    let crashed = lease(60_000).acquire(store.clone()).await.unwrap();
    drop(crashed); // a crash: the lease stays until it expires
    assert!(matches!(
        lease(60_000).acquire(store.clone()).await,
        Err(StateError::Locked { .. })
    ));
    force_unlock(store.as_ref(), "c").await.unwrap();

    let short = lease(50).acquire(store.clone()).await.unwrap();
    let short_info = short.info.clone();
    drop(short);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let g3 = lease(60_000).acquire(store.clone()).await.unwrap();
    assert_eq!(
        g3.took_over_from.as_ref(),
        Some(&short_info),
        "an expired lease is taken over"
    );
    g3.release().await.unwrap();

    let renewed = lease(300).acquire(store.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        lease(300).acquire(store.clone()).await.is_err(),
        "a renewed lease must still hold"
    );
    assert!(!renewed.is_lost());
    renewed.release().await.unwrap();
    assert!(current(store.as_ref(), "c").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_keys_are_written_with_server_side_encryption() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-sse", |_| {}).await;
    create_bucket(&s).await;
    s.put("c/pki/ca.key", b"k", Condition::None).await.unwrap();
    s.put("c/secrets/token", b"t", Condition::IfAbsent)
        .await
        .unwrap();
    s.put("c/config.yaml", b"x", Condition::None).await.unwrap();
    let sse = |key: &'static str| {
        let s = &s;
        async move {
            let h = s
                .client()
                .head_object()
                .bucket(s.bucket())
                .key(s.object_key(key))
                .send()
                .await
                .unwrap();
            h.server_side_encryption().map(|e| e.as_str().to_string())
        }
    };
    assert_eq!(sse("c/pki/ca.key").await.as_deref(), Some("AES256"));
    assert_eq!(sse("c/secrets/token").await.as_deref(), Some("AES256"));
    assert_eq!(sse("c/config.yaml").await, None);
}

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    let moto = moto!();
    let s = store(&moto.endpoint(), "s3://kprov-nobody-made-this", |_| {}).await;
    let msg = backend_message(s.get("c/config.yaml").await);
    assert!(
        msg.contains("kprov-nobody-made-this") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn network_cut_mid_write_is_a_clear_error_and_the_rerun_completes() {
    let moto = moto!();
    let mut proxy = FaultProxy::start(&moto);
    let s = store(&proxy.endpoint(), "s3://kprov-cut", |_| {}).await;
    create_bucket(&s).await;
    let v1 = s
        .put("c/config.yaml", b"v1", Condition::IfAbsent)
        .await
        .unwrap();

    // Every write is cut off: the proxy reads the request and closes the connection.
    proxy.set_rules(r#"[{"service": "s3", "action": "PUT /kprov-cut/.*", "mode": "drop"}]"#);
    let msg = backend_message(
        s.put("c/config.yaml", b"v2", Condition::IfVersion(v1.clone()))
            .await,
    );
    let endpoint = proxy.endpoint();
    assert!(
        msg.contains(&endpoint) && msg.contains("kprov-cut"),
        "names bucket and endpoint: {msg}"
    );
    assert!(
        msg.contains("check the endpoint") && msg.contains("credentials"),
        "says how to fix: {msg}"
    );
    let hits = proxy.state_text();
    assert!(
        hits.contains(r#""s3:PUT /kprov-cut/c/config.yaml": 5"#),
        "5 attempts (standard retry mode): {hits}"
    );
    proxy.clear();

    // The endpoint goes away entirely (connection refused).
    proxy.stop();
    let msg = backend_message(s.get("c/config.yaml").await);
    assert!(msg.contains(&endpoint), "{msg}");
    let msg = backend_message(
        s.put("c/config.yaml", b"v2", Condition::IfVersion(v1.clone()))
            .await,
    );
    assert!(
        msg.contains(&endpoint) && msg.contains("tried up to 5 times"),
        "{msg}"
    );

    // It comes back: nothing was half-written and the re-run completes.
    proxy.restart();
    let o = s
        .get("c/config.yaml")
        .await
        .unwrap()
        .expect("previous object still there");
    assert_eq!((o.bytes.as_slice(), &o.version), (&b"v1"[..], &v1));
    let v2 = s
        .put("c/config.yaml", b"v2", Condition::IfVersion(v1))
        .await
        .unwrap();
    assert_eq!(s.get("c/config.yaml").await.unwrap().unwrap().version, v2);
}

#[tokio::test]
async fn conditional_write_whose_response_was_lost_is_not_a_false_conflict() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let s = store(&proxy.endpoint(), "s3://kprov-lost", |_| {}).await;
    create_bucket(&s).await;
    let store: Arc<dyn StateStore> = Arc::new(s);
    // The lease create reaches moto, but its response is replaced by a 500: the SDK retries,
    // and the retry's If-None-Match: * fails against our own lease.
    proxy.set_rules(
        r#"[{"service": "s3", "action": "PUT /kprov-lost/c/lock", "mode": "after", "status": 500, "times": 1}]"#,
    );
    let g = lease(60_000)
        .acquire(store.clone())
        .await
        .expect("our own applied write is ours");
    assert!(
        proxy
            .state_text()
            .contains(r#""s3:PUT /kprov-lost/c/lock": 1"#),
        "{}",
        proxy.state_text()
    );
    assert_eq!(
        current(store.as_ref(), "c").await.unwrap().as_ref(),
        Some(&g.info)
    );
    g.release().await.unwrap();

    // Someone else's object under the key: the retried create is a genuine conflict.
    store
        .put("c/other", b"theirs", Condition::None)
        .await
        .unwrap();
    proxy.set_rules(
        r#"[{"service": "s3", "action": "PUT /kprov-lost/c/other", "mode": "after", "status": 500, "times": 1}]"#,
    );
    let r = store.put("c/other", b"ours", Condition::IfAbsent).await;
    assert!(matches!(r, Err(StateError::Conflict { .. })), "{r:?}");
    assert_eq!(
        store.get("c/other").await.unwrap().unwrap().bytes,
        b"theirs"
    );
}

#[tokio::test]
async fn store_ignoring_conditional_headers_is_refused_unless_overridden() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    proxy.set_rules(r#"[{"service": "s3", "strip_headers": ["If-None-Match", "If-Match"]}]"#);
    let s = store(&proxy.endpoint(), "s3://kprov-strip/st", |_| {}).await;
    create_bucket(&s).await;

    let msg = backend_message(s.verify_conditional_writes().await);
    for needle in [
        "ignores conditional writes",
        "If-None-Match",
        "unsafe",
        "--unsafe-no-conditional-writes",
        "KPROV_UNSAFE_NO_CONDITIONAL_WRITES=1",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    // The store checks by itself before the first conditional write, so the lease is refused.
    let msg = backend_message(s.put("c/x", b"1", Condition::IfAbsent).await);
    assert!(msg.contains("--unsafe-no-conditional-writes"), "{msg}");
    let store: Arc<dyn StateStore> = Arc::new(s);
    let r = lease(60_000).acquire(store.clone()).await;
    assert!(
        matches!(r, Err(StateError::Backend { .. })),
        "{:?}",
        r.map(|_| ())
    );
    // Plain writes do not depend on conditions and still work.
    store
        .put("c/config.yaml", b"x", Condition::None)
        .await
        .unwrap();
    assert!(
        proxy
            .state_text()
            .contains("s3:PUT /kprov-strip/st/.kprov-probe/"),
        "the probe went through the proxy: {}",
        proxy.state_text()
    );

    // With the override it proceeds (the warning text is checked in s3_warnings.rs).
    let unsafe_store = store_over(&proxy, "s3://kprov-strip/st", true).await;
    assert_eq!(
        unsafe_store.verify_conditional_writes().await.unwrap(),
        ConditionalWrites::Ignored {
            if_none_match_ignored: true,
            if_match_ignored: true
        }
    );
    unsafe_store
        .put("c/x", b"1", Condition::IfAbsent)
        .await
        .expect("the override proceeds");
    let g = lease(60_000)
        .acquire(Arc::new(unsafe_store))
        .await
        .expect("the override proceeds");
    g.release().await.unwrap();
    let probe_left: Vec<String> =
        s3_store::raw_keys(&store_over(&proxy, "s3://kprov-strip/st", true).await)
            .await
            .into_iter()
            .filter(|k| k.contains(PROBE_DIR))
            .collect();
    assert!(
        probe_left.is_empty(),
        "probe objects are deleted: {probe_left:?}"
    );
}

async fn store_over(proxy: &FaultProxy, url: &str, unsafe_override: bool) -> S3Store {
    store(&proxy.endpoint(), url, |o| {
        o.unsafe_no_conditional_writes = unsafe_override
    })
    .await
}

#[tokio::test]
async fn client_side_encryption_keeps_secrets_out_of_the_bucket() {
    let moto = moto!();
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key_file(dir.path().join("state.key")).unwrap();
    let s = store(&moto.endpoint(), "s3://kprov-enc/p", |_| {}).await;
    create_bucket(&s).await;
    let enc = EncryptedStore::new(s, key);
    suite::run_all(&enc).await;

    let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
    let token = b"kprov-bootstrap-token-7f3a9c0e55d1";
    let v_ca = enc
        .put("c/pki/ca.key", pem, Condition::IfAbsent)
        .await
        .unwrap();
    enc.put("c/secrets/token", token, Condition::None)
        .await
        .unwrap();
    enc.put("c/config.yaml", b"name: c\n", Condition::None)
        .await
        .unwrap();

    for key in ["c/pki/ca.key", "c/secrets/token"] {
        let raw = raw_get(enc.inner(), key).await;
        assert!(raw.starts_with(MAGIC), "{key} is stored encrypted");
        assert!(
            !raw.windows(10).any(|w| w == b"-----BEGIN"),
            "{key} leaks a PEM header"
        );
        assert!(
            !raw.windows(token.len()).any(|w| w == token),
            "{key} leaks the token"
        );
        assert!(
            !raw.windows(12).any(|w| w == b"MIIEvQIBADAN"),
            "{key} leaks key material"
        );
    }
    assert_eq!(
        raw_get(enc.inner(), "c/config.yaml").await,
        b"name: c\n",
        "non-secrets stay readable"
    );

    let ca = enc.get("c/pki/ca.key").await.unwrap().unwrap();
    assert_eq!(
        (ca.bytes.as_slice(), &ca.version),
        (&pem[..], &v_ca),
        "read back, versions from S3"
    );
    assert_eq!(
        enc.get("c/secrets/token").await.unwrap().unwrap().bytes,
        token
    );
    let v2 = enc
        .put(
            "c/pki/ca.key",
            b"rotated",
            Condition::IfVersion(v_ca.clone()),
        )
        .await
        .unwrap();
    assert!(matches!(
        enc.put("c/pki/ca.key", b"x", Condition::IfVersion(v_ca))
            .await,
        Err(StateError::Conflict { .. })
    ));
    assert_eq!(enc.get("c/pki/ca.key").await.unwrap().unwrap().version, v2);

    let wrong = EncryptedStore::new(
        store(&moto.endpoint(), "s3://kprov-enc/p", |_| {}).await,
        EncryptionKey::from_bytes([9; 32], "/tmp/other.key"),
    );
    let msg = backend_message(wrong.get("c/secrets/token").await);
    assert!(
        msg.contains("/tmp/other.key") && msg.contains("key file is wrong"),
        "{msg}"
    );
    match wrong.get("c/secrets/token").await {
        Err(e) => assert!(
            e.to_string().contains("c/secrets/token"),
            "names the key: {e}"
        ),
        Ok(o) => panic!("a wrong key must not decrypt: {o:?}"),
    }
}

//! The warnings of the `s3://` backend, read from a process-wide log capture. One test in its
//! own binary so no other test's threads race the subscriber set-up (see `kprov_testkit::logs::Logs`).
#![cfg(feature = "s3")]

use std::sync::Arc;
use std::time::Duration;

use kprov_state::{Condition, Lease, StateStore};
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::logs::Logs;
use kprov_testkit::moto::Moto;
use kprov_testkit::s3_store::{create_bucket, store};

#[tokio::test]
async fn versioning_off_and_unsafe_override_warn_once() {
    let logs = Logs::global();
    let Some(moto) = Moto::start("the s3:// state store tests") else {
        return;
    };

    // Versioning off: one warning per process and bucket, saying how to turn it on.
    let off = store(&moto.endpoint(), "s3://kprov-unversioned", |_| {}).await;
    create_bucket(&off).await;
    off.get("c/config.yaml").await.unwrap();
    off.list("c/").await.unwrap();
    let again = store(&moto.endpoint(), "s3://kprov-unversioned", |_| {}).await;
    again.get("c/config.yaml").await.unwrap();
    let text = logs.text();
    assert_eq!(
        text.matches("versioning is off on state bucket kprov-unversioned")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("WARN") && text.contains("put-bucket-versioning"),
        "says how to fix it: {text}"
    );

    // Versioning on: no warning.
    let on = store(&moto.endpoint(), "s3://kprov-versioned", |_| {}).await;
    create_bucket(&on).await;
    on.client()
        .put_bucket_versioning()
        .bucket("kprov-versioned")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    on.get("c/config.yaml").await.unwrap();
    assert!(!logs.text().contains("kprov-versioned"), "{}", logs.text());

    // A store that ignores conditional headers, used with the override: proceeds, warns once.
    let proxy = FaultProxy::start(&moto);
    proxy.set_rules(r#"[{"service": "s3", "strip_headers": ["If-None-Match", "If-Match"]}]"#);
    let s = store(&proxy.endpoint(), "s3://kprov-strip-warn", |o| {
        o.unsafe_no_conditional_writes = true
    })
    .await;
    create_bucket(&s).await;
    s.put("c/x", b"1", Condition::IfAbsent)
        .await
        .expect("the override proceeds");
    s.put("c/x", b"2", Condition::IfAbsent)
        .await
        .expect("and the store really ignores the condition");
    let store: Arc<dyn StateStore> = Arc::new(s);
    let lease = Lease {
        cluster: "c".into(),
        command: "update cluster c".into(),
        ttl: Duration::from_secs(60),
    };
    lease
        .acquire(store.clone())
        .await
        .expect("the override proceeds")
        .release()
        .await
        .unwrap();
    let text = logs.text();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ignores conditional writes"))
        .collect();
    assert_eq!(warned.len(), 1, "warns once: {text}");
    for needle in [
        "WARN",
        &proxy.endpoint(),
        "--unsafe-no-conditional-writes",
        "KPROV_UNSAFE_NO_CONDITIONAL_WRITES=1",
    ] {
        assert!(
            warned[0].contains(needle),
            "warning lacks {needle:?}: {}",
            warned[0]
        );
    }
}

//! `kprov_state::open` with everything coming from the environment, as the CLI uses it.
//!
//! Environment variables are process-wide, so this file is its own test binary with a single
//! test that sets them once.
#![cfg(feature = "s3")]

use kprov_state::crypt::{generate_key_file, MAGIC};
use kprov_state::{open, Condition, StateError};
use kprov_testkit::moto::Moto;
use kprov_testkit::s3_store;

#[tokio::test]
async fn open_reads_scheme_endpoint_region_and_encryption_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    match open("gs://bucket").await {
        Err(StateError::InvalidUrl { why, .. }) => {
            assert!(why.contains("file://") && why.contains("s3://"), "{why}")
        }
        r => panic!("expected InvalidUrl, got {:?}", r.map(|s| s.url())),
    }
    let file = open(&format!("file://{}", dir.path().join("fs").display()))
        .await
        .unwrap();
    file.put("c/config.yaml", b"x", Condition::None)
        .await
        .unwrap();

    let Some(moto) = Moto::start("the s3:// state store tests") else {
        return;
    };
    // Only this binary's process; no test runs concurrently with this one in it.
    for var in [
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("no-aws-config"));
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        dir.path().join("no-aws-credentials"),
    );
    // No region anywhere, and no instance metadata lookups (the only network here is loopback).
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("KPROV_S3_ENDPOINT", moto.endpoint());

    let s = kprov_state::s3::S3Store::open(
        "s3://kprov-env/x",
        kprov_state::s3::S3Options::from_env().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(s.region().as_deref(), Some("us-east-1"), "default region");
    assert_eq!(s.endpoint(), moto.endpoint());
    s3_store::create_bucket(&s).await;

    let key_file = dir.path().join("state.key");
    generate_key_file(&key_file).unwrap();
    std::env::set_var("KPROV_STATE_ENCRYPTION_KEY_FILE", &key_file);
    let store = open("s3://kprov-env/x").await.unwrap();
    assert_eq!(store.url(), "s3://kprov-env/x");
    store
        .put("c/secrets/token", b"tok-123456", Condition::IfAbsent)
        .await
        .unwrap();
    assert_eq!(
        store.get("c/secrets/token").await.unwrap().unwrap().bytes,
        b"tok-123456"
    );
    assert!(
        s3_store::raw_get(&s, "c/secrets/token")
            .await
            .starts_with(MAGIC),
        "open() wrapped the store"
    );

    std::env::set_var(
        "KPROV_STATE_ENCRYPTION_KEY_FILE",
        dir.path().join("missing.key"),
    );
    match open("s3://kprov-env/x").await {
        Err(e) => assert!(
            e.to_string().contains("KPROV_STATE_ENCRYPTION_KEY_FILE"),
            "{e}"
        ),
        Ok(_) => panic!("a missing key file must fail open()"),
    }
}

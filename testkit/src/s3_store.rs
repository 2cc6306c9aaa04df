//! `s3://` state store tests against moto: stores opened at a test endpoint with dummy
//! credentials, and raw objects and buckets read through the store's own SDK client.

use std::time::Duration;

use kprov_state::s3::{Credentials, S3Options, S3Store};

/// Options pointing at `endpoint` with dummy credentials and a short retry backoff; set on the
/// SDK config builder, not in the process environment.
pub fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        credentials: Some(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "kprov-static",
        )),
        initial_backoff: Duration::from_millis(20),
        ..S3Options::default()
    }
}

/// Open `url` at `endpoint` with [`options`], adjusted by `tweak`.
pub async fn store(endpoint: &str, url: &str, tweak: impl FnOnce(&mut S3Options)) -> S3Store {
    let mut o = options(endpoint);
    tweak(&mut o);
    S3Store::open(url, o).await.unwrap()
}

/// Create the store's bucket.
pub async fn create_bucket(s: &S3Store) {
    s.client()
        .create_bucket()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
}

/// Every object key in the store's bucket (raw, prefix included).
pub async fn raw_keys(s: &S3Store) -> Vec<String> {
    let out = s
        .client()
        .list_objects_v2()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// An object's raw bytes, read directly through the SDK.
pub async fn raw_get(s: &S3Store, key: &str) -> Vec<u8> {
    let out = s
        .client()
        .get_object()
        .bucket(s.bucket())
        .key(s.object_key(key))
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

//! Tests of signing, job URLs, backoff, redaction and error classification of the client.

use super::*;
use crate::zstack::config::Secret;

fn client() -> Client {
    let cfg = ZStackConfig::new(
        "http://127.0.0.1:9/",
        ZStackCredentials::Account {
            name: "admin".into(),
            password: Secret::new("password"),
        },
    );
    Client::new(&cfg).unwrap()
}

#[test]
fn password_hash_is_lowercase_sha512_hex() {
    // sha512("password"), a widely published test value.
    assert_eq!(
        hash_password("password"),
        "b109f3bbbc244eb82441917ed06d618b9008dd09b3befd1b5e07394c706a8bb980b1d7785e5976ec049b46df5f1326af5a2ea6d103fd07c95385ffab0cacbc86"
    );
}

#[test]
fn hmac_sha1_matches_rfc2202() {
    let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
}

#[test]
fn access_key_signature() {
    // Computed independently: base64(hmac_sha1(b"kprov-secret",
    //   b"GET\nMon, 02 Jan 2006 15:04:05 GMT\n/v1/vm-instances")) with Python's hmac module.
    assert_eq!(
        sign(
            "kprov-secret",
            "GET",
            "Mon, 02 Jan 2006 15:04:05 GMT",
            "/vm-instances"
        ),
        "nJzXUcfOlofVimLB2qLz3A7Y3/Y="
    );
    let t = chrono::DateTime::parse_from_rfc3339("2006-01-02T15:04:05Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(http_date(t), "Mon, 02 Jan 2006 15:04:05 GMT");
    assert_eq!(
        url_path("http://h:8080/zstack/v1/vm-instances?q=a%3Db"),
        "/zstack/v1/vm-instances"
    );
}

#[test]
fn job_ids_are_32_hex() {
    let j = new_job_uuid();
    assert_eq!(j.len(), 32);
    assert!(j
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(j, new_job_uuid());
}

#[test]
fn foreign_job_location_is_rewritten() {
    let c = client();
    assert_eq!(
        c.job_url(Some("http://10.9.9.9:8080/zstack/v1/api-jobs/abc"), "x"),
        "http://127.0.0.1:9/zstack/v1/api-jobs/abc"
    );
    assert_eq!(
        c.job_url(None, "x"),
        "http://127.0.0.1:9/zstack/v1/api-jobs/x"
    );
    assert_eq!(
        c.job_url(Some("garbage"), "x"),
        "http://127.0.0.1:9/zstack/v1/api-jobs/x"
    );
}

#[test]
fn endpoint_normalisation() {
    let mut cfg = ZStackConfig::new(
        "http://h:8080/zstack/v1/",
        ZStackCredentials::AccessKey {
            id: "a".into(),
            secret: "b".into(),
        },
    );
    assert_eq!(Client::new(&cfg).unwrap().endpoint(), "http://h:8080");
    cfg.endpoint = "h:8080".into();
    assert!(Client::new(&cfg).is_err());
}

#[test]
fn backoff_grows_and_caps() {
    let c = client();
    assert!(c.backoff(0) <= Duration::from_millis(250));
    assert!(c.backoff(10) <= Duration::from_millis(2500));
    assert!(c.backoff(10) >= Duration::from_millis(1500));
}

#[test]
fn redaction_hides_sessions() {
    let c = client();
    c.seen_sessions
        .lock()
        .unwrap()
        .push(Arc::from("0123456789abcdef0123456789abcdef"));
    assert_eq!(
        c.redact("Session[0123456789abcdef0123456789abcdef] expired".into()),
        "Session[<session>] expired"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    let mut cfg = ZStackConfig::new(
        "http://127.0.0.1:9",
        ZStackCredentials::AccessKey {
            id: "a".into(),
            secret: "b".into(),
        },
    );
    cfg.max_retries = 0;
    let c = Client::new(&cfg).unwrap();
    let e = c.get("/zones", "QueryZone").await.unwrap_err();
    assert!(matches!(e, CloudError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
}

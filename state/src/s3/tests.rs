//! Unit tests of URL parsing, path-style choice, options, redaction and hidden keys.

use super::client::is_ip_or_localhost;
use super::*;

#[test]
fn urls() {
    assert_eq!(
        S3Url::parse("s3://bkt").unwrap(),
        S3Url {
            bucket: "bkt".into(),
            prefix: "".into()
        }
    );
    assert_eq!(S3Url::parse("s3://bkt/").unwrap().prefix, "");
    assert_eq!(S3Url::parse("s3://bkt/a/b/").unwrap().prefix, "a/b");
    for bad in [
        "s3://",
        "s3://a",
        "s3://bkt/a//b",
        "s3://bkt/../x",
        "s3://bkt?x=1",
        "s3://b kt",
        "file:///x",
    ] {
        assert!(
            matches!(S3Url::parse(bad), Err(StateError::InvalidUrl { .. })),
            "{bad}"
        );
    }
}

#[test]
fn path_style_for_ip_and_localhost_endpoints() {
    assert!(is_ip_or_localhost("http://127.0.0.1:5055"));
    assert!(is_ip_or_localhost("http://[::1]:9000/"));
    assert!(is_ip_or_localhost("https://10.0.0.5"));
    assert!(is_ip_or_localhost("http://localhost:9000"));
    assert!(is_ip_or_localhost("http://user@127.0.0.1:9000"));
    assert!(!is_ip_or_localhost("https://s3.example.com"));
    assert!(!is_ip_or_localhost("https://minio.local:9000"));
}

#[test]
fn options_from_lookup() {
    let o = S3Options::from_lookup(|k| match k {
        ENDPOINT_ENV => Some(" http://127.0.0.1:9 ".into()),
        FORCE_PATH_STYLE_ENV => Some("true".into()),
        UNSAFE_NO_CONDITIONAL_WRITES_ENV => Some("1".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert!(o.force_path_style && o.unsafe_no_conditional_writes);
    assert_eq!(o.max_attempts, DEFAULT_MAX_ATTEMPTS);
    let o = S3Options::from_lookup(|_| None).unwrap();
    assert!(o.endpoint.is_none() && !o.force_path_style && !o.unsafe_no_conditional_writes);
    let e = S3Options::from_lookup(|k| (k == FORCE_PATH_STYLE_ENV).then(|| "maybe".into()))
        .unwrap_err();
    assert!(e.to_string().contains(FORCE_PATH_STYLE_ENV));
}

#[test]
fn credentials_debug_is_redacted() {
    let c = Credentials::new("AKID", "hunter2", None, None, "kprov-static");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn probe_and_internal_keys_are_hidden() {
    assert!(is_hidden(".kprov-probe/abc"));
    assert!(is_hidden("c/.kprov-tmp"));
    assert!(!is_hidden("c/config.yaml"));
}

//! Unit tests of the registry client's parsing and auth helpers.

use super::*;

#[test]
fn challenges_parse() {
    let (s, p) = parse_challenge(
        r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
    );
    assert_eq!(s, "bearer");
    assert_eq!(p["realm"], "https://auth.example/token");
    assert_eq!(p["service"], "registry.example");
    assert_eq!(p["scope"], "repository:a/b:pull,push");
    let (s, p) = parse_challenge("Basic realm=x");
    assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "x"));
}

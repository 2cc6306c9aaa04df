//! Turning ZStack failures into [`CloudError`]s.
//!
//! The decision is made from the error *body* (`error.code`, walking the `cause` chain and any
//! `causes` list) and the HTTP status, never from message text:
//!
//! | What | Becomes |
//! |---|---|
//! | `ID.1001` anywhere in the chain (session expired / invalid) | [`Failure::SessionExpired`]: the client logs in again once and retries |
//! | `SYS.1012` (MN unavailable), `SYS.1001` (timeout) anywhere | [`CloudError::Transient`] |
//! | 500 / 502 / 503 / 504 with a plain-text body (REST layer) | [`CloudError::Transient`] |
//! | `ID.1000` (wrong credentials), 401, 403 | [`CloudError::Auth`] |
//! | `SYS.1007`, `SYS.1006`, `VM.*`, other codes | [`CloudError::Fatal`] with a fix hint |
//! | 400 / 404 plain text | [`CloudError::Fatal`] (`HTTP400`, `HTTP404`) |
//! | anything else | [`CloudError::Protocol`] |

use crate::CloudError;

use super::model::{ErrorCode, ErrorReply};
use super::PROVIDER;

/// Codes after which retrying the same call may succeed.
pub const TRANSIENT_CODES: [&str; 2] = ["SYS.1012", "SYS.1001"];
/// Session invalid or expired.
pub const SESSION_EXPIRED: &str = "ID.1001";
/// Wrong account, user or password.
pub const AUTH_FAILED: &str = "ID.1000";

/// A classified failure.
#[derive(Debug)]
pub enum Failure {
    /// The session is invalid or expired (`ID.1001`): log in again and retry once.
    SessionExpired,
    /// Any other failure, already classified (retryable or not).
    Error(CloudError),
}

/// Every error code in an error, outermost first (`cause` chain, then `causes`).
pub fn code_chain(err: &ErrorCode) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![err];
    while let Some(e) = stack.pop() {
        if let Some(c) = e.code.as_deref().filter(|c| !c.is_empty()) {
            out.push(c.to_string());
        }
        for c in e.causes.iter().rev() {
            stack.push(c);
        }
        if let Some(c) = e.cause.as_deref() {
            stack.push(c);
        }
    }
    out
}

/// The `error` object of a body, if it is a JSON error reply.
pub fn parse_error(body: &str) -> Option<ErrorCode> {
    serde_json::from_str::<ErrorReply>(body).ok()?.error
}

fn describe(err: &ErrorCode) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let mut s = String::new();
        if let Some(c) = &e.code {
            s.push_str(c);
        }
        let text = [e.description.as_deref(), e.details.as_deref()]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        if !text.is_empty() {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&text);
        }
        if !s.is_empty() {
            parts.push(s);
        }
        cur = e.cause.as_deref();
    }
    for c in &err.causes {
        parts.push(describe(c));
    }
    parts.join(", caused by ")
}

/// The fix hint for a chain of codes (the most specific known code wins).
pub fn fix_for(codes: &[String]) -> String {
    let has = |c: &str| codes.iter().any(|x| x == c);
    let has_prefix = |p: &str| codes.iter().any(|x| x.starts_with(p));
    if has("VM.1010") {
        "the VM is in a state that does not allow this operation; wait for it to settle (or fix it in the ZStack UI) and re-run".into()
    } else if has_prefix("VM.") {
        "the VM operation failed on the ZStack side; look at the VM and its events in the ZStack UI, fix the cause and re-run".into()
    } else if has("ID.1002") {
        "the account is not allowed to do this; use an account (or AccessKey) with the needed permissions".into()
    } else if has("ID.1003") {
        "the account's quota is exhausted; raise it or delete unused resources".into()
    } else if has("ID.1006") {
        "too many concurrent sessions; log out unused sessions or raise identity/session.maxConcurrent".into()
    } else if has("SYS.1007") {
        "ZStack rejected a parameter; check the instance group's image, size, network and GPU settings against `kprov discover` (this can also be a kprov bug: report it with this message)".into()
    } else if has("SYS.1006") {
        "the operation conflicts with the current state of a resource (a VM state, a device already attached elsewhere, a duplicate tag); check it in the ZStack UI and re-run".into()
    } else if has("SYS.1003") {
        "a referenced resource does not exist (any more); re-run `kprov discover` and check the spec".into()
    } else if has("SYS.1002") {
        "ZStack could not create the resource; see the management node log (management-server.log) for the reason".into()
    } else if has("SYS.1000") {
        "internal error on the ZStack management node (this is also what a duplicate resource uuid gives); see management-server.log".into()
    } else {
        "see the ZStack management node log (management-server.log) for details".into()
    }
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Classify a non-success answer of API `api` (status and body).
pub fn classify(status: u16, body: &str, api: &str) -> Failure {
    if let Some(err) = parse_error(body) {
        let codes = code_chain(&err);
        let message = format!("{api}: {}", describe(&err));
        if codes.iter().any(|c| c == SESSION_EXPIRED) {
            return Failure::SessionExpired;
        }
        let outer = codes
            .first()
            .cloned()
            .unwrap_or_else(|| format!("HTTP{status}"));
        if let Some(t) = codes.iter().find(|c| TRANSIENT_CODES.contains(&c.as_str())) {
            return Failure::Error(CloudError::Transient {
                provider: PROVIDER,
                code: t.clone(),
                message,
            });
        }
        if codes.iter().any(|c| c == AUTH_FAILED) {
            return Failure::Error(CloudError::Auth {
                provider: PROVIDER,
                message,
                // Only a login uses the password; every other API is signed with the AccessKey
                // (or a session, whose expiry is handled above).
                fix: if api == "LogInByAccount" {
                    "check the account name and password (ZSTACK_ACCOUNT / ZSTACK_PASSWORD or the credentials file)".into()
                } else {
                    "check the AccessKey (ZSTACK_ACCESS_KEY_ID / ZSTACK_ACCESS_KEY_SECRET or the credentials file) and that its account may call this API".into()
                },
            });
        }
        return Failure::Error(CloudError::Fatal {
            provider: PROVIDER,
            code: outer,
            fix: fix_for(&codes),
            message,
        });
    }
    let text = truncate(body, 300);
    let message = if text.is_empty() {
        format!("{api}: HTTP {status}")
    } else {
        format!("{api}: HTTP {status}: {text}")
    };
    let code = format!("HTTP{status}");
    Failure::Error(match status {
        500 | 502 | 503 | 504 => CloudError::Transient {
            provider: PROVIDER,
            code,
            message,
        },
        401 | 403 => CloudError::Auth {
            provider: PROVIDER,
            fix: if body.contains("requestTimeTooSkewed") {
                "the clocks of this machine and the management node differ by more than 15 minutes; sync them (NTP)".into()
            } else {
                "check the AccessKey id and secret (ZSTACK_ACCESS_KEY_ID / ZSTACK_ACCESS_KEY_SECRET)".into()
            },
            message,
        },
        400 if body.contains("wrong accessKey signature") => CloudError::Auth {
            provider: PROVIDER,
            fix: "check the AccessKey id and secret (ZSTACK_ACCESS_KEY_ID / ZSTACK_ACCESS_KEY_SECRET)".into(),
            message,
        },
        400 => CloudError::Fatal {
            provider: PROVIDER,
            code,
            message,
            fix: "the management node refused the request's form; this is a kprov bug or a ZStack version mismatch, please report it with this message".into(),
        },
        404 => CloudError::Fatal {
            provider: PROVIDER,
            code,
            message,
            fix: "this ZStack does not offer the API (too old a version, or the plugin is not installed), or the endpoint is not a ZStack management node".into(),
        },
        _ => CloudError::Protocol {
            provider: PROVIDER,
            message,
        },
    })
}

/// Whether a classified `Fatal` or `Transient` error has `code` as its (outer) code, e.g.
/// `HTTP404` for an API the management node does not offer.
pub fn is_code(err: &CloudError, code: &str) -> bool {
    match err {
        CloudError::Fatal { code: c, .. } | CloudError::Transient { code: c, .. } => c == code,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> CloudError {
        match classify(status, body, "TestApi") {
            Failure::Error(e) => e,
            Failure::SessionExpired => panic!("unexpected session expiry"),
        }
    }

    #[test]
    fn mn_unavailable_is_transient() {
        let e = err(
            503,
            r#"{"error":{"code":"SYS.1012","description":"management node unavailable","details":"no MN","elaboration":null,"location":null,"cost":null,"cause":null,"opaque":null}}"#,
        );
        assert!(e.is_retryable(), "{e:?}");
        assert!(matches!(&e, CloudError::Transient { code, .. } if code == "SYS.1012"));
    }

    #[test]
    fn timeout_in_cause_chain_is_transient() {
        let e = err(
            503,
            r#"{"error":{"code":"SYS.1000","description":"internal","cause":{"code":"SYS.1001","description":"timeout"}}}"#,
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn plain_text_5xx_is_transient_and_4xx_is_not() {
        assert!(err(500, "java.lang.NullPointerException").is_retryable());
        assert!(err(502, "").is_retryable());
        let e = err(400, "Invalid query parameter. The 'name' in the parameter[q] doesn't contain any query operator");
        assert!(!e.is_retryable());
        assert!(matches!(&e, CloudError::Fatal { code, .. } if code == "HTTP400"));
        assert!(is_code(
            &err(404, "no api mapping to /zstack/v1/mdev-devices"),
            "HTTP404"
        ));
    }

    #[test]
    fn session_expiry_is_detected_by_code() {
        let body = r#"{"error":{"code":"ID.1001","description":"Session expired","cause":null}}"#;
        assert!(matches!(classify(503, body, "x"), Failure::SessionExpired));
        // nested too
        let body = r#"{"error":{"code":"SYS.1006","cause":{"code":"ID.1001"}}}"#;
        assert!(matches!(classify(503, body, "x"), Failure::SessionExpired));
    }

    #[test]
    fn wrong_password_is_auth() {
        let e = err(
            503,
            r#"{"error":{"code":"ID.1000","description":"wrong account or username or password"}}"#,
        );
        assert!(matches!(e, CloudError::Auth { .. }));
        assert!(!e.is_retryable());
    }

    #[test]
    fn vm_state_errors_are_fatal_with_hint() {
        let body = r#"{"error":{"code":"VM.1003","description":"reboot error","cause":{"code":"SYS.1006","description":"operation error","cause":{"code":"VM.1010","description":"wrong state","details":"vm is Stopped"}}}}"#;
        let e = err(503, body);
        match &e {
            CloudError::Fatal {
                code, message, fix, ..
            } => {
                assert_eq!(code, "VM.1003");
                assert!(
                    message.contains("VM.1010 wrong state: vm is Stopped"),
                    "{message}"
                );
                assert!(fix.contains("state"), "{fix}");
            }
            other => panic!("{other:?}"),
        }
        let e = err(
            503,
            r#"{"error":{"code":"SYS.1007","description":"invalid argument","details":"bad uuid"}}"#,
        );
        assert!(matches!(&e, CloudError::Fatal { fix, .. } if fix.contains("parameter")));
    }

    #[test]
    fn causes_list_is_walked() {
        let e = parse_error(
            r#"{"error":{"code":"SYS.1000","causes":[{"code":"VM.1001"},{"code":"SYS.1012"}]}}"#,
        )
        .unwrap();
        assert_eq!(code_chain(&e), ["SYS.1000", "VM.1001", "SYS.1012"]);
    }

    #[test]
    fn skew_is_auth_with_clock_hint() {
        let e = err(403, "requestTimeTooSkewed");
        assert!(matches!(&e, CloudError::Auth { fix, .. } if fix.contains("NTP")));
    }
}

//! One request as the API handlers see it, with body parsing and authentication (session or
//! AccessKey signature).

use super::response::{api_error, text};
use crate::error::ErrorCode;
use crate::sim::{lock, Shared};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

/// One `/zstack/v1` request, read once by `handler::zstack` and passed to the API functions.
pub(super) struct Ctx<'a> {
    /// The simulator the request is served by.
    pub(super) sh: &'a Arc<Shared>,
    /// The request method.
    pub(super) method: Method,
    /// The full path (`/zstack/v1/...`): fault rules and AccessKey signatures use it.
    pub(super) path: String,
    /// Query-string parameters, decoded, in order.
    pub(super) params: Vec<(String, String)>,
    /// The request headers.
    pub(super) headers: HeaderMap,
    /// The body, read whole (at most 16 MiB).
    pub(super) body: Bytes,
}

impl Ctx<'_> {
    /// A header's value, if present and valid text.
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// A query-string parameter (the first, if repeated).
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object (empty body = `{}`); a malformed body is a 400.
    pub(super) fn body_json(&self) -> Result<Value, Response> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(text(400, "the request body must be a JSON object")),
            Err(e) => Err(text(400, format!("Invalid JSON body: {e}"))),
        }
    }

    /// Authenticates: `Err` is an HTTP-level rejection (400/403); `Ok(Err)` an API-level one
    /// (ID.1000/ID.1001: 503 for sync calls, a failed job for async ones).
    pub(super) fn authenticate(&self) -> Result<Result<String, ErrorCode>, Response> {
        let Some(auth) = self.header("authorization") else {
            return Err(text(400, "missing header 'Authorization'"));
        };
        if let Some(tok) = auth.strip_prefix("OAuth ") {
            let ttl = self.sh.ttl_secs();
            let account = self.sh.read(|c| c.session_account(tok.trim(), ttl));
            lock(&self.sh.stats).record_session_use(account.is_some());
            return Ok(account.ok_or_else(ErrorCode::session_expired));
        }
        if let Some(rest) = auth.strip_prefix("ZStack ") {
            return self.access_key_auth(rest.trim());
        }
        Err(text(400, "Authorization type must be 'OAuth'"))
    }

    /// `Authorization: ZStack <id>:<base64 HMAC-SHA1(secret, "METHOD\nDATE\n/v1/<path>")>`.
    fn access_key_auth(&self, rest: &str) -> Result<Result<String, ErrorCode>, Response> {
        use hmac::{Hmac, Mac};
        let Some((id, sig)) = rest.split_once(':') else {
            return Err(text(
                400,
                "the Authorization header must be 'ZStack AccessKeyId:Signature'",
            ));
        };
        let Some(date) = self.header("date") else {
            return Err(text(400, "missing header 'Date'"));
        };
        let Ok(when) = chrono::DateTime::parse_from_rfc2822(&date) else {
            return Err(text(
                400,
                format!("invalid header 'Date': {date}, expected 'EEE, dd MMM yyyy HH:mm:ss z'"),
            ));
        };
        let skew = lock(&self.sh.faults).clock_skew_secs;
        let now = chrono::Utc::now() + chrono::Duration::seconds(skew);
        if (now.signed_duration_since(when)).num_seconds().abs() > 15 * 60 {
            return Err(text(403, "requestTimeTooSkewed"));
        }
        let Some((secret, account)) = self.sh.read(|c| c.access_key(id)) else {
            return Ok(Err(ErrorCode::new(
                "ID.1000",
                format!("wrong accessKey signature: accessKeyId[{id}] not found"),
            )));
        };
        let uri = self.path.strip_prefix("/zstack").unwrap_or(&self.path);
        let to_sign = format!("{}\n{}\n{}", self.method.as_str(), date, uri);
        let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Ok(Err(ErrorCode::internal("bad access key secret"))),
        };
        mac.update(to_sign.as_bytes());
        use base64::Engine;
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if expected != sig {
            return Ok(Err(ErrorCode::new("ID.1000", "wrong accessKey signature")));
        }
        Ok(Ok(account))
    }

    /// Sync API authentication: HTTP rejections as is, API-level ones as 503.
    pub(super) fn auth_sync(&self) -> Result<String, Response> {
        match self.authenticate()? {
            Ok(a) => Ok(a),
            Err(e) => Err(api_error(&e)),
        }
    }
}

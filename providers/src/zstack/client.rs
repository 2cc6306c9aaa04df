//! HTTP client for the ZStack REST API: authentication, sync calls, paged queries and
//! asynchronous jobs.
//!
//! * **Account login** (API doc §2): `PUT /zstack/v1/accounts/login` with `logInByAccount` and the
//!   lower-case hex SHA-512 of the password; the session goes in `Authorization: OAuth <uuid>`.
//!   When a call fails with `ID.1001` (session expired or invalid) the client logs in again —
//!   once per call, one login shared by concurrent callers — and retries the call.
//! * **AccessKey**: every request carries `Date` and `Authorization: ZStack <id>:<sig>`, with
//!   `sig = Base64(HMAC-SHA1(secret, "METHOD\nDATE\n/v1/<path>"))` ([`sign`]).
//! * **Async APIs** (§3): every submission carries a fresh `X-Job-UUID` (32 hex). A 202 gives a
//!   `location`, whose host is replaced by the configured endpoint (split on
//!   `/zstack/v1/api-jobs`, as the SDKs do). The job is polled with a backoff from
//!   `poll_interval` to `max_poll_interval` until it answers 200 (result) or 503 (error), or the
//!   deadline passes ([`CloudError::Timeout`] naming the job and the API). When the connection
//!   drops or the REST layer answers 5xx before a 202 is read, the client polls *its own* job id
//!   first: if the management node knows the job, its result is used and nothing is submitted
//!   twice; only when the job is unknown (404) may the call be submitted again, with a new job
//!   id, and only for calls marked safe to resubmit.
//! * Nothing secret is logged: request lines are logged at debug level without headers or
//!   bodies, and session uuids are replaced by `<session>` in error messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, DATE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha512};
use tokio::sync::{Mutex, RwLock};

use crate::{CloudError, CloudResult};

use super::config::{ZStackConfig, ZStackCredentials};
use super::errors::{classify, Failure};
use super::model::{JobAccepted, Session};
use super::query::Query;
use super::PROVIDER;

/// Marks an [`CloudError::Unreachable`] whose request got no answer within the per-request
/// timeout (see [`is_hang`]).
const NO_ANSWER: &str = "no answer within";

/// Whether `e` is a request that hung until the per-request timeout. The adapter retries such a
/// call at most once itself (a server that ignored a request for a whole timeout rarely answers
/// the next one a moment later, and nested retries would multiply the wait); the executor's
/// retries, with their longer backoff, still apply.
pub fn is_hang(e: &CloudError) -> bool {
    matches!(e, CloudError::Unreachable { message, .. } if message.contains(NO_ANSWER))
}

/// Header carrying the client-chosen job id.
pub const HEADER_JOB_UUID: &str = "X-Job-UUID";

/// Counters of HTTP calls made by one adapter instance (for tests and cost accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiStats {
    /// Every HTTP request sent (including logins, polls and failed attempts).
    pub requests: u64,
    /// Sync GET calls (queries and reads), one per page.
    pub queries: u64,
    /// Async API submissions (POST/PUT/DELETE).
    pub submissions: u64,
    /// Job polls (`GET /api-jobs/{id}`).
    pub polls: u64,
    /// Account logins (`PUT /accounts/login`; none with AccessKey).
    pub logins: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    queries: AtomicU64,
    submissions: AtomicU64,
    polls: AtomicU64,
    logins: AtomicU64,
}

/// Lower-case hex SHA-512 of a password, as `logInByAccount` wants it.
pub fn hash_password(password: &str) -> String {
    hex::encode(Sha512::digest(password.as_bytes()))
}

/// The AccessKey signature: `Base64(HMAC-SHA1(secret, "METHOD\nDATE\n/v1/<path>"))`, where
/// `path_below_v1` is the request path without `/zstack/v1` and without the query string.
pub fn sign(secret: &str, method: &str, date: &str, path_below_v1: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(format!("{method}\n{date}\n/v1{path_below_v1}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `Date` header value in the form the AccessKey check parses (`EEE, dd MMM yyyy HH:mm:ss z`).
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A fresh job id: 32 lower-case hex digits.
pub fn new_job_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Path part of an absolute URL (`http://h:p/a/b?x` → `/a/b`).
fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    let path = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    path.split('?').next().unwrap_or(path)
}

struct Reply {
    status: u16,
    body: String,
}

/// The HTTP client of one management node.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    base: String,
    credentials: ZStackCredentials,
    session: RwLock<Option<Arc<str>>>,
    login_lock: Mutex<()>,
    seen_sessions: std::sync::Mutex<Vec<Arc<str>>>,
    job_timeout: Duration,
    request_timeout: Duration,
    poll_interval: Duration,
    max_poll_interval: Duration,
    max_retries: u32,
    page_size: usize,
    counters: Counters,
}

impl Client {
    /// A client for `config.endpoint` (`http://host:8080`; `/zstack/v1` is appended).
    pub fn new(config: &ZStackConfig) -> CloudResult<Self> {
        let endpoint = config.endpoint.trim().trim_end_matches('/').to_string();
        let endpoint = endpoint
            .strip_suffix("/zstack/v1")
            .unwrap_or(&endpoint)
            .to_string();
        let endpoint = endpoint
            .strip_suffix("/zstack")
            .unwrap_or(&endpoint)
            .to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(CloudError::Fatal {
                provider: PROVIDER,
                code: "CONFIG".into(),
                message: format!("endpoint `{endpoint}` is not an http(s) URL"),
                fix: "set the endpoint to the management node's URL, e.g. http://10.0.0.5:8080"
                    .into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.concurrency.max(1) * 2)
            .user_agent(concat!("kprov/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloudError::Fatal {
                provider: PROVIDER,
                code: "CONFIG".into(),
                message: format!("cannot build the HTTP client: {e}"),
                fix: "report this as a kprov bug".into(),
            })?;
        Ok(Client {
            http,
            base: format!("{endpoint}/zstack/v1"),
            endpoint,
            credentials: config.credentials.clone(),
            session: RwLock::new(None),
            login_lock: Mutex::new(()),
            seen_sessions: std::sync::Mutex::new(Vec::new()),
            job_timeout: config.job_timeout,
            request_timeout: config.request_timeout,
            poll_interval: config.poll_interval.max(Duration::from_millis(1)),
            max_poll_interval: config.max_poll_interval.max(config.poll_interval),
            max_retries: config.max_retries,
            page_size: config.page_size.max(1),
            counters: Counters::default(),
        })
    }

    /// The endpoint (`http://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The job timeout.
    pub fn job_timeout(&self) -> Duration {
        self.job_timeout
    }

    /// Counters of calls so far.
    pub fn stats(&self) -> ApiStats {
        let c = &self.counters;
        ApiStats {
            requests: c.requests.load(Ordering::Relaxed),
            queries: c.queries.load(Ordering::Relaxed),
            submissions: c.submissions.load(Ordering::Relaxed),
            polls: c.polls.load(Ordering::Relaxed),
            logins: c.logins.load(Ordering::Relaxed),
        }
    }

    /// Backoff before retry number `attempt` (0-based): `poll_interval · 2^attempt`, capped at
    /// `max_poll_interval`, with ±25 % jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .poll_interval
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_poll_interval);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter)
    }

    /// How many times a transiently failed call is retried inside the adapter.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// How many times the adapter itself retries after `e`: [`Client::max_retries`], but at
    /// most once after a request that hung (see [`is_hang`]).
    pub fn retry_limit(&self, e: &CloudError) -> u32 {
        if is_hang(e) {
            self.max_retries.min(1)
        } else {
            self.max_retries
        }
    }

    fn redact(&self, text: String) -> String {
        let seen = self.seen_sessions.lock().expect("session list lock");
        let mut out = text;
        for s in seen.iter() {
            if out.contains(&**s) {
                out = out.replace(&**s, "<session>");
            }
        }
        out
    }

    fn redact_error(&self, e: CloudError) -> CloudError {
        match e {
            CloudError::Transient {
                provider,
                code,
                message,
            } => CloudError::Transient {
                provider,
                code,
                message: self.redact(message),
            },
            CloudError::Fatal {
                provider,
                code,
                message,
                fix,
            } => CloudError::Fatal {
                provider,
                code,
                message: self.redact(message),
                fix,
            },
            CloudError::Auth {
                provider,
                message,
                fix,
            } => CloudError::Auth {
                provider,
                message: self.redact(message),
                fix,
            },
            CloudError::Protocol { provider, message } => CloudError::Protocol {
                provider,
                message: self.redact(message),
            },
            other => other,
        }
    }

    /// The error of a request that got no answer: names the API, the method and path, and —
    /// for a request that hung — the per-request timeout that ended it.
    fn unreachable(&self, e: reqwest::Error, api: &str, method: &Method, url: &str) -> CloudError {
        let mut chain = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        let call = format!("{api} ({method} {})", url_path(url));
        let message = if e.is_timeout() {
            format!(
                "{call}: {NO_ANSWER} {:?} (the per-request timeout, KPROV_ZSTACK_REQUEST_TIMEOUT)",
                self.request_timeout
            )
        } else {
            format!("{call}: {chain}")
        };
        CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        api: &str,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        job: Option<&str>,
        session: Option<&str>,
    ) -> CloudResult<Reply> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut rb = self
            .http
            .request(method.clone(), url)
            .header(CONTENT_TYPE, "application/json; charset=utf-8");
        match &self.credentials {
            ZStackCredentials::Account { .. } => {
                if let Some(s) = session {
                    rb = rb.header(AUTHORIZATION, format!("OAuth {s}"));
                }
            }
            ZStackCredentials::AccessKey { id, secret } => {
                let date = http_date(chrono::Utc::now());
                let path = url_path(url);
                let below = path.strip_prefix("/zstack/v1").unwrap_or(path);
                let sig = sign(secret.expose(), method.as_str(), &date, below);
                rb = rb
                    .header(DATE, date)
                    .header(AUTHORIZATION, format!("ZStack {id}:{sig}"));
            }
        }
        if let Some(j) = job {
            rb = rb.header(HEADER_JOB_UUID, j);
        }
        if let Some(b) = body {
            rb = rb.body(serde_json::to_vec(b).expect("JSON values serialize"));
        }
        let started = Instant::now();
        tracing::debug!(method = %method, url = %url, job = job.unwrap_or(""), "zstack request");
        let resp = rb
            .send()
            .await
            .map_err(|e| self.unreachable(e, api, method, url))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| self.unreachable(e, api, method, url))?;
        tracing::debug!(
            method = %method,
            url = %url,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "zstack reply"
        );
        Ok(Reply { status, body })
    }

    fn parse_json(&self, body: &str, what: &str) -> CloudResult<Value> {
        if body.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_str(body).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: self.redact(format!(
                "{what}: answer is not JSON ({e}): {}",
                body.chars().take(200).collect::<String>()
            )),
        })
    }

    async fn login(&self) -> CloudResult<Arc<str>> {
        let ZStackCredentials::Account { name, password } = &self.credentials else {
            return Err(CloudError::Auth {
                provider: PROVIDER,
                message: "login requested in AccessKey mode".into(),
                fix: "report this as a kprov bug".into(),
            });
        };
        let body = serde_json::json!({
            "logInByAccount": { "accountName": name, "password": hash_password(password.expose()) }
        });
        let url = format!("{}/accounts/login", self.base);
        let mut attempt = 0;
        loop {
            self.counters.logins.fetch_add(1, Ordering::Relaxed);
            let err = match self
                .send(
                    "LogInByAccount",
                    &Method::PUT,
                    &url,
                    Some(&body),
                    None,
                    None,
                )
                .await
            {
                Ok(r) if r.status == 200 => {
                    let v = self.parse_json(&r.body, "LogInByAccount")?;
                    let inv: Session =
                        serde_json::from_value(v.get("inventory").cloned().unwrap_or(Value::Null))
                            .map_err(|e| CloudError::Protocol {
                                provider: PROVIDER,
                                message: format!(
                                    "LogInByAccount: no session inventory in the answer ({e})"
                                ),
                            })?;
                    if inv.uuid.is_empty() {
                        return Err(CloudError::Protocol {
                            provider: PROVIDER,
                            message: "LogInByAccount: empty session uuid".into(),
                        });
                    }
                    let s: Arc<str> = Arc::from(inv.uuid.as_str());
                    let mut seen = self.seen_sessions.lock().expect("session list lock");
                    seen.push(s.clone());
                    if seen.len() > 16 {
                        seen.remove(0);
                    }
                    tracing::debug!(account = %name, "zstack login succeeded");
                    return Ok(s);
                }
                Ok(r) => match classify(r.status, &r.body, "LogInByAccount") {
                    Failure::Error(e) => e,
                    Failure::SessionExpired => CloudError::Protocol {
                        provider: PROVIDER,
                        message: "LogInByAccount answered ID.1001".into(),
                    },
                },
                Err(e) => e,
            };
            if err.is_retryable() && attempt < self.retry_limit(&err) {
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(self.redact_error(err));
        }
    }

    /// The current session (logging in when there is none); `None` in AccessKey mode.
    async fn session(&self) -> CloudResult<Option<Arc<str>>> {
        if matches!(self.credentials, ZStackCredentials::AccessKey { .. }) {
            return Ok(None);
        }
        if let Some(s) = self.session.read().await.clone() {
            return Ok(Some(s));
        }
        let _guard = self.login_lock.lock().await;
        if let Some(s) = self.session.read().await.clone() {
            return Ok(Some(s));
        }
        let s = self.login().await?;
        *self.session.write().await = Some(s.clone());
        Ok(Some(s))
    }

    /// Forget `stale` (if it is still the current session) so the next call logs in again.
    async fn invalidate(&self, stale: &Option<Arc<str>>) {
        let mut cur = self.session.write().await;
        if cur.as_deref().is_some() && cur.as_deref() == stale.as_deref() {
            *cur = None;
        }
    }

    fn expired_again(&self, api: &str) -> CloudError {
        CloudError::Auth {
            provider: PROVIDER,
            message: format!("{api}: the session was reported invalid (ID.1001) again right after a new login"),
            fix: match self.credentials {
                ZStackCredentials::Account { .. } => {
                    "check the management node's clock and identity/session.timeout, and that the account is not being logged out elsewhere".into()
                }
                ZStackCredentials::AccessKey { .. } => "check the AccessKey and its permissions".into(),
            },
        }
    }

    /// A sync GET of `path` (below `/zstack/v1`, with its query string); 200 → JSON body.
    /// Transient failures are retried up to `max_retries` times; `ID.1001` logs in again once.
    pub async fn get(&self, path: &str, api: &str) -> CloudResult<Value> {
        let url = format!("{}{}", self.base, path);
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            let session = self.session().await?;
            self.counters.queries.fetch_add(1, Ordering::Relaxed);
            let err = match self
                .send(api, &Method::GET, &url, None, None, session.as_deref())
                .await
            {
                Ok(r) if r.status == 200 => return self.parse_json(&r.body, api),
                Ok(r) => match classify(r.status, &r.body, api) {
                    Failure::SessionExpired => {
                        if relogged {
                            return Err(self.expired_again(api));
                        }
                        tracing::debug!(api, "zstack session expired; logging in again");
                        self.invalidate(&session).await;
                        relogged = true;
                        continue;
                    }
                    Failure::Error(e) => e,
                },
                Err(e) => e,
            };
            if err.is_retryable() && attempt < self.retry_limit(&err) {
                tracing::debug!(api, attempt, error = %self.redact(err.to_string()), "zstack call failed transiently; retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(self.redact_error(err));
        }
    }

    /// Run a query, reading every page (`start`/`limit` + `replyWithCount=true`) until `total`
    /// results are read.
    pub async fn query<T: DeserializeOwned>(&self, q: Query) -> CloudResult<Vec<T>> {
        q.validate().map_err(|message| CloudError::Protocol {
            provider: PROVIDER,
            message,
        })?;
        let api = format!("query {}", q.path);
        let mut out: Vec<T> = Vec::new();
        let mut start = 0usize;
        loop {
            let v = self.get(&q.page_url(start, self.page_size), &api).await?;
            let items = match v.get("inventories") {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(other) => {
                    return Err(CloudError::Protocol {
                        provider: PROVIDER,
                        message: format!("{api}: `inventories` is not a list: {other}"),
                    })
                }
            };
            let n = items.len();
            for item in items {
                out.push(
                    serde_json::from_value(item).map_err(|e| CloudError::Protocol {
                        provider: PROVIDER,
                        message: format!("{api}: unexpected inventory shape: {e}"),
                    })?,
                );
            }
            start += n;
            let total = v.get("total").and_then(Value::as_u64);
            let more = match total {
                Some(t) => (start as u64) < t && n > 0,
                // no `total` (a server ignoring replyWithCount): read until an empty page
                None => n > 0,
            };
            if !more {
                if let Some(t) = total {
                    if (start as u64) < t {
                        tracing::warn!(
                            api,
                            read = start,
                            total = t,
                            "results changed while paging"
                        );
                    }
                }
                return Ok(out);
            }
        }
    }

    /// Rewrite a job `location` to the configured endpoint (split on `/zstack/v1/api-jobs`).
    pub fn job_url(&self, location: Option<&str>, job: &str) -> String {
        match location.and_then(|l| l.split_once("/zstack/v1/api-jobs")) {
            Some((_, rest)) if !rest.is_empty() => format!("{}/api-jobs{rest}", self.base),
            _ => format!("{}/api-jobs/{job}", self.base),
        }
    }

    /// Whether the management node knows job `job` (after an ambiguous submission). `Ok(false)`
    /// only on 404 (never registered, so it did not run).
    async fn job_known(&self, job: &str, api: &str) -> CloudResult<bool> {
        let url = self.job_url(None, job);
        let mut attempt = 0;
        loop {
            let session = self.session.read().await.clone();
            self.counters.polls.fetch_add(1, Ordering::Relaxed);
            match self
                .send(
                    &format!("{api} (job probe)"),
                    &Method::GET,
                    &url,
                    None,
                    None,
                    session.as_deref(),
                )
                .await
            {
                Ok(r) if r.status == 404 => return Ok(false),
                Ok(r) if matches!(r.status, 200 | 202 | 503) => return Ok(true),
                Ok(r) if attempt < self.max_retries => {
                    tracing::debug!(
                        api,
                        job,
                        status = r.status,
                        "probing own job failed; retrying"
                    );
                }
                Ok(r) => {
                    return Err(CloudError::Transient {
                        provider: PROVIDER,
                        code: format!("HTTP{}", r.status),
                        message: format!(
                            "{api}: cannot tell whether job {job} was accepted (HTTP {})",
                            r.status
                        ),
                    })
                }
                Err(e) if attempt < self.retry_limit(&e) => {
                    tracing::debug!(api, job, error = %e, "probing own job failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Call an asynchronous API: submit `body` (none for DELETE) with `method` to `path` (below
    /// `/zstack/v1`, with any query string),
    /// follow the job and return its 200 result. `resubmit` says whether the call may be
    /// submitted again after a transient failure (never after a failure that may have executed
    /// it, unless the management node says it does not know the job); creates pass `false` and
    /// let the caller look the resource up first.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        api: &str,
        resubmit: bool,
    ) -> CloudResult<Value> {
        let url = format!("{}{}", self.base, path);
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            let job = new_job_uuid();
            let session = self.session().await?;
            self.counters.submissions.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .send(
                    api,
                    &method,
                    &url,
                    body.as_ref(),
                    Some(&job),
                    session.as_deref(),
                )
                .await;
            let location = match sent {
                Ok(r) if r.status == 202 => {
                    let accepted: JobAccepted = serde_json::from_str(&r.body).unwrap_or_default();
                    self.job_url(accepted.location.as_deref(), &job)
                }
                Ok(r) if r.status == 200 => return self.parse_json(&r.body, api),
                Ok(r) => match classify(r.status, &r.body, api) {
                    Failure::SessionExpired => {
                        if relogged {
                            return Err(self.expired_again(api));
                        }
                        self.invalidate(&session).await;
                        relogged = true;
                        continue;
                    }
                    Failure::Error(e) if e.is_retryable() => {
                        // A 5xx before the 202: the job may have been registered anyway.
                        if self.job_known(&job, api).await? {
                            self.job_url(None, &job)
                        } else if resubmit && attempt < self.max_retries {
                            tracing::debug!(api, attempt, error = %self.redact(e.to_string()), "submission failed transiently; resubmitting");
                            tokio::time::sleep(self.backoff(attempt)).await;
                            attempt += 1;
                            continue;
                        } else {
                            return Err(self.redact_error(e));
                        }
                    }
                    Failure::Error(e) => return Err(self.redact_error(e)),
                },
                Err(e) => {
                    // The answer was lost: ask about our own job before doing anything else.
                    tracing::debug!(api, job = %job, error = %e, "submission answer lost; probing own job");
                    if self.job_known(&job, api).await? {
                        self.job_url(None, &job)
                    } else if resubmit && attempt < self.retry_limit(&e) {
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    } else {
                        return Err(e);
                    }
                }
            };
            match self.poll(&location, &job, api).await {
                Ok(v) => return Ok(v),
                Err(Failure::SessionExpired) => {
                    // ID.1001 comes from the API interceptor, before the API runs.
                    if relogged {
                        return Err(self.expired_again(api));
                    }
                    tracing::debug!(
                        api,
                        "zstack session expired; logging in again and resubmitting"
                    );
                    self.invalidate(&session).await;
                    relogged = true;
                    continue;
                }
                Err(Failure::Error(e)) => {
                    if e.is_retryable() && resubmit && attempt < self.max_retries {
                        tracing::debug!(api, attempt, error = %self.redact(e.to_string()), "job failed transiently; resubmitting");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(self.redact_error(e));
                }
            }
        }
    }

    /// Poll a job until it ends or `job_timeout` passes.
    async fn poll(&self, url: &str, job: &str, api: &str) -> Result<Value, Failure> {
        let started = Instant::now();
        let deadline = started + self.job_timeout;
        let mut interval = self.poll_interval;
        let mut transient_in_a_row = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Error(CloudError::Timeout {
                    provider: PROVIDER,
                    what: format!("ZStack job {job} ({api})"),
                    after: self.job_timeout,
                }));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            // Short jobs (most actions, the simulator) are caught within one poll interval;
            // long ones (VM creates on a busy cloud) back off gently to the cap.
            if started.elapsed() >= self.poll_interval * 10 {
                interval = (interval * 3 / 2).min(self.max_poll_interval);
            }
            let session = self.session.read().await.clone();
            self.counters.polls.fetch_add(1, Ordering::Relaxed);
            let r = match self
                .send(
                    &format!("{api} (job poll)"),
                    &Method::GET,
                    url,
                    None,
                    None,
                    session.as_deref(),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(api, job, error = %e, "polling failed; polling again");
                    continue;
                }
            };
            match r.status {
                202 => transient_in_a_row = 0,
                200 => return self.parse_json(&r.body, api).map_err(Failure::Error),
                404 => {
                    return Err(Failure::Error(CloudError::Transient {
                        provider: PROVIDER,
                        code: "HTTP404".into(),
                        message: format!("{api}: job {job} is unknown to the management node (expired, or the node restarted)"),
                    }))
                }
                status => match classify(status, &r.body, api) {
                    Failure::SessionExpired => return Err(Failure::SessionExpired),
                    // A transient answer may be the REST layer hiccupping rather than the job's
                    // result: the job's own failure is stored and comes back on every poll.
                    Failure::Error(e) if e.is_retryable() && transient_in_a_row < self.max_retries => {
                        transient_in_a_row += 1;
                        tracing::debug!(api, job, status, "transient answer while polling; polling again");
                    }
                    Failure::Error(e) => return Err(Failure::Error(e)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;

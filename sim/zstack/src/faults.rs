//! Fault injection: rules matched against calls by method and path regex.
//!
//! Request-level faults (`fail`, `unavailable`, `internal_error`, `drop_response`, `latency`)
//! act on the HTTP exchange; job-level faults (`job_delay`, `job_never_finishes`, `job_fails`,
//! `foreign_location`) act on the job an async call creates; `session_ttl` and `clock_skew` are
//! applied immediately when posted, and so is `expire_sessions` unless the rule names a call to
//! fire on (`method`, `path`, `nth`, `times` or a duration): then every session is expired when
//! that call arrives, before it is authenticated — a session dying in the middle of a client's
//! run. Every fired fault is logged (tracing and [`FaultEvent`]s).

use crate::error::{ErrorCode, SimError};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The default host put into `location` by a `foreign_location` rule. `.invalid` never
/// resolves (RFC 2606), so a client that fails to rewrite it cannot reach any real machine.
pub const DEFAULT_FOREIGN_HOST: &str = "zstack-mn.invalid:8080";

/// What a rule does. JSON: the `kind` field plus the variant's fields, flattened into the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with `status` and, unless `body` is given, a ZStack error envelope with `code`
    /// (default `SYS.1000`). The call is not executed.
    Fail {
        /// HTTP status of the reply (ZStack answers API errors with 503).
        status: u16,
        /// Error code for the JSON envelope.
        #[serde(default)]
        code: Option<String>,
        /// Overrides the generic description.
        #[serde(default)]
        description: Option<String>,
        /// The envelope's `details` text.
        #[serde(default)]
        details: Option<String>,
        /// A raw body instead of the envelope (sent as text).
        #[serde(default)]
        body: Option<String>,
    },
    /// 503 with a `SYS.1012` (management node unavailable) envelope; not executed.
    Unavailable,
    /// 500 with a plain-text body, as the REST layer answers an exception; not executed.
    InternalError {
        /// The text (default `Internal Server Error`).
        #[serde(default)]
        message: Option<String>,
    },
    /// Execute the call, then close the connection without answering (e.g. a lost 202).
    DropResponse,
    /// Accept the request and never answer: the connection stays open, silent, until the client
    /// gives up (or the simulator stops). Without `execute` the call is not performed; with it
    /// the call is performed first and only its answer never comes (an ambiguous mutation).
    Hang {
        /// Perform the call before hanging.
        #[serde(default)]
        execute: bool,
    },
    /// Sleep before handling the call.
    Latency {
        /// Milliseconds every matching call waits; `jitter_ms` adds a random extra.
        ms: u64,
        /// Uniform random extra in `0..=jitter_ms`.
        #[serde(default)]
        jitter_ms: u64,
    },
    /// The job takes this long instead of the configured `job_delay`.
    JobDelay {
        /// Milliseconds every matching job runs; `jitter_ms` adds a random extra.
        fixed_ms: u64,
        /// Uniform random extra in `0..=jitter_ms`.
        #[serde(default)]
        jitter_ms: u64,
    },
    /// The job stays 202 forever, or fails `SYS.1001` after `timeout_ms`. With `execute` the
    /// operation still happens (the cloud changes; only the job never reports it).
    JobNeverFinishes {
        /// Perform the operation anyway.
        #[serde(default)]
        execute: bool,
        /// Fail the job with SYS.1001 after this long (as at its apiTimeout).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// The job fails with this error; the operation is not performed.
    JobFails {
        /// Error code, e.g. `SYS.1006`.
        code: String,
        /// Overrides the generic description.
        #[serde(default)]
        description: Option<String>,
        /// The envelope's `details` text.
        #[serde(default)]
        details: Option<String>,
    },
    /// `location` names another host (clients must rewrite it, §3).
    ForeignLocation {
        /// `host[:port]`, default [`DEFAULT_FOREIGN_HOST`].
        #[serde(default)]
        host: Option<String>,
    },
    /// Every existing session becomes invalid: when posted, or — if the rule names a call
    /// (`method`, `path`, `nth`, `times`, a duration) — when that call arrives, before it is
    /// authenticated, so that call already fails `ID.1001`.
    ExpireSessions,
    /// Immediate: override the session TTL (null restores the configured one). Applies to
    /// existing sessions too, as expiry is computed from the TTL in force.
    SessionTtl {
        /// The new TTL in seconds; null restores the configured one.
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
    /// Immediate: shift the clock the AccessKey `Date` check uses (to provoke 403 skew).
    ClockSkew {
        /// Seconds added to the server clock.
        secs: i64,
    },
}

impl FaultAction {
    /// The `kind` this action has in JSON (and in the fault log).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            FaultAction::Fail { .. } => "fail",
            FaultAction::Unavailable => "unavailable",
            FaultAction::InternalError { .. } => "internal_error",
            FaultAction::DropResponse => "drop_response",
            FaultAction::Hang { .. } => "hang",
            FaultAction::Latency { .. } => "latency",
            FaultAction::JobDelay { .. } => "job_delay",
            FaultAction::JobNeverFinishes { .. } => "job_never_finishes",
            FaultAction::JobFails { .. } => "job_fails",
            FaultAction::ForeignLocation { .. } => "foreign_location",
            FaultAction::ExpireSessions => "expire_sessions",
            FaultAction::SessionTtl { .. } => "session_ttl",
            FaultAction::ClockSkew { .. } => "clock_skew",
        }
    }

    fn is_job_level(&self) -> bool {
        matches!(
            self,
            FaultAction::JobDelay { .. }
                | FaultAction::JobNeverFinishes { .. }
                | FaultAction::JobFails { .. }
                | FaultAction::ForeignLocation { .. }
        )
    }

    /// Actions that can be applied when posted (see [`FaultRule::is_immediate`]).
    pub fn is_immediate(&self) -> bool {
        matches!(
            self,
            FaultAction::ExpireSessions
                | FaultAction::SessionTtl { .. }
                | FaultAction::ClockSkew { .. }
        )
    }

    /// Shaping knobs apply to every matching call by default; failures fire once by default.
    fn unlimited_by_default(&self) -> bool {
        matches!(
            self,
            FaultAction::Latency { .. }
                | FaultAction::JobDelay { .. }
                | FaultAction::ForeignLocation { .. }
        )
    }
}

/// A fault rule. JSON example:
/// `{"kind":"fail","method":"POST","path":"^/zstack/v1/vm-instances$","nth":2,"status":503,"code":"SYS.1006"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Assigned when added (`f1`, `f2`, ...) unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HTTP method to match (case-insensitive); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Regex searched in the request path (without query); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Fire from the Nth matching call on (1-based, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u64>,
    /// How many times to fire; 0 = unlimited. Default: unlimited for latency / job_delay /
    /// foreign_location or when a duration is set, otherwise 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// The rule is only active for this long after being added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Same as `duration_ms`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// What to do.
    #[serde(flatten)]
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule matching every call.
    pub fn new(action: FaultAction) -> Self {
        FaultRule {
            id: None,
            method: None,
            path: None,
            nth: None,
            times: None,
            duration_ms: None,
            duration_secs: None,
            action,
        }
    }
    /// Fail matching calls with `status` and a ZStack error envelope carrying `code`.
    pub fn fail(status: u16, code: &str) -> Self {
        Self::new(FaultAction::Fail {
            status,
            code: Some(code.into()),
            description: None,
            details: None,
            body: None,
        })
    }
    /// 503 `SYS.1012` for the next `n` matching calls.
    pub fn unavailable_calls(n: u64) -> Self {
        Self::new(FaultAction::Unavailable).times(n)
    }
    /// 503 `SYS.1012` for every matching call during `d`.
    pub fn unavailable_for(d: Duration) -> Self {
        let mut r = Self::new(FaultAction::Unavailable);
        r.duration_ms = Some(d.as_millis() as u64);
        r
    }
    /// 500 plain text.
    pub fn internal_error() -> Self {
        Self::new(FaultAction::InternalError { message: None })
    }
    /// Execute, then drop the connection without an answer.
    pub fn drop_response() -> Self {
        Self::new(FaultAction::DropResponse)
    }
    /// Never answer (see [`FaultAction::Hang`]).
    pub fn hang(execute: bool) -> Self {
        Self::new(FaultAction::Hang { execute })
    }
    /// Delays matching calls by `ms` plus a random `0..=jitter_ms`.
    pub fn latency(ms: u64, jitter_ms: u64) -> Self {
        Self::new(FaultAction::Latency { ms, jitter_ms })
    }
    /// Job duration for matching async calls.
    pub fn job_delay(fixed_ms: u64, jitter_ms: u64) -> Self {
        Self::new(FaultAction::JobDelay {
            fixed_ms,
            jitter_ms,
        })
    }
    /// A job that never completes (see [`FaultAction::JobNeverFinishes`]).
    pub fn job_never_finishes(execute: bool, timeout_ms: Option<u64>) -> Self {
        Self::new(FaultAction::JobNeverFinishes {
            execute,
            timeout_ms,
        })
    }
    /// A job that fails with `code`.
    pub fn job_fails(code: &str) -> Self {
        Self::new(FaultAction::JobFails {
            code: code.into(),
            description: None,
            details: None,
        })
    }
    /// A foreign host in `location`.
    pub fn foreign_location(host: Option<&str>) -> Self {
        Self::new(FaultAction::ForeignLocation {
            host: host.map(str::to_string),
        })
    }
    /// Whether the rule names the call(s) it fires on (any matcher or counter set).
    pub(crate) fn names_a_call(&self) -> bool {
        self.method.is_some()
            || self.path.is_some()
            || self.nth.is_some()
            || self.times.is_some()
            || self.duration_ms.is_some()
            || self.duration_secs.is_some()
    }

    /// Applied when posted and never stored: `session_ttl`, `clock_skew`, and `expire_sessions`
    /// that names no call. An `expire_sessions` rule naming a call is stored and fires on it.
    pub fn is_immediate(&self) -> bool {
        match self.action {
            FaultAction::ExpireSessions => !self.names_a_call(),
            ref a => a.is_immediate(),
        }
    }

    /// Restricts the rule to a method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_string());
        self
    }
    /// Restricts the rule to paths matching a regex.
    pub fn path(mut self, re: &str) -> Self {
        self.path = Some(re.to_string());
        self
    }
    /// Fire from the Nth matching call on.
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }
    /// Fire this many times (0 = unlimited).
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }
}

/// A fired fault, as listed by `GET /_sim/faults/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// RFC 3339 time.
    pub at: String,
    /// The rule id (`immediate` for immediate actions).
    pub rule_id: String,
    /// The action kind, e.g. `drop_response`.
    pub kind: String,
    /// The matched call's method.
    pub method: String,
    /// The matched call's path.
    pub path: String,
    /// What the fault did, in words (e.g. how many sessions it expired).
    pub detail: String,
}

/// A rule with its compiled matcher and counters (`GET /_sim/faults`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActiveRule {
    #[serde(flatten)]
    pub rule: FaultRule,
    pub seen: u64,
    pub fired: u64,
    #[serde(skip)]
    re: Option<Regex>,
    #[serde(skip)]
    added: Instant,
}

/// The HTTP-level effect of faults on one call.
#[derive(Debug, Default)]
pub(crate) struct RequestFaults {
    pub latency: Duration,
    pub respond: Option<FaultResponse>,
    pub drop: bool,
    /// Never answer; `Some(true)`: perform the call first.
    pub hang: Option<bool>,
    /// Expire every session before handling the call: the id of the `expire_sessions` rule
    /// that fired (the caller expires them and logs the event with the count).
    pub expire_sessions: Option<String>,
}

/// A canned response.
#[derive(Debug)]
pub(crate) enum FaultResponse {
    Json(u16, serde_json::Value),
    Text(u16, String),
}

/// The job-level effect of faults on one async call.
#[derive(Debug, Default, Clone)]
pub(crate) struct JobFaults {
    pub delay: Option<Duration>,
    pub never: Option<(bool, Option<Duration>)>,
    pub fail: Option<ErrorCode>,
    pub location_host: Option<String>,
}

/// All fault state.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    pub rules: Vec<ActiveRule>,
    pub log: Vec<FaultEvent>,
    pub ttl_override: Option<u64>,
    pub clock_skew_secs: i64,
    next_id: u64,
}

fn jitter(fixed: u64, jitter: u64) -> Duration {
    use rand::Rng;
    let extra = if jitter == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..=jitter)
    };
    Duration::from_millis(fixed + extra)
}

impl FaultEngine {
    /// Validates and stores a rule; returns its id. Immediate actions are not handled here.
    pub fn add(&mut self, mut rule: FaultRule) -> Result<String, SimError> {
        let re = match &rule.path {
            Some(p) => {
                Some(Regex::new(p).map_err(|e| SimError::Fault(format!("path regex: {e}")))?)
            }
            None => None,
        };
        if let FaultAction::Fail { status, .. } = &rule.action {
            if !(100..=599).contains(status) {
                return Err(SimError::Fault(format!(
                    "status {status} is not an HTTP status"
                )));
            }
        }
        if rule.is_immediate() {
            return Err(SimError::Fault(
                "immediate actions are applied, not stored".into(),
            ));
        }

        if rule.nth == Some(0) {
            return Err(SimError::Fault("nth is 1-based".into()));
        }
        self.next_id += 1;
        let id = rule
            .id
            .clone()
            .unwrap_or_else(|| format!("f{}", self.next_id));
        rule.id = Some(id.clone());
        tracing::info!(rule = ?rule, "fault rule added");
        self.rules.push(ActiveRule {
            rule,
            seen: 0,
            fired: 0,
            re,
            added: Instant::now(),
        });
        Ok(id)
    }

    /// Drops all rules and overrides (the log is kept; see [`FaultEngine::clear_log`]).
    pub fn reset(&mut self) {
        self.rules.clear();
        self.ttl_override = None;
        self.clock_skew_secs = 0;
        tracing::info!("faults reset");
    }

    /// Empties the fired-faults log (the rules stay).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// Records a fired fault.
    pub fn fired(&mut self, rule_id: &str, kind: &str, method: &str, path: &str, detail: String) {
        tracing::warn!(rule = rule_id, kind, method, path, detail = %detail, "fault fired");
        self.log.push(FaultEvent {
            at: chrono::Utc::now().to_rfc3339(),
            rule_id: rule_id.into(),
            kind: kind.into(),
            method: method.into(),
            path: path.into(),
            detail,
        });
    }

    /// Finds the rules of one level that fire for this call, counting matches.
    fn select(
        &mut self,
        method: &str,
        path: &str,
        job_level: bool,
        stop_on_response: bool,
    ) -> Vec<FaultRule> {
        let mut out = Vec::new();
        let mut responded = false;
        for r in &mut self.rules {
            if r.rule.action.is_job_level() != job_level {
                continue;
            }
            let window = r
                .rule
                .duration_ms
                .map(Duration::from_millis)
                .or(r.rule.duration_secs.map(Duration::from_secs_f64));
            if window.is_some_and(|w| r.added.elapsed() > w) {
                continue;
            }
            if r.rule
                .method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
            {
                continue;
            }
            if r.re.as_ref().is_some_and(|re| !re.is_match(path)) {
                continue;
            }
            let responds = matches!(
                r.rule.action,
                FaultAction::Fail { .. }
                    | FaultAction::Unavailable
                    | FaultAction::InternalError { .. }
            );
            if stop_on_response && responds && responded {
                continue; // the call never reaches later responding rules
            }
            r.seen += 1;
            let limit = match r.rule.times {
                Some(0) => u64::MAX,
                Some(n) => n,
                None if window.is_some() || r.rule.action.unlimited_by_default() => u64::MAX,
                None => 1,
            };
            if r.seen >= r.rule.nth.unwrap_or(1) && r.fired < limit {
                r.fired += 1;
                responded |= responds;
                out.push(r.rule.clone());
            }
        }
        out
    }

    /// Request-level faults for a call.
    pub fn on_request(&mut self, method: &str, path: &str) -> RequestFaults {
        let mut rf = RequestFaults::default();
        for rule in self.select(method, path, false, true) {
            let id = rule.id.clone().unwrap_or_default();
            let detail = match &rule.action {
                FaultAction::Latency { ms, jitter_ms } => {
                    let d = jitter(*ms, *jitter_ms);
                    rf.latency += d;
                    format!("latency {} ms", d.as_millis())
                }
                FaultAction::Hang { execute } => {
                    let e = rf.hang.unwrap_or(false) || *execute;
                    rf.hang = Some(e);
                    format!("the request is accepted and never answered (execute: {execute})")
                }
                FaultAction::DropResponse => {
                    rf.drop = true;
                    "the call executes, then the connection is closed without a response".into()
                }
                FaultAction::Unavailable => {
                    let e = ErrorCode::new(
                        "SYS.1012",
                        "management node is not available, please retry later",
                    );
                    rf.respond
                        .get_or_insert(FaultResponse::Json(503, e.envelope()));
                    "503 SYS.1012".into()
                }
                FaultAction::InternalError { message } => {
                    let m = message
                        .clone()
                        .unwrap_or_else(|| "Internal Server Error".into());
                    rf.respond.get_or_insert(FaultResponse::Text(500, m));
                    "500 plain text".into()
                }
                FaultAction::Fail {
                    status,
                    code,
                    description,
                    details,
                    body,
                } => {
                    let resp = match body {
                        Some(b) => FaultResponse::Text(*status, b.clone()),
                        None => {
                            let mut e = ErrorCode::new(
                                code.as_deref().unwrap_or("SYS.1000"),
                                details.clone().unwrap_or_else(|| "injected fault".into()),
                            );
                            if let Some(d) = description {
                                e = e.with_description(d.clone());
                            }
                            FaultResponse::Json(*status, e.envelope())
                        }
                    };
                    rf.respond.get_or_insert(resp);
                    format!("status {status} code {}", code.as_deref().unwrap_or("-"))
                }
                FaultAction::ExpireSessions => {
                    rf.expire_sessions.get_or_insert(id);
                    continue; // logged by the caller, with the number of sessions expired
                }
                _ => continue,
            };
            self.fired(&id, rule.action.name(), method, path, detail);
        }
        rf
    }

    /// Job-level faults for an async call (first matching rule of each kind wins).
    pub fn on_job(&mut self, method: &str, path: &str) -> JobFaults {
        let mut jf = JobFaults::default();
        for rule in self.select(method, path, true, false) {
            let id = rule.id.clone().unwrap_or_default();
            let detail = match &rule.action {
                FaultAction::JobDelay {
                    fixed_ms,
                    jitter_ms,
                } => {
                    if jf.delay.is_some() {
                        continue;
                    }
                    let d = jitter(*fixed_ms, *jitter_ms);
                    jf.delay = Some(d);
                    format!("job delay {} ms", d.as_millis())
                }
                FaultAction::JobNeverFinishes {
                    execute,
                    timeout_ms,
                } => {
                    if jf.never.is_some() {
                        continue;
                    }
                    jf.never = Some((*execute, timeout_ms.map(Duration::from_millis)));
                    format!("job never finishes (execute: {execute}, timeout_ms: {timeout_ms:?})")
                }
                FaultAction::JobFails {
                    code,
                    description,
                    details,
                } => {
                    if jf.fail.is_some() {
                        continue;
                    }
                    let mut e = ErrorCode::new(
                        code,
                        details
                            .clone()
                            .unwrap_or_else(|| "injected job failure".into()),
                    );
                    if let Some(d) = description {
                        e = e.with_description(d.clone());
                    }
                    jf.fail = Some(e);
                    format!("job fails with {code}")
                }
                FaultAction::ForeignLocation { host } => {
                    if jf.location_host.is_some() {
                        continue;
                    }
                    let h = host.clone().unwrap_or_else(|| DEFAULT_FOREIGN_HOST.into());
                    let d = format!("location host {h}");
                    jf.location_host = Some(h);
                    d
                }
                _ => continue,
            };
            self.fired(&id, rule.action.name(), method, path, detail);
        }
        jf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_round_trips() {
        let j = r#"{"kind":"fail","method":"POST","path":"^/zstack/v1/vm-instances$","nth":2,"status":503,"code":"SYS.1006"}"#;
        let r: FaultRule = serde_json::from_str(j).unwrap();
        assert_eq!(r.nth, Some(2));
        assert!(matches!(r.action, FaultAction::Fail { status: 503, .. }));
        let r: FaultRule = serde_json::from_str(r#"{"kind":"unavailable","times":3}"#).unwrap();
        assert_eq!(r.action, FaultAction::Unavailable);
        let r: FaultRule = serde_json::from_str(r#"{"kind":"expire_sessions"}"#).unwrap();
        assert!(r.is_immediate());
        let r: FaultRule =
            serde_json::from_str(r#"{"kind":"expire_sessions","method":"POST","nth":2}"#).unwrap();
        assert!(!r.is_immediate(), "naming a call makes it a rule");
        let back: FaultRule =
            serde_json::from_str(&serde_json::to_string(&FaultRule::job_delay(5, 1)).unwrap())
                .unwrap();
        assert_eq!(back, FaultRule::job_delay(5, 1));
    }

    #[test]
    fn nth_and_times() {
        let mut f = FaultEngine::default();
        f.add(
            FaultRule::fail(418, "X.1")
                .method("get")
                .path("^/a$")
                .nth(2)
                .times(2),
        )
        .unwrap();
        let fired: Vec<bool> = (0..5)
            .map(|_| f.on_request("GET", "/a").respond.is_some())
            .collect();
        assert_eq!(fired, vec![false, true, true, false, false]);
        assert!(f.on_request("POST", "/a").respond.is_none());
        assert_eq!(f.log.len(), 2);
        assert!(f.add(FaultRule::fail(1000, "X")).is_err());
        assert!(f.add(FaultRule::new(FaultAction::ExpireSessions)).is_err());
        assert!(f.add(FaultRule::fail(500, "X").path("(")).is_err());
    }

    #[test]
    fn expire_sessions_rule_fires_at_the_nth_matching_call() {
        let mut f = FaultEngine::default();
        let id = f
            .add(
                FaultRule::new(FaultAction::ExpireSessions)
                    .method("GET")
                    .nth(3),
            )
            .unwrap();
        let fired: Vec<Option<String>> = (0..4)
            .map(|_| f.on_request("GET", "/z").expire_sessions)
            .collect();
        assert_eq!(
            fired,
            vec![None, None, Some(id), None],
            "once, at the 3rd GET"
        );
        assert!(f.on_request("PUT", "/z").expire_sessions.is_none());
    }
}

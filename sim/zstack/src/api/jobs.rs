//! The async job machinery: 202 + `api-jobs` polling, per-VM serialization, job faults and
//! timeouts.

use super::context::Ctx;
use super::response::{json_resp, text};
use crate::cloud::{CloudState, Job, JobOutcome};
use crate::error::ErrorCode;
use crate::faults::JobFaults;
use crate::sim::{lock, Shared};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The step run when a job completes (after the delay); its value is the job result.
pub(super) type Finish = Box<dyn FnOnce(&mut CloudState) -> Result<Value, ErrorCode> + Send>;
/// The step run when a job starts: validates and claims, then hands over the finish step.
pub(super) type Begin = Box<dyn FnOnce(&mut CloudState) -> Result<Finish, ErrorCode> + Send>;

/// What an async API will do: optionally serialized on a VM, then begin → delay → finish.
pub(super) struct Prepared {
    /// The VM whose queue the job waits in (ZStack runs one operation per VM at a time).
    pub(super) lock: Option<String>,
    /// The begin step, or the error the job fails with without running.
    pub(super) work: Result<Begin, ErrorCode>,
}

impl Prepared {
    /// A job serialized on `lock` (a VM uuid) when given, running `begin` then its finish step.
    pub(super) fn new(
        lock: Option<String>,
        begin: impl FnOnce(&mut CloudState) -> Result<Finish, ErrorCode> + Send + 'static,
    ) -> Self {
        Prepared {
            lock,
            work: Ok(Box::new(begin)),
        }
    }
    /// A job that fails with `e` without touching the state (a request rejected up front).
    pub(super) fn failed(e: ErrorCode) -> Self {
        Prepared {
            lock: None,
            work: Err(e),
        }
    }
}

/// A finish step that just returns a value computed at begin.
pub(super) fn done(v: Value) -> Finish {
    Box::new(move |_| Ok(v))
}

/// `apiTimeout` in ms (`ApiTimeoutGlobalProperty`); 30 min for APIs not listed (unconfirmed).
fn api_timeout_ms(api: &str) -> u64 {
    const H: u64 = 3_600_000;
    match api {
        "CreateVmInstance" => 12 * H,
        "AddImage" => 72 * H,
        "ExpungeVmInstance" => 3 * H,
        _ => H / 2,
    }
}

/// Submits an async API: header checks (400s), job creation, 202 `{location, apiTimeout}`.
pub(super) fn submit(
    ctx: &Ctx,
    api: &'static str,
    build: impl FnOnce(&Value) -> Result<Prepared, Response>,
) -> Response {
    let auth = match ctx.authenticate() {
        Ok(a) => a,
        Err(r) => return r,
    };
    let job_id = match ctx.header("x-job-uuid") {
        Some(j) if j.len() != 32 => {
            return text(
                400,
                format!(
                    "Invalid header[X-Job-UUID], the value[{j}] is not a UUID with '-' stripped"
                ),
            )
        }
        Some(j) => j,
        None => crate::cloud::new_uuid(),
    };
    let mut pre_error = auth.err();
    let mut timeout_ms = api_timeout_ms(api);
    if let Some(t) = ctx.header("x-api-timeout") {
        match t.trim().parse::<u64>() {
            Err(_) => {
                return text(
                    400,
                    format!("Invalid header[X-API-Timeout], {t} is not a number"),
                )
            }
            Ok(secs) if secs < 300 => {
                pre_error.get_or_insert(ErrorCode::invalid_argument(format!(
                    "the API timeout[{secs}s] is smaller than the minimal timeout[300s]"
                )));
            }
            Ok(secs) => timeout_ms = secs * 1000,
        }
    }
    let body = match ctx.body_json() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let prepared = match build(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let retention = ctx.sh.cfg.job_retention;
    let id = job_id.clone();
    let inserted = ctx.sh.mutate(|c| {
        c.purge_jobs(retention);
        if c.job(&id).is_some() {
            return false;
        }
        c.jobs.push(Job {
            id: id.clone(),
            api: api.into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            outcome: JobOutcome::Running,
        });
        true
    });
    if !inserted {
        return text(400, format!("Duplicate job uuid[{job_id}]"));
    }
    let jf = lock(&ctx.sh.faults).on_job(ctx.method.as_str(), &ctx.path);
    let host = jf
        .location_host
        .clone()
        .or_else(|| ctx.header("host"))
        .unwrap_or_else(|| ctx.sh.addr.to_string());
    tracing::debug!(api, job = %job_id, "job accepted");
    start_job(ctx.sh.clone(), job_id.clone(), pre_error, jf, prepared);
    json_resp(
        202,
        json!({
            "location": format!("http://{host}/zstack/v1/api-jobs/{job_id}"),
            "apiTimeout": timeout_ms,
        }),
    )
}

/// Runs a job. When the VM's queue is free, `begin` runs before the 202 goes out, so the
/// transitional state (Starting, Stopping, ...) is visible to the very first poll.
fn start_job(sh: Arc<Shared>, id: String, pre: Option<ErrorCode>, jf: JobFaults, p: Prepared) {
    let delay = jf.delay.unwrap_or(sh.cfg.job_delay);
    let never = jf.never;
    let early: Option<ErrorCode> = pre.or(jf.fail.clone()).or(match p.work {
        Err(ref e) => Some(e.clone()),
        Ok(_) => None,
    });
    if let Some(e) = early {
        // Rejected before execution: nothing changes; the job fails after the delay.
        tokio::spawn(complete(sh, id, delay, never, Err(e), None));
        return;
    }
    let Ok(begin) = p.work else { return };
    if let Some((false, timeout)) = never {
        // Stuck before execution: nothing changes, and the job never reports (or times out).
        tokio::spawn(async move {
            if let Some(t) = timeout {
                if sh.sleep(t).await {
                    record_timeout(&sh, &id);
                }
            }
        });
        return;
    }
    let lock_arc = p.lock.as_deref().map(|k| sh.vm_lock(k));
    match lock_arc.map(|l| (l.clone().try_lock_owned(), l)) {
        None => {
            let r = sh.mutate(|c| begin(c));
            tokio::spawn(complete(sh, id, delay, never, r, None));
        }
        Some((Ok(guard), _)) => {
            let r = sh.mutate(|c| begin(c));
            tokio::spawn(complete(sh, id, delay, never, r, Some(guard)));
        }
        Some((Err(_), l)) => {
            tokio::spawn(async move {
                let mut stop = sh.shutdown.clone();
                let guard = tokio::select! {
                    g = l.lock_owned() => g,
                    _ = stop.changed() => return,
                };
                let r = sh.mutate(|c| begin(c));
                complete(sh, id, delay, never, r, Some(guard)).await;
            });
        }
    }
}

fn record_timeout(sh: &Shared, id: &str) {
    let e = ErrorCode::new(
        "SYS.1001",
        format!("the job[uuid:{id}] timed out before it completed"),
    );
    sh.mutate(|c| c.finish_job(id, Err(e)));
}

async fn complete(
    sh: Arc<Shared>,
    id: String,
    delay: Duration,
    never: Option<(bool, Option<Duration>)>,
    begun: Result<Finish, ErrorCode>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    if !sh.sleep(delay).await {
        return;
    }
    sh.mutate(|c| {
        let outcome = match begun {
            Ok(fin) => fin(c),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(_) => tracing::debug!(job = %id, "job succeeded"),
            Err(e) => tracing::debug!(job = %id, code = %e.code, "job failed"),
        }
        if never.is_none() {
            c.finish_job(&id, outcome);
        }
    });
    drop(guard);
    if let Some((_, Some(t))) = never {
        if sh.sleep(t.saturating_sub(delay)).await {
            record_timeout(&sh, &id);
        }
    }
}

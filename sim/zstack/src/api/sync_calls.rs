//! APIs answered in the request itself: login, job polling, queries and free IPs.

use super::context::Ctx;
use super::response::{api_error, json_resp, text};
use crate::cloud::JobOutcome;
use crate::error::ErrorCode;
use crate::query::{self, Cond, Kind, Op};
use crate::sim::lock;
use axum::response::Response;
use serde_json::{json, Value};

/// kprov's test suite scans every kprov run for leaked secrets (tests/peers/leakscan.py): with
/// `KPROV_AUDIT_DIR` set, the session ids this simulator issues are appended to
/// `$KPROV_AUDIT_DIR/issued/zstack-sim-PID` so the scan can look for them. Best effort.
fn record_issued_secret(value: &str) {
    use std::io::Write;
    let Some(dir) = std::env::var_os("KPROV_AUDIT_DIR").filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir).join("issued");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("zstack-sim-{}", std::process::id())))
    {
        let _ = writeln!(f, "{value}");
    }
}

/// `PUT accounts/login` (`logInByAccount`); the session id issued is recorded for the leak scan.
pub(super) fn login(ctx: &Ctx) -> Response {
    let body = match ctx.body_json() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(p) = body.get("logInByAccount") else {
        return text(400, "the body doesn't contain action mapping");
    };
    let name = p.get("accountName").and_then(Value::as_str);
    let pw = p.get("password").and_then(Value::as_str);
    let (Some(name), Some(pw)) = (name, pw) else {
        return api_error(&ErrorCode::invalid_argument(
            "accountName and password are mandatory",
        ));
    };
    let ttl = ctx.sh.ttl_secs();
    match ctx.sh.mutate(|c| c.login(name, pw, ttl)) {
        Ok(s) => {
            tracing::info!(account = name, session = %s.uuid, "login");
            lock(&ctx.sh.stats).record_login();
            record_issued_secret(&s.uuid);
            json_resp(200, json!({ "inventory": s }))
        }
        Err(e) => api_error(&e),
    }
}

/// `GET api-jobs/{id}`: 202 while running, then the result or the error; 404 once the job is
/// older than the retention (expired jobs are purged on the way).
pub(super) fn job_query(ctx: &Ctx, id: &str) -> Response {
    let retention = ctx.sh.cfg.job_retention;
    let job = ctx.sh.read(|c| c.job(id).cloned());
    let expired = job.as_ref().is_some_and(|j| {
        j.finished_at.is_some_and(|f| {
            chrono::Utc::now().signed_duration_since(f)
                > chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX)
        })
    });
    if expired {
        ctx.sh.mutate(|c| c.purge_jobs(retention));
    }
    match job {
        Some(j) if !expired => match j.outcome {
            JobOutcome::Running => json_resp(202, json!({})),
            JobOutcome::Succeeded { result } => json_resp(200, result),
            JobOutcome::Failed { error } => api_error(&error),
        },
        _ => text(404, "the job has been expired"),
    }
}

/// A `GET` query of one resource kind; `id` (from `/{uuid}` paths) becomes a `uuid=` condition.
pub(super) fn run_query(ctx: &Ctx, kind: Kind, id: Option<String>) -> Response {
    if let Err(r) = ctx.auth_sync() {
        return r;
    }
    let mut opts = match query::parse_opts(&ctx.params) {
        Ok(o) => o,
        Err(t) => return text(400, t),
    };
    if let Some(id) = id {
        opts.conds.push(Cond {
            field: "uuid".into(),
            op: Op::Eq,
            value: id,
        });
    }
    match ctx.sh.read(|c| query::run(c, kind, &opts)) {
        Err(e) => api_error(&e),
        Ok(r) => {
            let mut body = if opts.count {
                json!({ "total": r.total })
            } else {
                let mut b = json!({ "inventories": r.inventories });
                if opts.reply_with_count {
                    b["total"] = json!(r.total);
                }
                b
            };
            // The MN attaches a class schema; only when asked, so `{"inventories":[]}` stays exact.
            if ctx
                .header("x-json-schema")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                body["schema"] = json!({});
            }
            json_resp(200, body)
        }
    }
}

/// `GET l3-networks/{uuid}/ip/free` with `start` / `limit` paging.
pub(super) fn free_ips(ctx: &Ctx, l3: &str) -> Response {
    if let Err(r) = ctx.auth_sync() {
        return r;
    }
    let num = |k: &str, d: usize| -> Result<usize, Response> {
        match ctx.param(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| {
                text(
                    400,
                    format!("Invalid query parameter[{k}], {v} is not an integer"),
                )
            }),
        }
    };
    let (limit, start) = match (num("limit", 100), num("start", 0)) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let res = ctx.sh.read(|c| {
        c.l3_networks
            .iter()
            .find(|l| l.uuid == l3)
            .map(|l| c.free_ips(l, start, limit))
    });
    match res {
        Some(list) => json_resp(200, json!({ "inventories": list })),
        None => api_error(&ErrorCode::invalid_argument(format!(
            "invalid field[l3NetworkUuid], resource[uuid:{l3}, type:L3NetworkVO] not found"
        ))),
    }
}

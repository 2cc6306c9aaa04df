//! HTTP layer: routing of `/zstack/v1/...`, authentication, the async job machinery and the
//! `/_sim/...` control API.

use crate::cloud::{sha512_hex, AddImageParams, CloudState, CreateVmParams, Job, JobOutcome};
use crate::error::ErrorCode;
use crate::faults::{FaultResponse, FaultRule, JobFaults};
use crate::query::{self, Cond, Kind, Op, QUERY_PATHS};
use crate::sim::{lock, DropConnection, Shared};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Builds the router: control API routes plus a fallback that handles all of `/zstack/v1`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(post_faults).delete(reset_faults),
        )
        .route("/_sim/faults/log", get(fault_log).delete(clear_fault_log))
        .route("/_sim/stats", get(get_stats).delete(reset_stats))
        .route("/_sim/sessions/expire", post(expire_sessions))
        .route("/_sim/session-ttl", put(session_ttl))
        .route("/_sim/state", get(dump_state))
        .fallback(zstack)
        .with_state(shared)
}

// ------------------------------------------------------------------- responses

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Plain-text reply: what the REST layer itself sends for 400/404/405/500.
fn text(code: u16, msg: impl Into<String>) -> Response {
    (
        status(code),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn json_resp(code: u16, v: Value) -> Response {
    (
        status(code),
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// A failed API call: 503 with the error envelope.
fn api_error(e: &ErrorCode) -> Response {
    json_resp(503, e.envelope())
}

// ------------------------------------------------------------------- routing

/// Every API the simulator maps.
#[derive(Debug, Clone)]
enum Api {
    Login,
    Logout(String),
    ValidSession(String),
    RenewSession(String),
    GetVersion,
    JobQuery(String),
    Query(Kind, Option<String>),
    CreateVm,
    VmAction(String),
    DestroyVm(String),
    CandidatePci(String),
    PciAttach(String),
    PciDetach(String),
    PciSpecToVm(String, String),
    MdevAttach(String, String),
    MdevDetach(String, String),
    CreateTag(&'static str),
    DeleteTag(String),
    AddImage,
    DeleteImage(String),
    ImageAction(String),
    FreeIps(String),
}

enum RouteErr {
    NotFound,
    Method,
}

/// Maps method + path (after `/zstack/v1`) to an API and its stats template.
fn route(method: &Method, rest: &str) -> Result<(Api, String), RouteErr> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let m = method.as_str();
    let owned = |s: &&str| s.to_string();
    let one = |want: &str, api: Api, t: &str| {
        if m == want {
            Ok((api, format!("/zstack/v1/{t}")))
        } else {
            Err(RouteErr::Method)
        }
    };
    match segs.as_slice() {
        ["accounts", "login"] => one("PUT", Api::Login, "accounts/login"),
        ["accounts", "sessions", id] => {
            one("DELETE", Api::Logout(owned(id)), "accounts/sessions/{uuid}")
        }
        ["accounts", "sessions", id, "valid"] => one(
            "GET",
            Api::ValidSession(owned(id)),
            "accounts/sessions/{uuid}/valid",
        ),
        ["accounts", "sessions", id, "renew"] => one(
            "PUT",
            Api::RenewSession(owned(id)),
            "accounts/sessions/{uuid}/renew",
        ),
        ["management-nodes", "actions"] => one("PUT", Api::GetVersion, "management-nodes/actions"),
        ["api-jobs", id] => one("GET", Api::JobQuery(owned(id)), "api-jobs/{uuid}"),
        ["vm-instances"] => match m {
            "GET" => Ok((Api::Query(Kind::Vm, None), "/zstack/v1/vm-instances".into())),
            "POST" => Ok((Api::CreateVm, "/zstack/v1/vm-instances".into())),
            _ => Err(RouteErr::Method),
        },
        ["vm-instances", id] if *id != "nics" => match m {
            "GET" => Ok((
                Api::Query(Kind::Vm, Some(owned(id))),
                "/zstack/v1/vm-instances/{uuid}".into(),
            )),
            "DELETE" => Ok((
                Api::DestroyVm(owned(id)),
                "/zstack/v1/vm-instances/{uuid}".into(),
            )),
            _ => Err(RouteErr::Method),
        },
        ["vm-instances", id, "actions"] if *id != "nics" => one(
            "PUT",
            Api::VmAction(owned(id)),
            "vm-instances/{uuid}/actions",
        ),
        ["vm-instances", id, "candidate-pci-devices"] => one(
            "GET",
            Api::CandidatePci(owned(id)),
            "vm-instances/{uuid}/candidate-pci-devices",
        ),
        ["pci-device", "pci-devices", id, "attach"] => one(
            "POST",
            Api::PciAttach(owned(id)),
            "pci-device/pci-devices/{uuid}/attach",
        ),
        ["pci-device", "pci-devices", id, "detach"] => one(
            "POST",
            Api::PciDetach(owned(id)),
            "pci-device/pci-devices/{uuid}/detach",
        ),
        ["pci-device-specs", spec, "vm-instances", vm] => one(
            "POST",
            Api::PciSpecToVm(owned(spec), owned(vm)),
            "pci-device-specs/{specUuid}/vm-instances/{vmUuid}",
        ),
        ["mdev-devices", id, "vm-instances", vm] => match m {
            "POST" => Ok((
                Api::MdevAttach(owned(id), owned(vm)),
                "/zstack/v1/mdev-devices/{uuid}/vm-instances/{vmUuid}".into(),
            )),
            "DELETE" => Ok((
                Api::MdevDetach(owned(id), owned(vm)),
                "/zstack/v1/mdev-devices/{uuid}/vm-instances/{vmUuid}".into(),
            )),
            _ => Err(RouteErr::Method),
        },
        ["user-tags"] | ["system-tags"] if m == "POST" => {
            let (t, p) = if segs[0] == "user-tags" {
                ("User", "user-tags")
            } else {
                ("System", "system-tags")
            };
            Ok((Api::CreateTag(t), format!("/zstack/v1/{p}")))
        }
        ["tags", id] => one("DELETE", Api::DeleteTag(owned(id)), "tags/{uuid}"),
        ["images"] if m == "POST" => Ok((Api::AddImage, "/zstack/v1/images".into())),
        ["images", id] if m == "DELETE" => Ok((
            Api::DeleteImage(owned(id)),
            "/zstack/v1/images/{uuid}".into(),
        )),
        ["images", id, "actions"] => {
            one("PUT", Api::ImageAction(owned(id)), "images/{uuid}/actions")
        }
        ["l3-networks", id, "ip", "free"] => {
            one("GET", Api::FreeIps(owned(id)), "l3-networks/{uuid}/ip/free")
        }
        _ => {
            for (p, kind) in QUERY_PATHS {
                let ps: Vec<&str> = p.split('/').collect();
                if segs.len() == ps.len() && segs == ps {
                    return one("GET", Api::Query(*kind, None), p);
                }
                if segs.len() == ps.len() + 1 && segs[..ps.len()] == ps[..] {
                    // `vm-instances/nics` must not be read as VM uuid "nics": handled above.
                    return one(
                        "GET",
                        Api::Query(*kind, Some(segs[ps.len()].to_string())),
                        &format!("{p}/{{uuid}}"),
                    );
                }
            }
            Err(RouteErr::NotFound)
        }
    }
}

// ------------------------------------------------------------------- request context

struct Ctx<'a> {
    sh: &'a Arc<Shared>,
    method: Method,
    path: String,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Ctx<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object (empty body = `{}`); a malformed body is a 400.
    fn body_json(&self) -> Result<Value, Response> {
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
    fn authenticate(&self) -> Result<Result<String, ErrorCode>, Response> {
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
    fn auth_sync(&self) -> Result<String, Response> {
        match self.authenticate()? {
            Ok(a) => Ok(a),
            Err(e) => Err(api_error(&e)),
        }
    }
}

// ------------------------------------------------------------------- the /zstack/v1 handler

async fn zstack(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(_) => return text(400, "the request body is too large or unreadable"),
    };
    let routed = match path.strip_prefix("/zstack/v1") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => route(&method, rest),
        _ => Err(RouteErr::NotFound),
    };
    let template = match &routed {
        Ok((_, t)) => t.clone(),
        Err(_) => "<unmapped>".into(),
    };
    lock(&sh.stats).record(format!("{} {}", method, template));
    tracing::debug!(%method, %path, "request");

    let rf = lock(&sh.faults).on_request(method.as_str(), &path);
    if let Some(rule) = &rf.expire_sessions {
        sh.expire_all_sessions(rule, method.as_str(), &path);
    }
    if !rf.latency.is_zero() && !sh.sleep(rf.latency).await {
        return text(503, "the simulator is shutting down");
    }
    if rf.hang == Some(false) {
        // Accepted, never performed, never answered (until the simulator stops).
        sh.sleep(HANG_FOREVER).await;
        return text(503, "the simulator is shutting down");
    }
    let mut resp = if let Some(r) = rf.respond {
        match r {
            FaultResponse::Json(s, v) => json_resp(s, v),
            FaultResponse::Text(s, t) => text(s, t),
        }
    } else {
        match routed {
            Err(RouteErr::NotFound) => text(404, format!("no api mapping to {path}")),
            Err(RouteErr::Method) => text(
                405,
                format!("the method[{method}] is not supported by the api at {path}"),
            ),
            Ok((api, _)) => {
                let ctx = Ctx {
                    sh: &sh,
                    method,
                    path: path.clone(),
                    params: form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .collect(),
                    headers: parts.headers,
                    body,
                };
                dispatch(&ctx, api)
            }
        }
    };
    if rf.hang == Some(true) {
        // Performed, but the answer never comes.
        drop(resp);
        sh.sleep(HANG_FOREVER).await;
        return text(503, "the simulator is shutting down");
    }
    if rf.drop {
        resp.extensions_mut().insert(DropConnection);
    }
    resp
}

/// How long a `hang` fault holds a request: in practice until the client gives up or the
/// simulator stops.
const HANG_FOREVER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn dispatch(ctx: &Ctx, api: Api) -> Response {
    match api {
        Api::Login => login(ctx),
        Api::Logout(id) => {
            ctx.sh.mutate(|c| c.logout(&id));
            json_resp(200, json!({}))
        }
        Api::ValidSession(id) => {
            let ttl = ctx.sh.ttl_secs();
            let valid = ctx.sh.read(|c| c.session_account(&id, ttl).is_some());
            json_resp(200, json!({ "valid": valid }))
        }
        Api::GetVersion => match ctx.body_json() {
            Ok(b) if b.get("getVersion").is_some() => json_resp(200, json!({"version": "5.1.0"})),
            Ok(_) => text(400, "the body doesn't contain action mapping"),
            Err(r) => r,
        },
        Api::JobQuery(id) => job_query(ctx, &id),
        Api::Query(kind, id) => run_query(ctx, kind, id),
        Api::CandidatePci(vm) => match ctx.auth_sync() {
            Err(r) => r,
            Ok(_) => match ctx.sh.read(|c| c.candidate_pci(&vm)) {
                Ok(list) => json_resp(200, json!({ "inventories": list })),
                Err(e) => api_error(&e),
            },
        },
        Api::FreeIps(l3) => free_ips(ctx, &l3),
        Api::RenewSession(id) => renew_session(ctx, id),
        Api::CreateVm => create_vm(ctx),
        Api::VmAction(vm) => vm_action(ctx, vm),
        Api::DestroyVm(vm) => destroy_vm(ctx, vm),
        Api::PciAttach(dev) | Api::PciDetach(dev) => {
            let attach = ctx.path.ends_with("/attach");
            pci_attach_detach(ctx, dev, attach)
        }
        Api::PciSpecToVm(spec, vm) => pci_spec_to_vm(ctx, spec, vm),
        Api::MdevAttach(dev, vm) => mdev(ctx, dev, vm, true),
        Api::MdevDetach(dev, vm) => mdev(ctx, dev, vm, false),
        Api::CreateTag(type_) => create_tag(ctx, type_),
        Api::DeleteTag(id) => submit(ctx, "DeleteTag", |_| {
            Ok(Prepared::new(None, move |c| {
                let v = c.delete_tag(&id);
                Ok(done(v))
            }))
        }),
        Api::AddImage => add_image(ctx),
        Api::DeleteImage(id) => submit(ctx, "DeleteImage", |_| {
            if let Some(m) = ctx.param("deleteMode") {
                if m != "Permissive" && m != "Enforcing" {
                    return Ok(Prepared::failed(ErrorCode::invalid_argument(format!(
                        "deleteMode[{m}] is not one of [Permissive, Enforcing]"
                    ))));
                }
            }
            Ok(Prepared::new(None, move |c| Ok(done(c.delete_image(&id)))))
        }),
        Api::ImageAction(id) => image_action(ctx, id),
    }
}

// ------------------------------------------------------------------- sync APIs

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

fn login(ctx: &Ctx) -> Response {
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

fn job_query(ctx: &Ctx, id: &str) -> Response {
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

fn run_query(ctx: &Ctx, kind: Kind, id: Option<String>) -> Response {
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

fn free_ips(ctx: &Ctx, l3: &str) -> Response {
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

// ------------------------------------------------------------------- async jobs

type Finish = Box<dyn FnOnce(&mut CloudState) -> Result<Value, ErrorCode> + Send>;
type Begin = Box<dyn FnOnce(&mut CloudState) -> Result<Finish, ErrorCode> + Send>;

/// What an async API will do: optionally serialized on a VM, then begin → delay → finish.
struct Prepared {
    lock: Option<String>,
    work: Result<Begin, ErrorCode>,
}

impl Prepared {
    fn new(
        lock: Option<String>,
        begin: impl FnOnce(&mut CloudState) -> Result<Finish, ErrorCode> + Send + 'static,
    ) -> Self {
        Prepared {
            lock,
            work: Ok(Box::new(begin)),
        }
    }
    fn failed(e: ErrorCode) -> Self {
        Prepared {
            lock: None,
            work: Err(e),
        }
    }
}

/// A finish step that just returns a value computed at begin.
fn done(v: Value) -> Finish {
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
fn submit(
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

// ------------------------------------------------------------------- async APIs

/// `systemTags`/`userTags`: top-level ones override those inside `params`.
fn tags_of(body: &Value, params: &Value, key: &str) -> Vec<String> {
    let pick = |v: Option<&Value>| {
        v.and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    };
    pick(body.get(key))
        .or_else(|| pick(params.get(key)))
        .unwrap_or_default()
}

fn params_of(body: &Value) -> Value {
    match body.get("params") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({}),
    }
}

fn create_vm(ctx: &Ctx) -> Response {
    submit(ctx, "CreateVmInstance", |body| {
        let mut params = params_of(body);
        let sys = tags_of(body, &params, "systemTags");
        let user = tags_of(body, &params, "userTags");
        if let Some(o) = params.as_object_mut() {
            o.remove("systemTags");
            o.remove("userTags");
        }
        let mut p: CreateVmParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Prepared::failed(ErrorCode::invalid_argument(format!(
                    "invalid parameters of APICreateVmInstanceMsg: {e}"
                ))))
            }
        };
        p.system_tags = sys;
        p.user_tags = user;
        // The VM's uuid is known up front so that actions on it queue behind its creation.
        let uuid = p
            .resource_uuid
            .clone()
            .unwrap_or_else(crate::cloud::new_uuid);
        p.resource_uuid = Some(uuid.clone());
        let strategy = p.strategy.clone().unwrap_or_else(|| "InstantStart".into());
        Ok(Prepared::new(Some(uuid), move |c| {
            let u = c.create_vm_begin(&p)?;
            Ok(Box::new(move |c: &mut CloudState| c.create_vm_finish(&u, &strategy)) as Finish)
        }))
    })
}

const VM_ACTIONS: &[&str] = &[
    "startVmInstance",
    "stopVmInstance",
    "rebootVmInstance",
    "recoverVmInstance",
    "expungeVmInstance",
    "updateVmInstance",
];

fn action_key(body: &Value, known: &[&str]) -> Option<(String, Value)> {
    let obj = body.as_object()?;
    obj.iter()
        .find(|(k, _)| known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), if v.is_object() { v.clone() } else { json!({}) }))
}

fn vm_action(ctx: &Ctx, vm: String) -> Response {
    let pre = ctx
        .body_json()
        .ok()
        .and_then(|b| action_key(&b, VM_ACTIONS));
    let api = match pre.as_ref().map(|(k, _)| k.as_str()) {
        Some("startVmInstance") => "StartVmInstance",
        Some("stopVmInstance") => "StopVmInstance",
        Some("rebootVmInstance") => "RebootVmInstance",
        Some("recoverVmInstance") => "RecoverVmInstance",
        Some("expungeVmInstance") => "ExpungeVmInstance",
        Some(_) => "UpdateVmInstance",
        None => "VmInstanceAction",
    };
    submit(ctx, api, |body| {
        let Some((key, params)) = action_key(body, VM_ACTIONS) else {
            return Err(text(400, "the body doesn't contain action mapping"));
        };
        lock(&ctx.sh.stats).record_action(&key);
        let u = vm.clone();
        let begin: Begin = match key.as_str() {
            "startVmInstance" => Box::new(move |c| {
                let started = c.start_begin(&u, &params)?;
                Ok(Box::new(move |c: &mut CloudState| {
                    if started {
                        c.start_finish(&u)
                    } else {
                        c.vm_result(&u)
                    }
                }) as Finish)
            }),
            "stopVmInstance" => Box::new(move |c| {
                let stopping = c.stop_begin(&u, &params)?;
                Ok(Box::new(move |c: &mut CloudState| {
                    if stopping {
                        c.stop_finish(&u)
                    } else {
                        c.vm_result(&u)
                    }
                }) as Finish)
            }),
            "rebootVmInstance" => Box::new(move |c| {
                c.reboot_begin(&u)?;
                Ok(Box::new(move |c: &mut CloudState| c.reboot_finish(&u)) as Finish)
            }),
            "recoverVmInstance" => Box::new(move |c| {
                c.recover_begin(&u)?;
                Ok(Box::new(move |c: &mut CloudState| c.recover_finish(&u)) as Finish)
            }),
            "expungeVmInstance" => Box::new(move |c| {
                c.expunge_begin(&u)?;
                Ok(Box::new(move |c: &mut CloudState| Ok(c.expunge_finish(&u))) as Finish)
            }),
            _ => Box::new(move |c| {
                let v = c.update_vm(&u, &params)?;
                Ok(done(v))
            }),
        };
        Ok(Prepared {
            lock: Some(vm.clone()),
            work: Ok(begin),
        })
    })
}

fn destroy_vm(ctx: &Ctx, vm: String) -> Response {
    submit(ctx, "DestroyVmInstance", |_| {
        if let Some(m) = ctx.param("deleteMode") {
            if m != "Permissive" && m != "Enforcing" {
                return Ok(Prepared::failed(ErrorCode::invalid_argument(format!(
                    "deleteMode[{m}] is not one of [Permissive, Enforcing]"
                ))));
            }
        }
        let u = vm.clone();
        Ok(Prepared::new(Some(vm.clone()), move |c| {
            let destroying = c.destroy_begin(&u)?;
            Ok(Box::new(move |c: &mut CloudState| {
                Ok(if destroying {
                    c.destroy_finish(&u)
                } else {
                    json!({})
                })
            }) as Finish)
        }))
    })
}

fn renew_session(ctx: &Ctx, id: String) -> Response {
    submit(ctx, "RenewSession", |body| {
        let duration = body
            .get("renewSession")
            .and_then(|r| r.get("duration"))
            .and_then(Value::as_u64);
        let ttl = ctx.sh.ttl_secs();
        Ok(Prepared::new(None, move |c| {
            let v = c.renew(&id, duration, ttl)?;
            Ok(done(v))
        }))
    })
}

fn pci_attach_detach(ctx: &Ctx, dev: String, attach: bool) -> Response {
    let api = if attach {
        "AttachPciDeviceToVm"
    } else {
        "DetachPciDeviceFromVm"
    };
    submit(ctx, api, |body| {
        let params = params_of(body);
        let Some(vm) = params
            .get("vmInstanceUuid")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Ok(Prepared::failed(ErrorCode::invalid_argument(
                "field[vmInstanceUuid] is mandatory",
            )));
        };
        let lock_key = vm.clone();
        Ok(Prepared::new(Some(lock_key), move |c| {
            if attach {
                c.attach_pci(&dev, &vm)?;
            } else {
                c.detach_pci(&dev, &vm)?;
            }
            Ok(Box::new(move |c: &mut CloudState| c.pci_result(&dev)) as Finish)
        }))
    })
}

fn pci_spec_to_vm(ctx: &Ctx, spec: String, vm: String) -> Response {
    submit(ctx, "AddPciDeviceSpecToVmInstance", |body| {
        let n = params_of(body)
            .get("pciDeviceNumber")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let u = vm.clone();
        Ok(Prepared::new(Some(vm.clone()), move |c| {
            let v = c.add_pci_spec(&spec, &u, n)?;
            Ok(done(v))
        }))
    })
}

fn mdev(ctx: &Ctx, dev: String, vm: String, attach: bool) -> Response {
    let api = if attach {
        "AttachMdevDeviceToVm"
    } else {
        "DetachMdevDeviceFromVm"
    };
    submit(ctx, api, |_| {
        let u = vm.clone();
        Ok(Prepared::new(Some(vm.clone()), move |c| {
            let v = if attach {
                c.attach_mdev(&dev, &u)?
            } else {
                c.detach_mdev(&dev, &u)?
            };
            Ok(done(v))
        }))
    })
}

fn create_tag(ctx: &Ctx, type_: &'static str) -> Response {
    let api = if type_ == "User" {
        "CreateUserTag"
    } else {
        "CreateSystemTag"
    };
    submit(ctx, api, |body| {
        let params = params_of(body);
        Ok(Prepared::new(None, move |c| {
            let v = c.create_tag(&params, type_)?;
            Ok(done(v))
        }))
    })
}

fn add_image(ctx: &Ctx) -> Response {
    submit(ctx, "AddImage", |body| {
        let mut params = params_of(body);
        let sys = tags_of(body, &params, "systemTags");
        let user = tags_of(body, &params, "userTags");
        if let Some(o) = params.as_object_mut() {
            o.remove("systemTags");
            o.remove("userTags");
        }
        let mut p: AddImageParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Prepared::failed(ErrorCode::invalid_argument(format!(
                    "invalid parameters of APIAddImageMsg: {e}"
                ))))
            }
        };
        p.system_tags = sys;
        p.user_tags = user;
        Ok(Prepared::new(None, move |c| {
            let u = c.add_image_begin(&p)?;
            Ok(Box::new(move |c: &mut CloudState| c.add_image_finish(&u)) as Finish)
        }))
    })
}

fn image_action(ctx: &Ctx, id: String) -> Response {
    submit(ctx, "ImageAction", |body| {
        let Some((key, _)) = action_key(body, &["expungeImage", "recoverImage"]) else {
            return Err(text(400, "the body doesn't contain action mapping"));
        };
        lock(&ctx.sh.stats).record_action(&key);
        Ok(Prepared::new(None, move |c| {
            let v = c.image_action(&id, &key)?;
            Ok(done(v))
        }))
    })
}

// ------------------------------------------------------------------- /_sim control API

async fn post_faults(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(400, format!("invalid JSON: {e}")),
    };
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    let mut rules = Vec::new();
    for item in items {
        match serde_json::from_value::<FaultRule>(item) {
            Ok(r) => rules.push(r),
            Err(e) => return text(400, format!("invalid fault rule: {e}")),
        }
    }
    let mut ids = Vec::new();
    for r in rules {
        match sh.add_fault(r) {
            Ok(id) => ids.push(id),
            Err(e) => return text(400, e.to_string()),
        }
    }
    json_resp(200, json!({ "ids": ids }))
}

async fn list_faults(State(sh): State<Arc<Shared>>) -> Response {
    let f = lock(&sh.faults);
    json_resp(
        200,
        json!({
            "rules": f.rules,
            "ttlOverrideSecs": f.ttl_override,
            "clockSkewSecs": f.clock_skew_secs,
        }),
    )
}

async fn reset_faults(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).reset();
    json_resp(200, json!({}))
}

async fn fault_log(State(sh): State<Arc<Shared>>) -> Response {
    let log = lock(&sh.faults).log.clone();
    json_resp(200, serde_json::to_value(log).unwrap_or(Value::Null))
}

async fn clear_fault_log(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).clear_log();
    json_resp(200, json!({}))
}

async fn get_stats(State(sh): State<Arc<Shared>>) -> Response {
    let s = lock(&sh.stats).clone();
    json_resp(200, serde_json::to_value(s).unwrap_or(Value::Null))
}

async fn reset_stats(State(sh): State<Arc<Shared>>) -> Response {
    *lock(&sh.stats) = Default::default();
    json_resp(200, json!({}))
}

async fn expire_sessions(State(sh): State<Arc<Shared>>) -> Response {
    sh.apply_immediate(&crate::faults::FaultAction::ExpireSessions);
    json_resp(200, json!({}))
}

async fn session_ttl(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return text(400, format!("invalid JSON: {e}")),
    };
    let ttl = match v.get("ttl_secs") {
        None | Some(Value::Null) => None,
        Some(x) => match x.as_u64() {
            Some(n) => Some(n),
            None => return text(400, "ttl_secs must be a non-negative integer or null"),
        },
    };
    sh.apply_immediate(&crate::faults::FaultAction::SessionTtl { ttl_secs: ttl });
    json_resp(200, json!({ "ttl_secs": ttl }))
}

async fn dump_state(State(sh): State<Arc<Shared>>) -> Response {
    let v = sh.read(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    json_resp(200, v)
}

/// SHA-512 hex of a password, for clients written against this crate (the login body format).
pub fn password_hash(plain: &str) -> String {
    sha512_hex(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_templates() {
        let r = |m: Method, p: &str| route(&m, p).map(|(_, t)| t);
        assert_eq!(
            r(Method::GET, "/vm-instances/nics").ok().as_deref(),
            Some("/zstack/v1/vm-instances/nics")
        );
        assert_eq!(
            r(Method::GET, "/vm-instances/0123").ok().as_deref(),
            Some("/zstack/v1/vm-instances/{uuid}")
        );
        assert_eq!(
            r(Method::GET, "/pci-device/pci-devices/abc")
                .ok()
                .as_deref(),
            Some("/zstack/v1/pci-device/pci-devices/{uuid}")
        );
        assert!(matches!(
            route(&Method::GET, "/pci-devices"),
            Err(RouteErr::NotFound)
        ));
        assert!(matches!(
            route(&Method::POST, "/api-jobs/x"),
            Err(RouteErr::Method)
        ));
        assert!(matches!(
            route(&Method::GET, "/l3-networks/ip-ranges").map(|(a, _)| a),
            Ok(Api::Query(Kind::IpRange, None))
        ));
        assert!(crate::inventory::is_hex32(&crate::cloud::new_uuid()));
    }
}

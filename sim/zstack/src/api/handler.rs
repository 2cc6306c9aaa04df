//! The `/zstack/v1` entry point: stats, request-level faults, then dispatch to the API.

use super::async_calls::{
    add_image, check_delete_mode, create_tag, create_vm, destroy_vm, image_action, mdev,
    pci_attach_detach, pci_spec_to_vm, renew_session, vm_action,
};
use super::context::Ctx;
use super::jobs::{done, submit, Prepared};
use super::lb_calls;
use super::response::{api_error, json_resp, text};
use super::routing::{route, Api, RouteErr};
use super::sync_calls::{free_ips, job_query, login, run_query};
use crate::faults::FaultResponse;
use crate::sim::{lock, DropConnection, Shared};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

/// Every `/zstack/v1` request: counts it, applies the request-level faults (latency, hang,
/// canned reply, dropped connection) and otherwise routes and dispatches it.
pub(super) async fn zstack(State(sh): State<Arc<Shared>>, req: Request) -> Response {
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
            if let Err(e) = check_delete_mode(ctx) {
                return Ok(Prepared::failed(e));
            }
            Ok(Prepared::new(None, move |c| Ok(done(c.delete_image(&id)))))
        }),
        Api::ImageAction(id) => image_action(ctx, id),
        Api::CreateVip => lb_calls::create_vip(ctx),
        Api::DeleteVip(id) => lb_calls::delete_vip(ctx, id),
        Api::CreateLoadBalancer => lb_calls::create_load_balancer(ctx),
        Api::DeleteLoadBalancer(id) => lb_calls::delete_load_balancer(ctx, id),
        Api::CreateListener(lb) => lb_calls::create_listener(ctx, lb),
        Api::DeleteListener(id) => lb_calls::delete_listener(ctx, id),
        Api::AddVmNics(l) => lb_calls::add_vm_nics(ctx, l),
        Api::RemoveVmNics(l) => lb_calls::remove_vm_nics(ctx, l),
    }
}

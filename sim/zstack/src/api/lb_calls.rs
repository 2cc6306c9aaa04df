//! The VIP and load-balancer APIs (§8): every one is async, and runs its whole effect when the
//! job starts (validation errors fail the job, as interceptor errors do for VM creates).

use super::async_calls::{check_delete_mode, params_of, parse_params};
use super::context::Ctx;
use super::jobs::{done, submit, Prepared};
use crate::cloud::{CloudState, CreateListenerParams, CreateLoadBalancerParams, CreateVipParams};
use crate::error::ErrorCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

/// A job that runs `op` when it starts and answers its value.
fn run(op: impl FnOnce(&mut CloudState) -> Result<Value, ErrorCode> + Send + 'static) -> Prepared {
    Prepared::new(None, move |c| Ok(done(op(c)?)))
}

/// `POST vips` (`CreateVip`) → `{"inventory": VipInventory}`.
pub(super) fn create_vip(ctx: &Ctx) -> Response {
    submit(ctx, "CreateVip", |body| {
        let (mut p, sys, user): (CreateVipParams, _, _) =
            match parse_params(body, "APICreateVipMsg") {
                Ok(x) => x,
                Err(e) => return Ok(Prepared::failed(e)),
            };
        p.system_tags = sys;
        p.user_tags = user;
        Ok(run(move |c| {
            let u = c.create_vip(&p)?;
            c.vip_result(&u)
        }))
    })
}

/// `DELETE vips/{uuid}?deleteMode=` (`DeleteVip`) → `{}`; cascades to its load balancers.
pub(super) fn delete_vip(ctx: &Ctx, uuid: String) -> Response {
    submit(ctx, "DeleteVip", |_| {
        if let Err(e) = check_delete_mode(ctx) {
            return Ok(Prepared::failed(e));
        }
        Ok(run(move |c| c.delete_vip(&uuid)))
    })
}

/// `POST load-balancers` (`CreateLoadBalancer`) → `{"inventory": LoadBalancerInventory}`.
pub(super) fn create_load_balancer(ctx: &Ctx) -> Response {
    submit(ctx, "CreateLoadBalancer", |body| {
        let (mut p, sys, user): (CreateLoadBalancerParams, _, _) =
            match parse_params(body, "APICreateLoadBalancerMsg") {
                Ok(x) => x,
                Err(e) => return Ok(Prepared::failed(e)),
            };
        p.system_tags = sys;
        p.user_tags = user;
        Ok(run(move |c| {
            let u = c.create_load_balancer(&p)?;
            c.lb_result(&u)
        }))
    })
}

/// `DELETE load-balancers/{uuid}?deleteMode=` (`DeleteLoadBalancer`) → `{}`; deletes its
/// listeners and releases (keeps) its VIP.
pub(super) fn delete_load_balancer(ctx: &Ctx, uuid: String) -> Response {
    submit(ctx, "DeleteLoadBalancer", |_| {
        if let Err(e) = check_delete_mode(ctx) {
            return Ok(Prepared::failed(e));
        }
        Ok(run(move |c| c.delete_load_balancer(&uuid)))
    })
}

/// `POST load-balancers/{uuid}/listeners` (`CreateLoadBalancerListener`) →
/// `{"inventory": LoadBalancerListenerInventory}`.
pub(super) fn create_listener(ctx: &Ctx, lb: String) -> Response {
    submit(ctx, "CreateLoadBalancerListener", |body| {
        let (mut p, sys, user): (CreateListenerParams, _, _) =
            match parse_params(body, "APICreateLoadBalancerListenerMsg") {
                Ok(x) => x,
                Err(e) => return Ok(Prepared::failed(e)),
            };
        p.system_tags = sys;
        p.user_tags = user;
        Ok(run(move |c| {
            let u = c.create_listener(&lb, &p)?;
            c.listener_result(&u)
        }))
    })
}

/// `DELETE load-balancers/listeners/{uuid}` (`DeleteLoadBalancerListener`) →
/// `{"inventory": <the parent LoadBalancerInventory>}` (`{}` when it did not exist).
pub(super) fn delete_listener(ctx: &Ctx, uuid: String) -> Response {
    submit(ctx, "DeleteLoadBalancerListener", |_| {
        Ok(run(move |c| c.delete_listener(&uuid)))
    })
}

/// The `params` of `AddVmNicToLoadBalancer`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NicsParams {
    vm_nic_uuids: Option<Vec<String>>,
}

/// `POST load-balancers/listeners/{uuid}/vm-instances/nics` (`AddVmNicToLoadBalancer`) →
/// `{"inventory": LoadBalancerListenerInventory}`.
pub(super) fn add_vm_nics(ctx: &Ctx, listener: String) -> Response {
    submit(ctx, "AddVmNicToLoadBalancer", |body| {
        let p: NicsParams = match serde_json::from_value(params_of(body)) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Prepared::failed(ErrorCode::invalid_argument(format!(
                    "invalid parameters of APIAddVmNicToLoadBalancerMsg: {e}"
                ))))
            }
        };
        Ok(run(move |c| {
            c.add_vm_nics(&listener, p.vm_nic_uuids.as_deref())
        }))
    })
}

/// `DELETE load-balancers/listeners/{uuid}/vm-instances/nics?vmNicUuids=a&vmNicUuids=b`
/// (`RemoveVmNicFromLoadBalancer`) → `{"inventory": LoadBalancerInventory}`.
pub(super) fn remove_vm_nics(ctx: &Ctx, listener: String) -> Response {
    submit(ctx, "RemoveVmNicFromLoadBalancer", |_| {
        let nics: Vec<String> = ctx
            .params
            .iter()
            .filter(|(k, _)| k == "vmNicUuids")
            .map(|(_, v)| v.clone())
            .collect();
        let nics = (!nics.is_empty()).then_some(nics);
        Ok(run(move |c| c.remove_vm_nics(&listener, nics.as_deref())))
    })
}

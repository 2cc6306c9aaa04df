//! APIs answered with a job: VM create and actions, devices, tags, images, session renewal.

use super::context::Ctx;
use super::jobs::{done, submit, Begin, Finish, Prepared};
use super::response::text;
use crate::cloud::{AddImageParams, CloudState, CreateVmParams};
use crate::error::ErrorCode;
use crate::sim::lock;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// `systemTags`/`userTags`: top-level ones override those inside `params`.
pub(super) fn tags_of(body: &Value, params: &Value, key: &str) -> Vec<String> {
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

/// The body's `params` object (`{}` when absent or not an object).
pub(super) fn params_of(body: &Value) -> Value {
    match body.get("params") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({}),
    }
}

/// A call's `params` parsed into `T` (a malformed one is SYS.1007 naming `msg`), with the
/// `systemTags` and `userTags` (top-level ones first) taken out: `(params, system, user)`.
pub(super) fn parse_params<T: DeserializeOwned>(
    body: &Value,
    msg: &str,
) -> Result<(T, Vec<String>, Vec<String>), ErrorCode> {
    let mut params = params_of(body);
    let sys = tags_of(body, &params, "systemTags");
    let user = tags_of(body, &params, "userTags");
    if let Some(o) = params.as_object_mut() {
        o.remove("systemTags");
        o.remove("userTags");
    }
    let p = serde_json::from_value(params)
        .map_err(|e| ErrorCode::invalid_argument(format!("invalid parameters of {msg}: {e}")))?;
    Ok((p, sys, user))
}

/// `deleteMode` of a delete call: absent, `Permissive` or `Enforcing`, else SYS.1007.
pub(super) fn check_delete_mode(ctx: &Ctx) -> Result<(), ErrorCode> {
    match ctx.param("deleteMode") {
        Some(m) if m != "Permissive" && m != "Enforcing" => Err(ErrorCode::invalid_argument(
            format!("deleteMode[{m}] is not one of [Permissive, Enforcing]"),
        )),
        _ => Ok(()),
    }
}

/// `POST vm-instances` (`CreateVmInstance`), serialized on the new VM's uuid.
pub(super) fn create_vm(ctx: &Ctx) -> Response {
    submit(ctx, "CreateVmInstance", |body| {
        let (mut p, sys, user): (CreateVmParams, _, _) =
            match parse_params(body, "APICreateVmInstanceMsg") {
                Ok(x) => x,
                Err(e) => return Ok(Prepared::failed(e)),
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

/// `PUT vm-instances/{uuid}/actions`: start, stop, reboot, recover, expunge or update, by the
/// body's action key.
pub(super) fn vm_action(ctx: &Ctx, vm: String) -> Response {
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

/// `DELETE vm-instances/{uuid}` (`DestroyVmInstance`).
pub(super) fn destroy_vm(ctx: &Ctx, vm: String) -> Response {
    submit(ctx, "DestroyVmInstance", |_| {
        if let Err(e) = check_delete_mode(ctx) {
            return Ok(Prepared::failed(e));
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

/// `PUT accounts/sessions/{uuid}/renew`, answered with a job as the MN does.
pub(super) fn renew_session(ctx: &Ctx, id: String) -> Response {
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

/// `POST pci-device/pci-devices/{uuid}/attach` and `.../detach`.
pub(super) fn pci_attach_detach(ctx: &Ctx, dev: String, attach: bool) -> Response {
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

/// `POST pci-device-specs/{specUuid}/vm-instances/{vmUuid}`: claims devices of a spec.
pub(super) fn pci_spec_to_vm(ctx: &Ctx, spec: String, vm: String) -> Response {
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

/// `POST` / `DELETE mdev-devices/{uuid}/vm-instances/{vmUuid}`: attach or detach a vGPU slice.
pub(super) fn mdev(ctx: &Ctx, dev: String, vm: String, attach: bool) -> Response {
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

/// `POST user-tags` / `system-tags`.
pub(super) fn create_tag(ctx: &Ctx, type_: &'static str) -> Response {
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

/// `POST images` (`AddImage`).
pub(super) fn add_image(ctx: &Ctx) -> Response {
    submit(ctx, "AddImage", |body| {
        let (mut p, sys, user): (AddImageParams, _, _) = match parse_params(body, "APIAddImageMsg")
        {
            Ok(x) => x,
            Err(e) => return Ok(Prepared::failed(e)),
        };
        p.system_tags = sys;
        p.user_tags = user;
        Ok(Prepared::new(None, move |c| {
            let u = c.add_image_begin(&p)?;
            Ok(Box::new(move |c: &mut CloudState| c.add_image_finish(&u)) as Finish)
        }))
    })
}

/// `PUT images/{uuid}/actions`: `expungeImage` or `recoverImage`.
pub(super) fn image_action(ctx: &Ctx, id: String) -> Response {
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

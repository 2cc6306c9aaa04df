//! Mapping method + path under `/zstack/v1` to an [`Api`] and the path template stats count.

use crate::query::{Kind, QUERY_PATHS};
use axum::http::Method;

/// Every API the simulator maps.
#[derive(Debug, Clone)]
pub(super) enum Api {
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
    CreateVip,
    DeleteVip(String),
    CreateLoadBalancer,
    DeleteLoadBalancer(String),
    CreateListener(String),
    DeleteListener(String),
    AddVmNics(String),
    RemoveVmNics(String),
}

/// Why a request maps to no API: unknown path (404) or known path, wrong method (405).
pub(super) enum RouteErr {
    NotFound,
    Method,
}

/// Maps method + path (after `/zstack/v1`) to an API and its stats template.
pub(super) fn route(method: &Method, rest: &str) -> Result<(Api, String), RouteErr> {
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
        ["vips"] if m == "POST" => Ok((Api::CreateVip, "/zstack/v1/vips".into())),
        ["vips", id] if m == "DELETE" => {
            Ok((Api::DeleteVip(owned(id)), "/zstack/v1/vips/{uuid}".into()))
        }
        ["load-balancers"] if m == "POST" => {
            Ok((Api::CreateLoadBalancer, "/zstack/v1/load-balancers".into()))
        }
        // `load-balancers/listeners...` is never a load balancer named "listeners".
        ["load-balancers", "listeners", id] if m == "DELETE" => Ok((
            Api::DeleteListener(owned(id)),
            "/zstack/v1/load-balancers/listeners/{uuid}".into(),
        )),
        ["load-balancers", "listeners", id, "vm-instances", "nics"] => match m {
            "POST" => Ok((
                Api::AddVmNics(owned(id)),
                "/zstack/v1/load-balancers/listeners/{uuid}/vm-instances/nics".into(),
            )),
            "DELETE" => Ok((
                Api::RemoveVmNics(owned(id)),
                "/zstack/v1/load-balancers/listeners/{uuid}/vm-instances/nics".into(),
            )),
            _ => Err(RouteErr::Method),
        },
        ["load-balancers", id] if *id != "listeners" && m == "DELETE" => Ok((
            Api::DeleteLoadBalancer(owned(id)),
            "/zstack/v1/load-balancers/{uuid}".into(),
        )),
        ["load-balancers", id, "listeners"] if *id != "listeners" => one(
            "POST",
            Api::CreateListener(owned(id)),
            "load-balancers/{uuid}/listeners",
        ),
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

//! Routing, and the handlers for `/version`, the health checks, Nodes (list, get, merge and
//! strategic-merge patch, delete), Pods (list, get, delete), the eviction subresource and
//! PodDisruptionBudgets (status computed live). Secrets are in `secrets`, port-forward in
//! `portforward`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use k8s_openapi::apimachinery::pkg::version::Info;
use k8s_openapi::{List, ListableResource};
use serde_json::Value;

use super::objects::{self as o, K8S_VERSION};
use super::secrets;
use super::select::{merge_patch, param, params, selects, Fields, Labels};
use super::server::Shared;
use super::status::{self as st, Reply};

/// Serve one request (everything but port-forward).
pub(crate) fn route(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let params = params(query);
    if matches!(param(&params, "watch"), Some("true" | "1")) {
        return st::bad_request("the kube_api stand-in does not serve watches");
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == "GET";
    match segs.as_slice() {
        ["version"] if get => Reply::ok(&version()),
        ["readyz" | "livez" | "healthz"] if get => Reply::text("ok"),
        ["version" | "readyz" | "livez" | "healthz"] => st::method_not_allowed(method),
        ["api", "v1", "nodes"] if get => list_nodes(shared, &params),
        ["api", "v1", "nodes", name] => match method {
            "GET" => shared.read(|s| match s.nodes.get(*name) {
                Some(n) => Reply::ok(n),
                None => st::not_found("nodes", name),
            }),
            "PATCH" => patch_node(shared, name, content_type, body),
            "DELETE" => match shared.mutate(|s| s.delete_node(name)) {
                Some(n) => st::success(200, Some(("nodes", name, &uid(&n.metadata.uid)))),
                None => st::not_found("nodes", name),
            },
            _ => st::method_not_allowed(method),
        },
        ["api", "v1", "pods"] if get => list_pods(shared, None, &params),
        ["api", "v1", "namespaces", ns, "pods"] if get => list_pods(shared, Some(ns), &params),
        ["api", "v1", "namespaces", ns, "pods", name] => {
            let key = (ns.to_string(), name.to_string());
            match method {
                "GET" => shared.read(|s| match s.pods.get(&key) {
                    Some(p) => Reply::ok(p),
                    None => st::not_found("pods", name),
                }),
                "DELETE" => match shared.mutate(|s| s.delete_pod(&key)) {
                    Some(p) => Reply::ok(&p),
                    None => st::not_found("pods", name),
                },
                _ => st::method_not_allowed(method),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name, "eviction"] if method == "POST" => {
            evict(shared, ns, name, body)
        }
        ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
            secrets::route(shared, method, Some(ns), rest, &params, content_type, body)
        }
        ["api", "v1", "secrets"] => secrets::route(shared, method, None, &[], &params, "", body),
        ["apis", "policy", "v1", "poddisruptionbudgets"] if get => list_pdbs(shared, None, &params),
        ["apis", "policy", "v1", "namespaces", ns, "poddisruptionbudgets"] if get => {
            list_pdbs(shared, Some(ns), &params)
        }
        ["apis", "policy", "v1", "namespaces", ns, "poddisruptionbudgets", name] if get => shared
            .read(|s| match s.pdbs.get(&(ns.to_string(), name.to_string())) {
                Some(p) => Reply::ok(&with_status(s, p)),
                None => st::not_found("policy/poddisruptionbudgets", name),
            }),
        ["api", "v1", "nodes", ..]
        | ["api", "v1", "pods"]
        | ["api", "v1", "namespaces", _, "pods", ..]
        | ["apis", "policy", "v1", ..] => st::method_not_allowed(method),
        _ => st::no_route(),
    }
}

fn uid(u: &Option<String>) -> String {
    u.clone().unwrap_or_default()
}

fn version() -> Info {
    Info {
        major: "1".into(),
        minor: "33".into(),
        emulation_major: Some("1".into()),
        emulation_minor: Some("33".into()),
        min_compatibility_major: Some("1".into()),
        min_compatibility_minor: Some("32".into()),
        git_version: K8S_VERSION.into(),
        git_commit: "60a317eadfcb839692a68eab88b2096f4d708f4f".into(),
        git_tree_state: "clean".into(),
        build_date: "2025-04-23T13:06:30Z".into(),
        go_version: "go1.24.2".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
    }
}

/// A `List` of `items` at resourceVersion `rv`.
pub(crate) fn list<T: ListableResource + serde::Serialize>(items: Vec<T>, rv: String) -> Reply {
    Reply::ok(&List {
        items,
        metadata: ListMeta {
            resource_version: Some(rv),
            ..ListMeta::default()
        },
    })
}

/// Parse `labelSelector` and `fieldSelector` (the fields `supported`); `Err` is the `400`.
pub(crate) fn selectors(
    params: &[(String, String)],
    supported: &[&str],
) -> Result<(Labels, Fields), Reply> {
    let labels =
        Labels::parse(param(params, "labelSelector").unwrap_or("")).map_err(st::bad_request)?;
    let fields = Fields::parse(param(params, "fieldSelector").unwrap_or(""), supported)
        .map_err(st::bad_request)?;
    Ok((labels, fields))
}

fn list_nodes(shared: &Shared, params: &[(String, String)]) -> Reply {
    let (labels, fields) = match selectors(params, &["metadata.name", "spec.unschedulable"]) {
        Ok(s) => s,
        Err(r) => return r,
    };
    shared.read(|s| {
        let items = s
            .nodes
            .values()
            .filter(|n| labels.matches(n.metadata.labels.as_ref()))
            .filter(|n| {
                fields.matches(|f| match f {
                    "metadata.name" => uid(&n.metadata.name),
                    _ => o::cordoned(n).to_string(),
                })
            })
            .cloned()
            .collect();
        list::<Node>(items, s.rv())
    })
}

fn patch_node(shared: &Arc<Shared>, name: &str, content_type: &str, body: &[u8]) -> Reply {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        ct,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return st::error(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - the kube_api stand-in \
                 accepts application/merge-patch+json and application/strategic-merge-patch+json \
                 (got {ct:?})"
            ),
        );
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return st::bad_request("the patch is not a JSON object"),
    };
    if has_directive(&patch) {
        return st::bad_request(
            "strategic merge patch directives ($patch, $retainKeys, …) are not supported by the \
             kube_api stand-in",
        );
    }
    shared.mutate(|s| {
        let Some(node) = s.nodes.get(name) else {
            return st::not_found("nodes", name);
        };
        if let Some(rv) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if Some(rv) != node.metadata.resource_version.as_deref() {
                return st::conflict("nodes", name);
            }
        }
        let mut v = serde_json::to_value(node).expect("a Node serializes");
        merge_patch(&mut v, &patch);
        let mut new: Node = match serde_json::from_value(v) {
            Ok(n) => n,
            Err(e) => return st::invalid("Node", "nodes", name, "body", &e.to_string()),
        };
        new.metadata.name = node.metadata.name.clone();
        new.metadata.uid = node.metadata.uid.clone();
        new.metadata.creation_timestamp = node.metadata.creation_timestamp.clone();
        o::sync_unschedulable_taint(&mut new);
        s.stamp(&mut new.metadata);
        s.nodes.insert(name.to_string(), new.clone());
        Reply::ok(&new)
    })
}

/// Does a patch use strategic-merge-patch directives (keys starting with `$`)?
fn has_directive(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(a) => a.iter().any(has_directive),
        _ => false,
    }
}

fn list_pods(shared: &Shared, ns: Option<&str>, params: &[(String, String)]) -> Reply {
    let supported = [
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    ];
    let (labels, fields) = match selectors(params, &supported) {
        Ok(s) => s,
        Err(r) => return r,
    };
    shared.read(|s| {
        let items = s
            .pods
            .iter()
            .filter(|((pns, _), _)| ns.is_none_or(|ns| ns == pns))
            .map(|(_, p)| p)
            .filter(|p| labels.matches(p.metadata.labels.as_ref()))
            .filter(|p| fields.matches(|f| pod_field(p, f)))
            .cloned()
            .collect();
        list::<Pod>(items, s.rv())
    })
}

fn pod_field(p: &Pod, field: &str) -> String {
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    match field {
        "metadata.name" => uid(&p.metadata.name),
        "metadata.namespace" => uid(&p.metadata.namespace),
        "spec.nodeName" => uid(&spec.node_name),
        "spec.restartPolicy" => uid(&spec.restart_policy),
        "spec.schedulerName" => uid(&spec.scheduler_name),
        "spec.serviceAccountName" => uid(&spec.service_account_name),
        "status.phase" => uid(&status.phase),
        _ => uid(&status.pod_ip),
    }
}

fn evict(shared: &Arc<Shared>, ns: &str, name: &str, body: &[u8]) -> Reply {
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return st::bad_request("the body is not a JSON Eviction"),
    };
    let obj = v.as_object_mut().expect("object");
    obj.entry("apiVersion")
        .or_insert_with(|| "policy/v1".into());
    obj.entry("kind").or_insert_with(|| "Eviction".into());
    let eviction: Eviction = match serde_json::from_value(v) {
        Ok(e) => e,
        Err(e) => return st::bad_request(format!("not an Eviction: {e}")),
    };
    if eviction.metadata.name.as_deref().is_some_and(|n| n != name) {
        return st::bad_request("name in URL does not match name in Eviction object");
    }
    shared.mutate(|s| {
        let key = (ns.to_string(), name.to_string());
        let Some(pod) = s.pods.get(&key) else {
            return st::not_found("pods", name);
        };
        let pdbs: Vec<&PodDisruptionBudget> = s
            .pdbs
            .iter()
            .filter(|((pns, _), _)| pns == ns)
            .map(|(_, p)| p)
            .filter(|p| {
                let sel = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default();
                selects(&sel, pod.metadata.labels.as_ref())
            })
            .collect();
        if pdbs.len() > 1 {
            return st::error(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource \
                 does not support.",
            );
        }
        if let (Some(pdb), true) = (pdbs.first(), o::pod_ready(pod)) {
            let status = s.pdb_status(pdb);
            if status.disruptions_allowed <= 0 {
                let pdb_name = uid(&pdb.metadata.name);
                return st::disruption_budget(
                    &pdb_name,
                    status.desired_healthy,
                    status.current_healthy,
                );
            }
        }
        s.delete_pod(&key);
        st::success(201, None)
    })
}

fn with_status(s: &super::state::State, p: &PodDisruptionBudget) -> PodDisruptionBudget {
    let mut p = p.clone();
    p.status = Some(s.pdb_status(&p));
    p
}

fn list_pdbs(shared: &Shared, ns: Option<&str>, params: &[(String, String)]) -> Reply {
    let (labels, fields) = match selectors(params, &["metadata.name", "metadata.namespace"]) {
        Ok(s) => s,
        Err(r) => return r,
    };
    shared.read(|s| {
        let items = s
            .pdbs
            .iter()
            .filter(|((pns, _), _)| ns.is_none_or(|ns| ns == pns))
            .map(|(_, p)| p)
            .filter(|p| labels.matches(p.metadata.labels.as_ref()))
            .filter(|p| {
                fields.matches(|f| match f {
                    "metadata.name" => uid(&p.metadata.name),
                    _ => uid(&p.metadata.namespace),
                })
            })
            .map(|p| with_status(s, p))
            .collect();
        list::<PodDisruptionBudget>(items, s.rv())
    })
}

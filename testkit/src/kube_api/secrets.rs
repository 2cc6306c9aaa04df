//! Secrets: list (label and field selectors, `type=` included), create (`409 AlreadyExists`,
//! `generateName`), get, replace (`409 Conflict` on a stale resourceVersion), merge patch and
//! delete. `data` is base64 on the wire (k8s-openapi's `ByteString`); `stringData` written is
//! merged into `data` and never stored, as the real server does.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::Value;

use super::objects as o;
use super::routes::{list, selectors};
use super::select::merge_patch;
use super::server::Shared;
use super::state::State;
use super::status::{self as st, Reply};

/// Serve `/api/v1/namespaces/NS/secrets/REST…` (or `/api/v1/secrets` when `ns` is `None`).
pub(crate) fn route(
    shared: &Arc<Shared>,
    method: &str,
    ns: Option<&str>,
    rest: &[&str],
    params: &[(String, String)],
    content_type: &str,
    body: &[u8],
) -> Reply {
    match (method, ns, rest) {
        ("GET", _, []) => list_secrets(shared, ns, params),
        ("POST", Some(ns), []) => match parse(body) {
            Ok(s) => shared.mutate(|st| create(st, ns, s)),
            Err(r) => r,
        },
        (_, _, []) => st::method_not_allowed(method),
        (_, Some(ns), [name]) => {
            let key = (ns.to_string(), name.to_string());
            match method {
                "GET" => shared.read(|s| match s.secrets.get(&key) {
                    Some(x) => Reply::ok(x),
                    None => st::not_found("secrets", name),
                }),
                "PUT" => match parse(body) {
                    Ok(x) => shared.mutate(|s| replace(s, &key, x)),
                    Err(r) => r,
                },
                "PATCH" => patch(shared, &key, content_type, body),
                "DELETE" => match shared.mutate(|s| s.secrets.remove(&key)) {
                    Some(x) => st::success(200, Some(("secrets", name, &o_uid(&x)))),
                    None => st::not_found("secrets", name),
                },
                _ => st::method_not_allowed(method),
            }
        }
        _ => st::no_route(),
    }
}

fn o_uid(s: &Secret) -> String {
    s.metadata.uid.clone().unwrap_or_default()
}

fn list_secrets(shared: &Shared, ns: Option<&str>, params: &[(String, String)]) -> Reply {
    let (labels, fields) = match selectors(params, &["metadata.name", "metadata.namespace", "type"])
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    shared.read(|s| {
        let items = s
            .secrets
            .iter()
            .filter(|((sns, _), _)| ns.is_none_or(|ns| ns == sns))
            .map(|(_, x)| x)
            .filter(|x| labels.matches(x.metadata.labels.as_ref()))
            .filter(|x| {
                fields.matches(|f| {
                    match f {
                        "metadata.name" => x.metadata.name.clone(),
                        "metadata.namespace" => x.metadata.namespace.clone(),
                        _ => x.type_.clone(),
                    }
                    .unwrap_or_default()
                })
            })
            .cloned()
            .collect();
        list::<Secret>(items, s.rv())
    })
}

/// A Secret from a request body (`apiVersion`/`kind` may be left out).
fn parse(body: &[u8]) -> Result<Secret, Reply> {
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(st::bad_request("the body is not a JSON object")),
    };
    let obj = v.as_object_mut().expect("object");
    obj.entry("apiVersion").or_insert_with(|| "v1".into());
    obj.entry("kind").or_insert_with(|| "Secret".into());
    serde_json::from_value(v).map_err(|e| st::bad_request(format!("not a v1 Secret: {e}")))
}

/// A lowercase RFC 1123 subdomain?
fn dns_subdomain(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| ok(c) || c == '-' || c == '.')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// Merge `stringData` into `data`, default the type, and validate; `Err` is the `422`.
fn normalize(x: &mut Secret, name: &str) -> Result<(), Reply> {
    if let Some(sd) = x.string_data.take() {
        let data = x.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    x.type_.get_or_insert_with(|| "Opaque".into());
    let bad_key = x.data.iter().flatten().map(|(k, _)| k).find(|k| {
        k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    if let Some(k) = bad_key {
        let msg = format!(
            "Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, \
             '-', '_' or '.'"
        );
        return Err(st::invalid(
            "Secret",
            "secrets",
            name,
            &format!("data[{k}]"),
            &msg,
        ));
    }
    Ok(())
}

fn create(s: &mut State, ns: &str, mut x: Secret) -> Reply {
    if x.metadata.namespace.as_deref().is_some_and(|n| n != ns) {
        return st::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    if !s.namespaces.contains(ns) {
        return st::not_found("namespaces", ns);
    }
    let name = match (x.metadata.name.clone(), x.metadata.generate_name.clone()) {
        (Some(n), _) if !n.is_empty() => n,
        (_, Some(g)) if !g.is_empty() => format!("{g}{}", s.suffix(&g, 5)),
        _ => {
            return st::invalid(
                "Secret",
                "secrets",
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        }
    };
    if !dns_subdomain(&name) {
        let msg = format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
        return st::invalid("Secret", "secrets", &name, "metadata.name", &msg);
    }
    let key = (ns.to_string(), name.clone());
    if s.secrets.contains_key(&key) {
        return st::already_exists("secrets", &name);
    }
    if let Err(r) = normalize(&mut x, &name) {
        return r;
    }
    let fresh = o::meta(&name, Some(ns));
    x.metadata.name = fresh.name;
    x.metadata.namespace = fresh.namespace;
    x.metadata.uid = fresh.uid;
    x.metadata.creation_timestamp = fresh.creation_timestamp;
    x.metadata.resource_version = None;
    s.stamp(&mut x.metadata);
    s.secrets.insert(key, x.clone());
    Reply::json(201, &x)
}

/// Store `x` over the Secret at `key` (PUT, or the result of a patch).
fn replace(s: &mut State, key: &(String, String), mut x: Secret) -> Reply {
    let name = &key.1;
    if x.metadata.name.as_deref() != Some(name.as_str()) {
        return st::bad_request("the name of the object does not match the name on the URL");
    }
    if x.metadata.namespace.as_deref().is_some_and(|n| n != key.0) {
        return st::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let Some(old) = s.secrets.get(key) else {
        return st::not_found("secrets", name);
    };
    if x.metadata
        .resource_version
        .as_ref()
        .is_some_and(|rv| Some(rv) != old.metadata.resource_version.as_ref())
    {
        return st::conflict("secrets", name);
    }
    if let Err(r) = normalize(&mut x, name) {
        return r;
    }
    if x.type_ != old.type_ {
        let msg = format!(
            "Invalid value: {:?}: field is immutable",
            x.type_.clone().unwrap_or_default()
        );
        return st::invalid("Secret", "secrets", name, "type", &msg);
    }
    if old.immutable == Some(true) && (x.data != old.data || x.immutable != old.immutable) {
        return st::invalid(
            "Secret",
            "secrets",
            name,
            "data",
            "Forbidden: field is immutable when `immutable` is set",
        );
    }
    x.metadata.namespace = old.metadata.namespace.clone();
    x.metadata.uid = old.metadata.uid.clone();
    x.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
    s.stamp(&mut x.metadata);
    s.secrets.insert(key.clone(), x.clone());
    Reply::ok(&x)
}

fn patch(shared: &Arc<Shared>, key: &(String, String), content_type: &str, body: &[u8]) -> Reply {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        ct,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return st::error(
            415,
            "UnsupportedMediaType",
            format!("the kube_api stand-in patches Secrets with merge patches only (got {ct:?})"),
        );
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return st::bad_request("the patch is not a JSON object"),
    };
    shared.mutate(|s| {
        let Some(old) = s.secrets.get(key) else {
            return st::not_found("secrets", &key.1);
        };
        let mut v = serde_json::to_value(old).expect("a Secret serializes");
        // A patch without a resourceVersion applies to the current object.
        let rv = old.metadata.resource_version.clone();
        merge_patch(&mut v, &patch);
        let mut x: Secret = match serde_json::from_value(v) {
            Ok(x) => x,
            Err(e) => return st::invalid("Secret", "secrets", &key.1, "body", &e.to_string()),
        };
        if patch.pointer("/metadata/resourceVersion").is_none() {
            x.metadata.resource_version = rv;
        }
        replace(s, key, x)
    })
}

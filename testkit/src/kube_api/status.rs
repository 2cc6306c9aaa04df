//! Replies: JSON bodies of k8s-openapi objects, and `Status` objects (kind `Status`, apiVersion
//! `v1`) for errors with the code and reason a real API server gives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde::Serialize;

/// What a handler answers: an HTTP status and a body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// `code` with `value` serialized as JSON.
    pub fn json<T: Serialize>(code: u16, value: &T) -> Reply {
        Reply {
            code,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("k8s-openapi objects serialize"),
        }
    }

    /// `200 OK` with `value` as JSON.
    pub fn ok<T: Serialize>(value: &T) -> Reply {
        Reply::json(200, value)
    }

    /// `200 OK` with a plain-text body (`/readyz`, `/livez`).
    pub fn text(body: &str) -> Reply {
        Reply {
            code: 200,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A failure `Status` with `code`, `reason` and `message`.
pub(crate) fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
    Status {
        code: Some(i32::from(code)),
        message: Some(message.into()),
        reason: Some(reason.to_string()),
        status: Some("Failure".into()),
        ..Status::default()
    }
}

/// A failure `Status` reply.
pub(crate) fn error(code: u16, reason: &str, message: impl Into<String>) -> Reply {
    Reply::json(code, &failure(code, reason, message))
}

/// The details every object-level error carries: the object's name and its resource (plural).
fn details(kind: &str, name: &str) -> StatusDetails {
    let (group, kind) = match kind.split_once('/') {
        Some((g, k)) => (Some(g.to_string()), k),
        None => (None, kind),
    };
    StatusDetails {
        group,
        kind: Some(kind.to_string()),
        name: Some(name.to_string()),
        ..StatusDetails::default()
    }
}

/// `404 NotFound`: `RESOURCE "NAME" not found` (`resource` is plural, `group/plural` outside
/// the core group).
pub(crate) fn not_found(resource: &str, name: &str) -> Reply {
    let plural = resource.rsplit('/').next().unwrap_or(resource);
    let qualified = match resource.split_once('/') {
        Some((g, k)) => format!("{k}.{g}"),
        None => plural.to_string(),
    };
    let mut s = failure(404, "NotFound", format!("{qualified} \"{name}\" not found"));
    s.details = Some(details(resource, name));
    Reply::json(404, &s)
}

/// `404 NotFound` for a path the server does not serve.
pub(crate) fn no_route() -> Reply {
    error(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// `405 MethodNotAllowed`.
pub(crate) fn method_not_allowed(method: &str) -> Reply {
    error(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// `409 AlreadyExists`.
pub(crate) fn already_exists(resource: &str, name: &str) -> Reply {
    let mut s = failure(
        409,
        "AlreadyExists",
        format!("{resource} \"{name}\" already exists"),
    );
    s.details = Some(details(resource, name));
    Reply::json(409, &s)
}

/// `409 Conflict` for a stale `metadata.resourceVersion`.
pub(crate) fn conflict(resource: &str, name: &str) -> Reply {
    let mut s = failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        ),
    );
    s.details = Some(details(resource, name));
    Reply::json(409, &s)
}

/// `422 Invalid`: `KIND "NAME" is invalid: FIELD: MESSAGE`.
pub(crate) fn invalid(kind: &str, resource: &str, name: &str, field: &str, msg: &str) -> Reply {
    let mut s = failure(
        422,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {field}: {msg}"),
    );
    let mut d = details(resource, name);
    d.causes = Some(vec![StatusCause {
        field: Some(field.to_string()),
        message: Some(msg.to_string()),
        reason: Some("FieldValueInvalid".into()),
    }]);
    s.details = Some(d);
    Reply::json(422, &s)
}

/// `400 BadRequest`.
pub(crate) fn bad_request(message: impl Into<String>) -> Reply {
    error(400, "BadRequest", message)
}

/// `401 Unauthorized` (no client certificate).
pub(crate) fn unauthorized() -> Reply {
    error(401, "Unauthorized", "Unauthorized")
}

/// `429 TooManyRequests` from the eviction subresource when a PodDisruptionBudget forbids it.
pub(crate) fn disruption_budget(pdb: &str, desired: i32, healthy: i32) -> Reply {
    let mut s = failure(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    s.details = Some(StatusDetails {
        causes: Some(vec![StatusCause {
            field: None,
            message: Some(format!(
                "The disruption budget {pdb} needs {desired} healthy pods and has {healthy} \
                 currently"
            )),
            reason: Some("DisruptionBudget".into()),
        }]),
        ..StatusDetails::default()
    });
    Reply::json(429, &s)
}

/// A success `Status` with `code` (`201` for an eviction, `200` for a delete), naming the
/// deleted object when there is one.
pub(crate) fn success(code: u16, deleted: Option<(&str, &str, &str)>) -> Reply {
    let s = Status {
        code: Some(i32::from(code)),
        status: Some("Success".into()),
        details: deleted.map(|(resource, name, uid)| StatusDetails {
            uid: Some(uid.to_string()),
            ..details(resource, name)
        }),
        ..Status::default()
    };
    Reply::json(code, &s)
}

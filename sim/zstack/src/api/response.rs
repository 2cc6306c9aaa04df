//! Reply constructors: the plain-text answers of the REST layer and the JSON ones of the APIs.

use crate::error::ErrorCode;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Plain-text reply: what the REST layer itself sends for 400/404/405/500.
pub(super) fn text(code: u16, msg: impl Into<String>) -> Response {
    (
        status(code),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// JSON reply with ZStack's content type.
pub(super) fn json_resp(code: u16, v: Value) -> Response {
    (
        status(code),
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// A failed API call: 503 with the error envelope.
pub(super) fn api_error(e: &ErrorCode) -> Response {
    json_resp(503, e.envelope())
}

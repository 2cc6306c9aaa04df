//! Library errors ([`SimError`]) and the ZStack wire error shape ([`ErrorCode`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors of the simulator library itself (not API errors, which are [`ErrorCode`]s on the wire).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The inventory YAML could not be parsed.
    #[error("invalid inventory YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The inventory is well-formed YAML but inconsistent (dangling reference, bad IP range...).
    #[error("invalid inventory: {0}")]
    Inventory(String),
    /// The persisted state file is unreadable or corrupt.
    #[error("invalid state file {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it was rejected.
        message: String,
    },
    /// The configuration is unusable (non-loopback listen address, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A fault rule is malformed (bad regex, ...).
    #[error("invalid fault rule: {0}")]
    Fault(String),
}

impl SimError {
    /// Wraps an I/O error with context; used for every file operation so messages name the file.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SimError::Io {
            context: context.into(),
            source,
        }
    }
}

/// ZStack's `ErrorCode` (`header/.../errorcode/ErrorCode.java`), serialized exactly as §11.8:
/// every key present, absent values as `null`; `causes` only when a list is carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCode {
    /// e.g. `SYS.1006`, `VM.1010`, `ID.1001`.
    pub code: String,
    /// The generic description of the code.
    pub description: String,
    /// The specific message.
    pub details: Option<String>,
    /// Always null in the simulator (the MN fills it from its elaboration database).
    pub elaboration: Option<String>,
    /// Always null in the simulator.
    pub location: Option<String>,
    /// Always null in the simulator.
    pub cost: Option<String>,
    /// The wrapped error, if any.
    pub cause: Option<Box<ErrorCode>>,
    /// Always null in the simulator.
    pub opaque: Option<serde_json::Value>,
    /// Lists of errors (only present when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causes: Option<Vec<ErrorCode>>,
}

impl ErrorCode {
    /// Builds an error with the standard description for well-known codes.
    pub fn new(code: &str, details: impl Into<String>) -> Self {
        ErrorCode {
            code: code.to_string(),
            description: describe(code).to_string(),
            details: Some(details.into()),
            elaboration: None,
            location: None,
            cost: None,
            cause: None,
            opaque: None,
            causes: None,
        }
    }

    /// Wraps `cause` inside this error, as ZStack's `err(code, cause, fmt)` does.
    pub fn with_cause(mut self, cause: ErrorCode) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }

    /// Replaces the generic description (used by the fault API when a test picks one).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// True if this code or any cause in the chain has `code`.
    pub fn chain_contains(&self, code: &str) -> bool {
        self.code == code || self.cause.as_ref().is_some_and(|c| c.chain_contains(code))
    }

    /// `SYS.1000` internal error (also what an unhandled exception on an API message becomes).
    pub fn internal(details: impl Into<String>) -> Self {
        Self::new("SYS.1000", details)
    }
    /// `SYS.1006` operation error.
    pub fn operation(details: impl Into<String>) -> Self {
        Self::new("SYS.1006", details)
    }
    /// `SYS.1007` invalid argument.
    pub fn invalid_argument(details: impl Into<String>) -> Self {
        Self::new("SYS.1007", details)
    }
    /// `ID.1001` invalid or expired session.
    pub fn session_expired() -> Self {
        Self::new("ID.1001", "Session expired")
    }

    /// The `{"error": ...}` envelope used for 503 replies and failed jobs.
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

/// Generic descriptions (`SysErrors.java`, `IdentityErrors.java`, `VmErrors.java`); wording is ours.
fn describe(code: &str) -> &'static str {
    match code {
        "SYS.1000" => "An internal error happened in system",
        "SYS.1001" => "An operation failed because of timeout",
        "SYS.1002" => "Unable to create a resource",
        "SYS.1003" => "Unable to find a resource",
        "SYS.1004" => "Unable to delete a resource",
        "SYS.1006" => "Operation error",
        "SYS.1007" => "One or more API argument is invalid",
        "SYS.1008" => "Unknown message",
        "SYS.1012" => "Management node is not available",
        "ID.1000" => "Authentication error",
        "ID.1001" => "Invalid session",
        "ID.1002" => "Permission denied",
        "ID.1003" => "Quota exceeding",
        "ID.1006" => "Exceeded the maximum number of concurrent sessions",
        "VM.1003" => "Unable to reboot the vm",
        "VM.1010" => "The VM is not in a correct state for the operation",
        "HOST_ALLOCATION.1001" => "No available host found",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_key_with_nulls() {
        let e = ErrorCode::operation("x").with_cause(ErrorCode::new("VM.1010", "y"));
        let v = e.envelope();
        let err = v["error"].as_object().unwrap();
        for k in [
            "code",
            "description",
            "details",
            "elaboration",
            "location",
            "cost",
            "cause",
            "opaque",
        ] {
            assert!(err.contains_key(k), "missing {k}");
        }
        assert!(!err.contains_key("causes"));
        assert_eq!(v["error"]["cause"]["code"], "VM.1010");
        assert!(v["error"]["elaboration"].is_null());
        assert!(e.chain_contains("VM.1010"));
        assert!(!e.chain_contains("VM.1003"));
    }
}

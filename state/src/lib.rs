//! kprov's state store.
//!
//! A state store is a flat key/value object store with conditional writes — the smallest
//! contract both a directory and an S3 bucket can honour atomically. Everything kprov keeps
//! about a cluster lives in one: the spec, instance groups, PKI, secrets, the lock lease, the
//! apply journal and the history of applied specs.
//!
//! Keys are `/`-separated relative paths (`demo/config.yaml`). Keys containing a `pki/` or
//! `secrets/` segment are secret: backends store them with owner-only permissions (file) or
//! request server-side encryption (S3).

use std::fmt;

use async_trait::async_trait;

pub mod crypt;
pub mod file;
pub mod lease;
#[cfg(feature = "s3")]
pub mod s3;
pub mod suite;

pub use lease::{Lease, LeaseGuard, LeaseInfo};

/// Opaque version of an object (a content hash for `file://`, the ETag for `s3://`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Version(pub String);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object's bytes.
    pub bytes: Vec<u8>,
    /// Version, for a later compare-and-swap.
    pub version: Version,
}

/// When a write or delete may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write or delete whatever is there (or is not).
    None,
    /// Only if no object exists under the key (create).
    IfAbsent,
    /// Only if the object's current version is this one (compare-and-swap).
    IfVersion(Version),
}

/// Errors of a state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The write's condition did not hold: someone else wrote (or created) the object.
    #[error("{key} changed since it was read (or already exists): another kprov run wrote it; re-run to work on the current version")]
    Conflict {
        /// The state key whose object changed.
        key: String,
    },
    /// A key is not valid.
    #[error("invalid state key {key:?}: {why}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// The store URL is not understood.
    #[error("invalid state store URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why and how to fix.
        why: String,
    },
    /// A local I/O error. The cause is part of the message (not a `source`, so a chain
    /// printed with `{:#}` does not repeat it), followed by how to fix it.
    #[error("state store {location}: {}", io_message(cause))]
    Io {
        /// Path or key.
        location: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The backend failed (network, permissions, ...).
    #[error("state store {location}: {message}")]
    Backend {
        /// Key or bucket.
        location: String,
        /// Description including how to fix.
        message: String,
    },
    /// The lock lease is held by someone else.
    #[error("cluster {cluster} is locked by {holder}")]
    Locked {
        /// The cluster whose lock is held.
        cluster: String,
        /// Holder description (user@host pid command, age).
        holder: String,
    },
}

/// An I/O error of a `file://` store with what to do about it.
fn io_message(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let fix = match e.kind() {
        K::NotADirectory => {
            "part of that path is a file, not a directory; point --state (or KPROV_STATE_STORE) at a \
             directory, e.g. file:///var/lib/kprov, or move the file out of the way"
        }
        K::PermissionDenied | K::ReadOnlyFilesystem => {
            "kprov may not write there; use a writable directory with --state file:///PATH \
             (or KPROV_STATE_STORE), or fix the directory's permissions"
        }
        K::NotFound => "it does not exist; check the path given with --state (or KPROV_STATE_STORE)",
        K::IsADirectory => "a directory is where kprov keeps a file; move the directory out of the way",
        K::StorageFull | K::QuotaExceeded => "the disk is full; free some space and run again",
        _ => "check the path given with --state (or KPROV_STATE_STORE) and its permissions",
    };
    format!("{e}; fix: {fix}")
}

/// Result type of state store calls.
pub type StateResult<T> = Result<T, StateError>;

/// A flat object store with conditional writes.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The store's URL (`file:///...`, `s3://bucket/prefix`), for messages.
    fn url(&self) -> String;

    /// Read an object; `None` if absent.
    async fn get(&self, key: &str) -> StateResult<Option<Object>>;

    /// Write an object if `cond` holds; returns its new version.
    async fn put(&self, key: &str, bytes: &[u8], cond: Condition) -> StateResult<Version>;

    /// Keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> StateResult<Vec<String>>;

    /// Delete an object if `cond` holds. Deleting an absent object with [`Condition::None`]
    /// succeeds.
    async fn delete(&self, key: &str, cond: Condition) -> StateResult<()>;

    /// A URL anyone holding it can `GET` object `key` from for `ttl` (an S3 presigned URL), for
    /// machines that have no credentials for the store; `None` when the store cannot give one
    /// (a `file://` store is only on this machine). The object is read as stored: never use it
    /// for secret keys of a client-side encrypted store.
    async fn share_url(&self, key: &str, ttl: std::time::Duration) -> StateResult<Option<String>> {
        let _ = (key, ttl);
        Ok(None)
    }
}

/// True for keys whose objects hold secrets (`.../pki/...`, `.../secrets/...`).
pub fn is_secret_key(key: &str) -> bool {
    key.split('/').any(|seg| seg == "pki" || seg == "secrets")
}

/// Check a key is a clean relative path.
pub fn validate_key(key: &str) -> StateResult<()> {
    let bad = |why: &str| {
        Err(StateError::InvalidKey {
            key: key.to_string(),
            why: why.to_string(),
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("must not start or end with '/'");
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' or '..' path segment");
        }
        if seg.starts_with(".kprov-") {
            return bad("segments starting with '.kprov-' are reserved");
        }
    }
    Ok(())
}

/// Open a store from a URL. `file://` is built in; other schemes are opened by the caller
/// (the `s3://` backend needs an async SDK config).
pub fn open_file_url(url: &str) -> StateResult<file::FileStore> {
    let path = url
        .strip_prefix("file://")
        .ok_or_else(|| StateError::InvalidUrl {
            url: url.into(),
            why: "use file:///ABSOLUTE/PATH".into(),
        })?;
    if !path.starts_with('/') {
        return Err(StateError::InvalidUrl {
            url: url.into(),
            why: "the path must be absolute: use three slashes and a full path, e.g. file:///var/lib/kprov".into(),
        });
    }
    Ok(file::FileStore::new(path))
}

/// Open a state store from its URL: `file:///ABSOLUTE/PATH` or `s3://BUCKET[/PREFIX]`.
///
/// `s3://` takes its settings from the environment ([`s3::S3Options::from_env`] plus the AWS
/// SDK's own chain). When `KPROV_STATE_ENCRYPTION_KEY_FILE` is set the store is wrapped in a
/// [`crypt::EncryptedStore`] (the key file is read now, so a bad one fails early). See
/// `docs/state.md`.
pub async fn open(url: &str) -> StateResult<std::sync::Arc<dyn StateStore>> {
    let encryption = crypt::EncryptionSettings::from_env();
    if url.starts_with("file://") {
        return crypt::wrap(open_file_url(url)?, encryption.as_ref());
    }
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        {
            let store = s3::S3Store::open(url, s3::S3Options::from_env()?).await?;
            return crypt::wrap(store, encryption.as_ref());
        }
        #[cfg(not(feature = "s3"))]
        return Err(StateError::InvalidUrl {
            url: url.into(),
            why: "this kprov was built without the s3 feature of kprov-state".into(),
        });
    }
    Err(StateError::InvalidUrl {
        url: url.into(),
        why: format!(
            "unsupported scheme {:?}; use file:///ABSOLUTE/PATH (a local directory) or s3://BUCKET[/PREFIX] \
             (AWS S3 or an S3-compatible store)",
            url.split_once("://").map_or(url, |(scheme, _)| scheme)
        ),
    })
}

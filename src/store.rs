//! Opening the state store named by a URL.

use std::sync::Arc;

use kprov_state::{StateError, StateStore};

/// Open `file://…` or `s3://…`.
pub async fn open(url: &str) -> Result<Arc<dyn StateStore>, StateError> {
    if url.starts_with("file://") {
        return Ok(Arc::new(kprov_state::open_file_url(url)?));
    }
    Err(StateError::InvalidUrl { url: url.into(), why: "supported: file:///ABSOLUTE/PATH".into() })
}

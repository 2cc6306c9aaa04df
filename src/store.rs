//! Opening the state store named by a URL (`file://…`, `s3://…`; see `docs/state.md`).

use std::sync::Arc;

use kprov_state::{StateError, StateStore};

/// Open `file://…` or `s3://…` (wrapped in client-side encryption when
/// `KPROV_STATE_ENCRYPTION_KEY_FILE` is set).
pub async fn open(url: &str) -> Result<Arc<dyn StateStore>, StateError> {
    kprov_state::open(url).await
}

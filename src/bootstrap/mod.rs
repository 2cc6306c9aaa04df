//! Node bootstrap: rendering each instance's user-data (filled in by the bootstrap issue).

use std::sync::Arc;

use kprov_providers::InstanceRequest;

use crate::apply::{RenderContext, UserData};
use crate::repo::Repo;
use crate::spec::ClusterConfig;

/// The user-data renderer for a cluster.
pub async fn renderer(_repo: &Repo, _config: &ClusterConfig) -> anyhow::Result<Arc<dyn UserData>> {
    Ok(Arc::new(|req: &InstanceRequest, _ctx: &RenderContext| Ok(format!("#cloud-config\nhostname: {}\n", req.name).into_bytes())))
}

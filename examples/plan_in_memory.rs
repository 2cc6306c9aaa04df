//! kprov as a library: plan a cluster against the in-memory cloud, apply the plan, and plan
//! again (nothing left to do). Run: `cargo run --example plan_in_memory`.
//!
//! The same functions run under `kprov update cluster`: `plan::desired` (what the spec asks
//! for), `Cloud::list_instances` (what the cloud holds, by tag), `plan::diff`, and the executor
//! `apply::apply`. Only the cloud differs: here an in-process one instead of ZStack, AWS or
//! libvirt.

use std::sync::Arc;

use kprov::apply::{self, Journal, RenderContext, Settings};
use kprov::plan::{desired, diff, render};
use kprov::report::{Plain, Progress};
use kprov_providers::{Cloud, InstanceRequest};
use kprov_testkit::memory::MemoryCloud;

/// The spec, as a user writes it (`kubernetesVersion` is filled in from the versions table).
const SPEC: &str = r#"
apiVersion: kprov.io/v1alpha1
kind: Cluster
metadata: {name: example}
spec:
  provider: {zstack: {endpoint: "http://127.0.0.1:9"}}
  kubernetesVersion: VERSION
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {name: control-plane}
spec: {role: control-plane, count: 1, arch: arm64}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {name: gpu-nodes}
spec: {role: node, count: 3, arch: arm64, gpu: {count: 1, model: A100}}
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let spec = SPEC.replace("VERSION", kprov::spec::versions::default_version());
    let config = kprov::spec::load::parse_cluster("example.yaml", &spec)?;
    let cloud = Arc::new(MemoryCloud::new());

    let plan = diff(&desired(&config), &cloud.list_instances("example").await?);
    print!("{}", render(&plan, &Plain));

    // A real run renders cloud-init user-data from the cluster's secrets; this one sends a stub.
    let user_data = Arc::new(|r: &InstanceRequest, _: &RenderContext| {
        Ok(format!("#cloud-config\n# {}\n", r.name).into_bytes())
    });
    // The executor journals its tasks in the state store: a throw-away file store here.
    let dir = std::env::temp_dir().join(format!("kprov-example-{}", std::process::id()));
    let store: Arc<dyn kprov_state::StateStore> = Arc::new(kprov_state::file::FileStore::new(&dir));
    let (journal, _) = Journal::begin(store, "example", "example", 1).await?;
    let outcome = apply::apply(
        cloud.clone(),
        &plan,
        user_data,
        &Settings::default(),
        &journal,
        &Progress::hidden(),
    )
    .await?;
    println!("\napplied: {} instances created", outcome.created.len());

    let again = diff(&desired(&config), &cloud.list_instances("example").await?);
    print!("\n{}", render(&again, &Plain));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

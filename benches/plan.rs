//! Benchmark: plan time for a 1,000-instance cluster against the in-memory cloud.
//!
//! Prints the time to list the observed instances, compute the desired set, diff and render the
//! plan, for a fresh cluster (1,000 creates) and a converged one (no-op), best of 5 runs.
//! Goal: < 200 ms. Run: `cargo bench --bench plan`.

use std::time::{Duration, Instant};

use kprov::plan::{desired, diff, render};
use kprov::spec::ClusterConfig;
use kprov_providers::Cloud;
use kprov_testkit::memory::MemoryCloud;

fn cluster(workers: u32) -> ClusterConfig {
    let yaml = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: big}}\nspec:\n  provider: {{zstack: {{endpoint: \"http://127.0.0.1:9\"}}}}\n  kubernetesVersion: {}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 3, arch: arm64}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: {workers}, arch: arm64, gpu: {{count: 1, model: A100}}}}\n",
        kprov::spec::versions::default_version()
    );
    kprov::spec::load::parse_cluster("bench.yaml", &yaml).expect("valid spec")
}

async fn time_plan(cloud: &MemoryCloud, cfg: &ClusterConfig) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut changes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let observed = cloud.list_instances("big").await.expect("list");
        let d = desired(cfg);
        let p = diff(&d, &observed);
        let text = render(&p, &kprov::report::Plain);
        best = best.min(t.elapsed());
        changes = p.changes.len();
        std::hint::black_box(text);
    }
    (best, changes)
}

#[tokio::main]
async fn main() {
    let cfg = cluster(997);
    let n: usize = cfg.groups.iter().map(|g| g.spec.count as usize).sum();
    let cloud = MemoryCloud::new();
    let (fresh, changes) = time_plan(&cloud, &cfg).await;
    for r in desired(&cfg).instances {
        cloud.seed_instance(&r);
    }
    let (noop, noop_changes) = time_plan(&cloud, &cfg).await;
    println!("plan benchmark: {n} instances (in-memory cloud), best of 5");
    println!(
        "  fresh cluster : {:>8.2} ms  ({changes} changes)",
        fresh.as_secs_f64() * 1e3
    );
    println!(
        "  converged     : {:>8.2} ms  ({noop_changes} changes)",
        noop.as_secs_f64() * 1e3
    );
    println!(
        "  goal < 200 ms : ratio to goal {:.3} (fresh), {:.3} (converged)",
        fresh.as_secs_f64() / 0.2,
        noop.as_secs_f64() / 0.2
    );
}

//! Benchmark: create N = 200 VMs on the ZStack simulator with a fixed job delay and the
//! adapter's default concurrency. Prints wall time, the lower bound (critical path given the
//! concurrency cap: the first control plane alone, then ceil((N-1)/C) rounds of one job each),
//! their ratio (goal ≤ 1.15), and API calls for the create, a no-op plan and the delete (goal: a
//! no-op costs a constant number of list calls, not one per VM).
//! With `CONTROL_PLANES=3` the control planes sit behind a ZStack VIP + load balancer made
//! before the first VM (3 serial jobs), every VM is then created at once and each control plane
//! is added to the listener (one more job each): the bound is 3 + ceil((N + 3)/C) job rounds.
//! Run: `cargo bench --bench zstack` (env `N`, `JOB_DELAY_MS`, `CONTROL_PLANES` override the
//! defaults 200, 500, 1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kprov::apply::{self, Journal, Progress, RenderContext, Settings, UserData};
use kprov::plan::{desired, diff};
use kprov::spec::ClusterConfig;
use kprov_providers::zstack::{Secret, ZStackCloud, ZStackConfig, ZStackCredentials};
use kprov_providers::{Cloud, InstanceRequest};
use kprov_zstack_sim::{SimConfig, Simulator};

fn cluster(endpoint: &str, control_planes: usize, workers: usize) -> ClusterConfig {
    let yaml = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: bench}}\nspec:\n  provider: {{zstack: {{endpoint: \"{endpoint}\"}}}}\n  kubernetesVersion: {}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: {control_planes}, arch: arm64}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: {workers}, arch: arm64, size: {{cpu: 1, memory: 1Gi}}}}\n",
        kprov::spec::versions::default_version()
    );
    kprov::spec::load::parse_cluster("bench.yaml", &yaml).expect("valid spec")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env_or("N", 200) as usize;
    let job_delay = Duration::from_millis(env_or("JOB_DELAY_MS", 500));
    // room for 200 small VMs on the arm64 hosts
    let inventory = kprov_zstack_sim::Inventory::scaled_seed(8, 4);
    let sim = Simulator::start(SimConfig {
        job_delay,
        inventory,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let creds = ZStackCredentials::Account {
        name: "admin".into(),
        password: Secret::new("password".to_string()),
    };
    let cloud: Arc<dyn Cloud> =
        Arc::new(ZStackCloud::new(ZStackConfig::new(sim.endpoint(), creds)).expect("adapter"));
    let cps = env_or("CONTROL_PLANES", 1) as usize;
    let cfg = cluster(&sim.endpoint(), cps, n - cps);
    let ud: Arc<dyn UserData> = Arc::new(|r: &InstanceRequest, ctx: &RenderContext| {
        Ok(format!(
            "#cloud-config\nhostname: {}\n# {}\n{}",
            r.name,
            ctx.control_plane_endpoint,
            "#".repeat(4096)
        )
        .into_bytes())
    });
    let settings = Settings {
        concurrency: cloud.default_concurrency(),
        ..Settings::default()
    };

    sim.reset_stats();
    let t = Instant::now();
    let plan = diff(
        &desired(&cfg),
        &cloud.list_instances("bench").await.expect("list"),
    );
    let out = apply::apply(
        cloud.clone(),
        &plan,
        ud,
        &settings,
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .expect("apply");
    let wall = t.elapsed();
    let create_calls = sim.stats().total;
    assert_eq!(out.created.len(), n);

    sim.reset_stats();
    let noop = diff(
        &desired(&cfg),
        &cloud.list_instances("bench").await.expect("list"),
    );
    assert!(noop.is_empty(), "second plan must be empty");
    let noop_calls = sim.stats().total;

    sim.reset_stats();
    let t_del = Instant::now();
    let deleted = apply::delete_all(
        cloud.clone(),
        "bench",
        &settings,
        Duration::from_secs(600),
        &Progress::hidden(),
    )
    .await
    .expect("delete");
    let del_wall = t_del.elapsed();
    let delete_calls = sim.stats().total;
    assert_eq!(sim.vm_count(), 0);

    let c = settings.concurrency;
    let (rounds, why) = if cps > 1 {
        (
            3 + (n + cps).div_ceil(c),
            "3 load-balancer jobs + ceil((N + control planes)/C)",
        )
    } else {
        (1 + (n - 1).div_ceil(c), "1 + ceil((N-1)/C)")
    };
    let lower = job_delay * rounds as u32;
    println!(
        "zstack benchmark: N = {n} VMs ({cps} control planes), job delay {job_delay:?}, concurrency {c}"
    );
    println!("  create wall time   : {:>8.2} s", wall.as_secs_f64());
    println!(
        "  lower bound        : {:>8.2} s  ({why} = {rounds} job rounds)",
        lower.as_secs_f64()
    );
    println!(
        "  ratio              : {:>8.3}  (goal <= 1.15)",
        wall.as_secs_f64() / lower.as_secs_f64()
    );
    println!(
        "  API calls, create  : {create_calls} ({:.2} per VM)",
        create_calls as f64 / n as f64
    );
    println!("  API calls, no-op   : {noop_calls} (constant: not per VM)");
    println!(
        "  API calls, delete  : {delete_calls} for {deleted} resources in {:.2} s",
        del_wall.as_secs_f64()
    );
    sim.shutdown().await;
}

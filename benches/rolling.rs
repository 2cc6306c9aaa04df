//! Benchmark: `kprov rolling-update --yes --cloudonly` of N = 100 nodes on the ZStack simulator
//! with maxSurge 10 and a fixed job delay, driving the real binary. The lower bound is measured
//! in the same run: the same command replacing a 1-node group (one step: a surge create, then a
//! delete, plus kprov's own start-up and planning), times ceil(N / maxSurge) steps. Prints wall
//! time, the bound, their ratio (goal ≤ 1.2) and ZStack API calls per replaced node.
//! Drain and validation are not part of a cloud-only roll (docs/lifecycle.md), so they are not in
//! the bound either. Run: `cargo bench --bench rolling` (env `N`, `SURGE`, `JOB_DELAY_MS`).

use std::time::{Duration, Instant};

use kprov_testkit::KprovBin;
use kprov_zstack_sim::{SimConfig, SimHandle, Simulator};

const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A spec of cluster `name`: one arm64 control plane and `nodes` small nodes of `size`, rolled
/// `surge` at a time.
fn spec(name: &str, endpoint: &str, nodes: u64, size: &str, surge: u64) -> String {
    format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: {{zstack: {{endpoint: \"{endpoint}\"}}}}\n  kubernetesVersion: {}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 1, arch: arm64}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec:\n  role: node\n  count: {nodes}\n  arch: arm64\n  size: {size}\n  rollingUpdate: {{maxSurge: {surge}, maxUnavailable: 0}}\n",
        kprov::spec::versions::default_version()
    )
}

struct Bench {
    state: tempfile::TempDir,
    endpoint: String,
}

impl Bench {
    fn kprov(&self, args: &[&str]) -> String {
        let out = KPROV
            .command()
            .args(args)
            .env(
                "KPROV_STATE_STORE",
                format!("file://{}", self.state.path().display()),
            )
            .env("ZSTACK_ACCOUNT", "admin")
            .env("ZSTACK_PASSWORD", "password")
            .env("NO_COLOR", "1")
            .env("KPROV_SKIP_ASSET_CHECK", "1")
            .output()
            .expect("kprov runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kprov {args:?}:\n{text}");
        text
    }

    /// Store cluster `name` with `size` nodes (created, or replaced with --replace).
    fn store(&self, name: &str, nodes: u64, size: &str, surge: u64, replace: bool) {
        let file = self.state.path().join(format!("{name}.yaml"));
        std::fs::write(&file, spec(name, &self.endpoint, nodes, size, surge)).unwrap();
        let mut args = vec!["create", "-f", file.to_str().unwrap()];
        if replace {
            args.push("--replace");
        }
        self.kprov(&args);
    }

    /// Create cluster `name`, change its node size, and time the roll: (wall time, API calls
    /// the simulator served during it).
    fn roll(&self, sim: &SimHandle, name: &str, nodes: u64, surge: u64) -> (Duration, u64) {
        self.store(name, nodes, "{cpu: 1, memory: 1Gi}", surge, false);
        self.kprov(&["update", "cluster", name, "--yes"]);
        self.store(name, nodes, "{cpu: 1, memory: 2Gi}", surge, true);
        sim.reset_stats();
        let t = Instant::now();
        let out = self.kprov(&["rolling-update", "cluster", name, "--yes", "--cloudonly"]);
        let wall = t.elapsed();
        assert!(
            out.contains(&format!(
                "{nodes} replacement(s) created, {nodes} old instance(s) deleted"
            )),
            "{out}"
        );
        (wall, sim.stats().total)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_or("N", 100);
    let surge = env_or("SURGE", 10);
    let job_delay = Duration::from_millis(env_or("JOB_DELAY_MS", 200));
    let mut inventory = kprov_zstack_sim::Inventory::default_seed();
    for h in &mut inventory.hosts {
        h.cpu_num *= 8;
        h.total_cpu_capacity *= 8;
        h.total_memory_capacity *= 8;
    }
    let sim = Simulator::start(SimConfig {
        job_delay,
        inventory,
        admin_account: ("admin".into(), "password".into()),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let b = Bench {
        state: tempfile::tempdir().unwrap(),
        endpoint: sim.endpoint(),
    };
    // the bound: one step of the same command, on a 1-node group
    let (step, _) = tokio::task::block_in_place(|| b.roll(&sim, "one", 1, 1));
    let (wall, calls) = tokio::task::block_in_place(|| b.roll(&sim, "big", n, surge));
    let steps = n.div_ceil(surge);
    let bound = step * steps as u32;
    println!("rolling-update benchmark: N = {n} nodes, maxSurge {surge}, job delay {job_delay:?}, --cloudonly");
    println!(
        "  one step (1 node, measured) : {:>8.2} s",
        step.as_secs_f64()
    );
    println!(
        "  lower bound                 : {:>8.2} s  (ceil(N/maxSurge) = {steps} steps)",
        bound.as_secs_f64()
    );
    println!(
        "  rolling-update wall time    : {:>8.2} s",
        wall.as_secs_f64()
    );
    println!(
        "  ratio                       : {:>8.3}  (goal <= 1.2)",
        wall.as_secs_f64() / bound.as_secs_f64()
    );
    println!(
        "  ZStack API calls, roll      : {calls} ({:.1} per replaced node)",
        calls as f64 / n as f64
    );
    sim.shutdown().await;
}

//! Benchmark: `kprov rolling-update --yes --cloudonly --concurrency S` of N = 100 nodes on the
//! ZStack simulator with maxSurge S = 10 and a fixed job delay, driving the real binary. The
//! lower bound is measured in the same run from the same command on small groups: a 1-node roll
//! takes F + R (F: start-up, planning, checks; R: one step, a surge create then a delete) and a
//! 2-node roll with maxSurge 1 takes F + 2R, so the bound is F + ceil(N / S) × R. Prints wall
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
        let c = surge.to_string();
        self.store(name, nodes, "{cpu: 1, memory: 1Gi}", surge, false);
        self.kprov(&["update", "cluster", name, "--yes"]);
        self.store(name, nodes, "{cpu: 1, memory: 2Gi}", surge, true);
        sim.reset_stats();
        let t = Instant::now();
        let out = self.kprov(&[
            "rolling-update",
            "cluster",
            name,
            "--yes",
            "--cloudonly",
            "--concurrency",
            &c,
        ]);
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
    let inventory = kprov_zstack_sim::Inventory::scaled_seed(8, 8);
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
    let (one, _) = tokio::task::block_in_place(|| b.roll(&sim, "one", 1, 1));
    let (two, _) = tokio::task::block_in_place(|| b.roll(&sim, "two", 2, 1));
    let (wall, calls) = tokio::task::block_in_place(|| b.roll(&sim, "big", n, surge));
    let step = two.saturating_sub(one);
    let fixed = one.saturating_sub(step);
    let steps = n.div_ceil(surge);
    let bound = fixed + step * steps as u32;
    println!("rolling-update benchmark: N = {n} nodes, maxSurge {surge}, --concurrency {surge}, job delay {job_delay:?}, --cloudonly");
    println!(
        "  measured: 1-node roll {:.2} s, 2-node roll {:.2} s -> one step R = {:.2} s, fixed F = {:.2} s",
        one.as_secs_f64(),
        two.as_secs_f64(),
        step.as_secs_f64(),
        fixed.as_secs_f64()
    );
    println!(
        "  lower bound F + ceil(N/maxSurge) x R : {:>8.2} s  ({steps} steps)",
        bound.as_secs_f64()
    );
    println!(
        "  rolling-update wall time             : {:>8.2} s",
        wall.as_secs_f64()
    );
    println!(
        "  ratio                                : {:>8.3}  (goal <= 1.2)",
        wall.as_secs_f64() / bound.as_secs_f64()
    );
    println!(
        "  ZStack API calls, roll               : {calls} ({:.1} per replaced node)",
        calls as f64 / n as f64
    );
    sim.shutdown().await;
}

//! Benchmark: `kprov rolling-update --yes --cloudonly --concurrency S` of N = 100 nodes on the
//! ZStack simulator with maxSurge S = 10 and a fixed job delay, driving the real binary. The
//! lower bound is measured in the same run from the same command on small groups: a 1-node roll
//! takes F + R (F: start-up, planning, checks; R: one step, a surge create then a delete) and a
//! 2-node roll with maxSurge 1 takes F + 2R, so the bound is F + ceil(N / S) × R. Prints wall
//! time, the bound, their ratio (goal ≤ 1.2) and ZStack API calls per replaced node.
//!
//! The same again through the Kubernetes API (no `--cloudonly`), against the API stand-in
//! (`kprov_testkit::kube_api`) with a fixed node-ready delay and a Deployment of one pod per
//! node: each step then also waits for the replacements' Nodes, cordons and drains the old
//! nodes through evictions, deletes their Nodes and validates the cluster, so R is
//! create + ready + drain + validate, measured the same way. Prints API-server calls per
//! replaced node too. Run: `cargo bench --bench rolling` (env `N`, `SURGE`, `JOB_DELAY_MS`,
//! `NODE_READY_MS`).

use std::time::{Duration, Instant};

use std::sync::Arc;

use kprov::repo::Repo;
use kprov_testkit::kube_api::{CloudInstance, KubeApi, KubeApiOptions};
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

    /// A Kubernetes API stand-in for cluster `name` (its CA from the store) whose kubelets
    /// register the simulator's VMs of that cluster, Ready after `ready`; a Deployment of one
    /// pod per node; and an admin kubeconfig for it.
    fn api(&self, sim: &SimHandle, name: &str, nodes: u64, ready: Duration) -> (KubeApi, String) {
        let rt = tokio::runtime::Handle::current();
        let store = format!("file://{}", self.state.path().display());
        let ca = rt.block_on(async {
            let repo = Repo::new(kprov_state::open(&store).await.unwrap());
            kprov::secrets::load(&repo, name).await.unwrap().ca
        });
        // the admin certificate `export kubeconfig --admin` mints
        let (cert_pem, key_pem) = kprov::pki::sign_client_cert(
            &ca,
            kprov::ops::access::ADMIN_CN,
            &[kprov::ops::access::ADMIN_GROUP],
            Duration::from_secs(3600),
        )
        .unwrap();
        let api = rt.block_on(KubeApi::start(KubeApiOptions {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            node_ready_after: ready,
            pod_ready_after: ready,
        }));
        let vms = sim.vm_reader();
        let prefix = format!("{name}-");
        api.watch_cloud(
            Arc::new(move || {
                let list: Vec<CloudInstance> = vms
                    .vms()
                    .into_iter()
                    .filter(|v| v.state == "Running" && v.name.starts_with(&prefix))
                    .map(|v| CloudInstance {
                        control_plane: v.name.contains("-control-plane-"),
                        name: v.name,
                    })
                    .collect();
                Box::pin(async move { list })
            }),
            Duration::from_millis(50),
        );
        let kubeconfig = self.state.path().join(format!("{name}.kubeconfig"));
        api.write_kubeconfig(&kubeconfig, &cert_pem, &key_pem);
        let kc = kubeconfig.to_str().unwrap().to_string();
        self.kprov(&[
            "validate",
            "cluster",
            name,
            "--wait",
            "5m",
            "--kubeconfig",
            &kc,
        ]);
        api.add_deployment("default", "web", nodes as u32, None, false);
        self.kprov(&[
            "validate",
            "cluster",
            name,
            "--wait",
            "5m",
            "--kubeconfig",
            &kc,
        ]);
        (api, kc)
    }

    /// Create cluster `name`, change its node size, and time the roll: (wall time, API calls
    /// the simulator served during it, calls the API stand-in served). `ready`: through the
    /// Kubernetes API with that node-ready delay; `None`: `--cloudonly`.
    fn roll(
        &self,
        sim: &SimHandle,
        name: &str,
        nodes: u64,
        surge: u64,
        ready: Option<Duration>,
    ) -> (Duration, u64, usize) {
        let c = surge.to_string();
        self.store(name, nodes, "{cpu: 1, memory: 1Gi}", surge, false);
        self.kprov(&["update", "cluster", name, "--yes"]);
        let api = ready.map(|r| self.api(sim, name, nodes, r));
        self.store(name, nodes, "{cpu: 1, memory: 2Gi}", surge, true);
        let mut args = vec![
            "rolling-update",
            "cluster",
            name,
            "--yes",
            "--concurrency",
            &c,
        ];
        match &api {
            Some((_, kc)) => args.extend(["--kubeconfig", kc.as_str(), "--poll-interval", "100ms"]),
            None => args.push("--cloudonly"),
        }
        let api_before = api.as_ref().map_or(0, |(a, _)| a.requests().len());
        sim.reset_stats();
        let t = Instant::now();
        let out = self.kprov(&args);
        let wall = t.elapsed();
        assert!(
            out.contains(&format!(
                "{nodes} replacement(s) created, {nodes} old instance(s) deleted"
            )),
            "{out}"
        );
        let api_calls = api
            .as_ref()
            .map_or(0, |(a, _)| a.requests().len() - api_before);
        (wall, sim.stats().total, api_calls)
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
    let ready = Duration::from_millis(env_or("NODE_READY_MS", 500));
    for (label, mode) in [("--cloudonly", None), ("through the API", Some(ready))] {
        // the bound: one step of the same command, on a 1-node group, then a 2-node group
        let tag = if mode.is_some() { "api" } else { "cloud" };
        let (one, _, _) =
            tokio::task::block_in_place(|| b.roll(&sim, &format!("{tag}-one"), 1, 1, mode));
        let (two, _, _) =
            tokio::task::block_in_place(|| b.roll(&sim, &format!("{tag}-two"), 2, 1, mode));
        let (wall, calls, api_calls) =
            tokio::task::block_in_place(|| b.roll(&sim, &format!("{tag}-big"), n, surge, mode));
        report(
            label,
            n,
            surge,
            job_delay,
            mode,
            (one, two, wall),
            calls,
            api_calls,
        );
    }
    sim.shutdown().await;
}

/// Print one mode's figures: the measured step and fixed cost, the bound, the ratio.
#[allow(clippy::too_many_arguments)]
fn report(
    label: &str,
    n: u64,
    surge: u64,
    job_delay: Duration,
    ready: Option<Duration>,
    (one, two, wall): (Duration, Duration, Duration),
    calls: u64,
    api_calls: usize,
) {
    let step = two.saturating_sub(one);
    let fixed = one.saturating_sub(step);
    let steps = n.div_ceil(surge);
    let bound = fixed + step * steps as u32;
    let ready = ready.map_or(String::new(), |r| format!(", node-ready delay {r:?}"));
    println!("rolling-update benchmark ({label}): N = {n} nodes, maxSurge {surge}, --concurrency {surge}, job delay {job_delay:?}{ready}");
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
    if api_calls > 0 {
        println!(
            "  Kubernetes API calls, roll           : {api_calls} ({:.1} per replaced node)",
            api_calls as f64 / n as f64
        );
    }
}

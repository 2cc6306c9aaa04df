//! Benchmark: 1 VM vs 3 VMs created in parallel through the libvirt adapter (qemu:///system,
//! amd64, TCG, restricted user-mode networking): seconds from `kprov update cluster --yes` to
//! the last node's node-prep report (bootstrap phase `packages` ok, which follows `prepare`:
//! swap off, modules, sysctls), then the ratio 3-VM / 1-VM. Goal: ≤ 2.2 on 2 cores.
//!
//! The 1-VM cluster is one control plane (2 vCPU, 2 GiB); the 3-VM cluster adds two workers
//! (1 vCPU, 1 GiB each). Uses the cached test image (`tests/vm/build-image.sh`), starts
//! libvirtd if needed. Run: `cargo bench --bench libvirt` (as root; peers from
//! `bash tests/peers/install.sh`). `KPROV_BENCH_RUNS=N` repeats each size N times (default 1)
//! and reports the best.

use std::time::{Duration, Instant};

use kprov_testkit::vm::*;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

fn one_run(img: &std::path::Path, vms: u32, run: u32) -> f64 {
    let files = file_repository("amd64");
    let file_srv = serve_suffix(files);
    let recorder = serve_suffix(Default::default());
    let cluster = format!("lb{vms}r{run}p{}", std::process::id() % 10000);
    let mut kprov = Kprov::for_vms(KPROV);
    kprov.create_cluster(
        &cluster,
        "amd64",
        vms - 1,
        "2:2Gi",
        "1:1Gi",
        img,
        recorder.port,
        file_srv.port,
        9,
    );
    kprov.env.push((
        "KPROV_CALLBACK_URL".into(),
        format!("http://10.0.2.100:{GUEST_CALLBACK_PORT}"),
    ));
    let t0 = Instant::now();
    let r0 = recorder.now();
    kprov.ok(&["update", "cluster", &cluster, "--yes"]);
    let t_apply = t0.elapsed().as_secs_f64();
    let names: Vec<String> = domains(&format!("{cluster}-"));
    assert_eq!(names.len(), vms as usize, "{names:?}");
    let done = wait_for("node-prep reports", Duration::from_secs(1200), || {
        let p = phases(&recorder);
        names.iter().all(|n| {
            p.iter()
                .any(|(nn, ph, st, _)| nn == n && ph == "packages" && st == "ok")
        })
    });
    let p = phases(&recorder);
    let last = p
        .iter()
        .filter(|(_, ph, st, _)| ph == "packages" && st == "ok")
        .map(|x| x.3 - r0)
        .fold(0.0, f64::max);
    let firsts: Vec<String> = names
        .iter()
        .map(|n| {
            let t = p
                .iter()
                .find(|(nn, ph, _, _)| nn == n && ph == "prepare")
                .map(|x| x.3 - r0)
                .unwrap_or(f64::NAN);
            format!("{n}: prepare {t:.1}s")
        })
        .collect();
    let _ = kprov.run(&["delete", "cluster", &cluster, "--yes", "--force-unlock"]);
    force_cleanup(&format!("{cluster}-"));
    assert!(
        done,
        "{vms} VM(s): node-prep reports missing after 1200 s: {p:?}"
    );
    println!("  {vms} VM(s), run {run}: update --yes returned after {t_apply:.1}s; last node-prep report {last:.1}s ({})", firsts.join(", "));
    last
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !require_vm_peers("bench libvirt") {
        return;
    }
    let _host = host_lock();
    host_setup();
    let img = image("amd64");
    let runs: u32 = std::env::var("KPROV_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let best = |vms: u32| {
        (0..runs)
            .map(|r| one_run(&img, vms, r))
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "libvirt: update --yes → last node-prep report (amd64, TCG, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let one = best(1);
    let three = best(3);
    let ratio = three / one;
    println!(
        "libvirt: 1 VM {one:.1}s, 3 VMs in parallel {three:.1}s, ratio {ratio:.2} (goal <= 2.2)"
    );
    host_teardown();
}

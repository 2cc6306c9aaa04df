//! Mirror benchmark (`cargo bench --bench mirror`): two `docker-registry` instances on
//! loopback and a deterministic ~400 MB Kubernetes-like set (11 references, amd64 + arm64, OCI
//! indexes and Docker manifest lists, a shared base layer per arch).
//!
//! Prints, in one run:
//! * full mirror: `kprov mirror` vs two skopeo peers, each into its own empty registry:
//!   `skopeo copy --all --preserve-digests` per reference (one process each) and
//!   `skopeo sync --all --preserve-digests --src yaml --dest docker` (every reference in one
//!   process) — goal: kprov ≥ 2× faster; MB/s of all three, digests checked identical with
//!   skopeo;
//! * re-mirror with nothing changed, against both peers' second runs (goal: ≥ 5× faster);
//! * peak RSS of `kprov mirror` copying an image with a 1 GiB layer (goal < 100 MiB), read from
//!   `/usr/bin/time -v` when present, else from `/proc/PID/status` VmHWM while it runs.
//!
//! Needs the peers (`bash tests/peers/install.sh`); `KPROV_SKIP_PEERS=1` skips.

#[path = "../tests/support_registry/mod.rs"]
mod support_registry;

use std::process::Command;
use std::time::{Duration, Instant};

use support_registry::{generate, kprov, push_set, Registry, RegistryOptions, SetSizes, K8S_LIKE};

const MB: f64 = 1e6;

fn list(dir: &std::path::Path, refs: &[&str]) -> std::path::PathBuf {
    let p = dir.join(format!("list-{}.txt", refs.len()));
    std::fs::write(&p, refs.join("\n")).unwrap();
    p
}

fn kprov_mirror(from: &str, to: &str, list: &std::path::Path) -> Command {
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--from",
        from,
        "--to",
        to,
        "--insecure-registry",
        from,
        "--insecure-registry",
        to,
    ])
    .arg("--from-file")
    .arg(list);
    // KPROV_BENCH_CONCURRENCY=N tries another --concurrency (default: kprov's own default).
    if let Ok(n) = std::env::var("KPROV_BENCH_CONCURRENCY") {
        c.args(["--concurrency", &n]);
    }
    c
}

fn timed(mut c: Command, what: &str) -> Duration {
    let t = Instant::now();
    let out = c.output().expect(what);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn skopeo_all(from: &str, to: &str, refs: &[&str]) -> Duration {
    let t = Instant::now();
    for r in refs {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "-q",
            ])
            .arg(format!("docker://{from}/{r}"))
            .arg(format!("docker://{to}/{r}"))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    t.elapsed()
}

/// `skopeo sync --all --preserve-digests` of every reference in one process, from a YAML source
/// (`--src yaml`; without `--scoped` images land at `to/LAST-PATH-SEGMENT:TAG` — `--scoped`
/// would prefix the source's `host:port`, which is not a valid repository path).
fn skopeo_sync(from: &str, to: &str, refs: &[&str], dir: &std::path::Path) -> Duration {
    let mut yaml = format!("{from}:\n  tls-verify: false\n  images:\n");
    for r in refs {
        let (repo, tag) = r.rsplit_once(':').expect("tag");
        yaml.push_str(&format!("    {repo}:\n      - \"{tag}\"\n"));
    }
    let file = dir.join("sync.yaml");
    std::fs::write(&file, yaml).unwrap();
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args([
            "sync",
            "--all",
            "--preserve-digests",
            "--src",
            "yaml",
            "--dest",
            "docker",
            "--dest-tls-verify=false",
        ])
        .arg(&file)
        .arg(to)
        .output()
        .expect("skopeo sync");
    assert!(
        out.status.success(),
        "skopeo sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn peak_rss_kib(c: Command) -> u64 {
    if std::path::Path::new("/usr/bin/time").exists() {
        let mut t = Command::new("/usr/bin/time");
        t.arg("-v").arg(c.get_program()).args(c.get_args());
        let out = t.output().expect("time -v");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kprov mirror (1 GiB layer) failed: {err}"
        );
        return err
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok())
            .expect("time -v prints the maximum RSS");
    }
    let mut c = c;
    let mut child = c.spawn().expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

fn main() {
    let t = "bench mirror";
    if support_registry::require(t, "skopeo").is_none() {
        return;
    }
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(a) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(b) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(c) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sizes = SetSizes {
        base: 20 * 1024 * 1024,
        unique: 17 * 1024 * 1024,
        dir: None,
    };
    let g = Instant::now();
    let set = generate(K8S_LIKE, &sizes);
    rt.block_on(push_set(&up.addr, &set, None));
    let total = set.total_bytes() as f64;
    println!(
        "set: {} references, {} blobs, {:.0} MB (generated and pushed in {:.1} s)",
        set.images.len(),
        set.blobs.len(),
        total / MB,
        g.elapsed().as_secs_f64()
    );
    let l = list(dir.path(), K8S_LIKE);

    let k1 = timed(kprov_mirror(&up.addr, &a.addr, &l), "kprov mirror");
    let s1 = skopeo_all(&up.addr, &b.addr, K8S_LIKE);
    let y1 = skopeo_sync(&up.addr, &c.addr, K8S_LIKE, dir.path());
    let n = support_registry::assert_identical_with_skopeo(&set, &up.addr, |r| {
        format!("{}/{r}", a.addr)
    });
    support_registry::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", b.addr));
    // Without --scoped, skopeo sync names each image by its last path segment.
    support_registry::assert_identical_with_skopeo(&set, &up.addr, |r| {
        format!("{}/{}", c.addr, r.rsplit('/').next().unwrap())
    });
    let mbs = |d: Duration| total / MB / d.as_secs_f64();
    println!(
        "full mirror: kprov {:.2} s ({:.0} MB/s); skopeo copy --all --preserve-digests (one process per reference) {:.2} s ({:.0} MB/s): kprov is {:.2}x faster; skopeo sync --all --preserve-digests (one process) {:.2} s ({:.0} MB/s): kprov is {:.2}x faster (goal >= 2x); {n} manifests identical in all three",
        k1.as_secs_f64(),
        mbs(k1),
        s1.as_secs_f64(),
        mbs(s1),
        s1.as_secs_f64() / k1.as_secs_f64(),
        y1.as_secs_f64(),
        mbs(y1),
        y1.as_secs_f64() / k1.as_secs_f64()
    );
    let k2 = timed(kprov_mirror(&up.addr, &a.addr, &l), "kprov re-mirror");
    let s2 = skopeo_all(&up.addr, &b.addr, K8S_LIKE);
    let y2 = skopeo_sync(&up.addr, &c.addr, K8S_LIKE, dir.path());
    println!(
        "re-mirror (nothing changed): kprov {:.3} s; skopeo copy {:.3} s: kprov is {:.1}x faster; skopeo sync {:.3} s: kprov is {:.1}x faster (goal >= 5x)",
        k2.as_secs_f64(),
        s2.as_secs_f64(),
        s2.as_secs_f64() / k2.as_secs_f64(),
        y2.as_secs_f64(),
        y2.as_secs_f64() / k2.as_secs_f64()
    );
    drop(set);

    // 1 GiB layer, streamed from disk into the upstream, then mirrored.
    let big_dir = tempfile::tempdir().unwrap();
    let big = generate(
        &["registry.k8s.io/huge:1.0-single"],
        &SetSizes {
            base: 1024,
            unique: 1024 * 1024 * 1024,
            dir: Some(big_dir.path().to_path_buf()),
        },
    );
    rt.block_on(push_set(&up.addr, &big, None));
    let lb = list(dir.path(), &["registry.k8s.io/huge:1.0-single"]);
    let t0 = Instant::now();
    let rss = peak_rss_kib(kprov_mirror(&up.addr, &a.addr, &lb));
    println!(
        "1 GiB layer: kprov mirror peak RSS {:.1} MiB (goal < 100 MiB), {:.1} s ({:.0} MB/s)",
        rss as f64 / 1024.0,
        t0.elapsed().as_secs_f64(),
        big.total_bytes() as f64 / MB / t0.elapsed().as_secs_f64()
    );
}

//! Mirror benchmark (`cargo bench --bench mirror`): `docker-registry` instances on loopback
//! and a deterministic ~400 MB Kubernetes-like set (11 references, amd64 + arm64, OCI indexes
//! and Docker manifest lists, a shared base layer per arch).
//!
//! Prints, in one run, with wall time and peak RSS (`/usr/bin/time -v` when present, else
//! `/proc/PID/status` VmHWM while it runs) of every copier:
//! * full mirror: `kprov mirror` vs two skopeo peers, each into its own empty registry:
//!   `skopeo copy --all --preserve-digests` per reference (one process each) and
//!   `skopeo sync --all --preserve-digests --src yaml --dest docker` (every reference in one
//!   process) — goal: kprov ≥ 2× faster; MB/s of all; manifests checked byte-identical with
//!   skopeo and every target's stored blobs (layers, configs, manifests) equal to the source's;
//! * re-mirror with nothing changed, against both peers' second runs (goal: ≥ 5× faster);
//! * offline bundles and the asset check on the same set ([`bundle`]): export and import vs
//!   skopeo's `oci:` layout (goal ≥ 1.5× each), bundle bytes vs distinct blob bytes (goal ≤
//!   1.01×), `check assets` on a full catalogue vs as many `skopeo inspect --raw` calls;
//! * an image with a 1 GiB layer: kprov (goal < 100 MiB peak RSS) and `skopeo copy`.
//!
//! With `KPROV_BENCH_OCI_SPIKE=PATH` (the binary of `benches/oci-client-spike`, built on its
//! own: `cd benches/oci-client-spike && cargo build --release`) the oci-client based copier is
//! measured the same way into a fifth registry (issue 14: should kprov adopt oci-client?).
//!
//! Needs the peers (`bash tests/peers/install.sh`); `KPROV_SKIP_PEERS=1` skips.

mod bundle;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kprov_testkit::images::{generate, SetSizes, K8S_LIKE};
use kprov_testkit::registry::{push_set, Registry, RegistryOptions};
use kprov_testkit::{peers, skopeo, KprovBin};

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

const MB: f64 = 1e6;

fn list(dir: &std::path::Path, refs: &[&str]) -> std::path::PathBuf {
    let p = dir.join(format!("list-{}.txt", refs.len()));
    std::fs::write(&p, refs.join("\n")).unwrap();
    p
}

fn kprov_mirror(from: &str, to: &str, list: &std::path::Path) -> Command {
    let mut c = KPROV.command();
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

/// The oci-client spike (`benches/oci-client-spike`, its own Cargo project): measured only when
/// `KPROV_BENCH_OCI_SPIKE` names its built binary.
fn spike_bin() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(std::env::var_os("KPROV_BENCH_OCI_SPIKE")?);
    assert!(
        p.is_file(),
        "KPROV_BENCH_OCI_SPIKE={} is not a file: build it with `cd benches/oci-client-spike && cargo build --release`",
        p.display()
    );
    Some(p)
}

/// The spike copying LIST; `chunked` uses oci-client's chunked upload (else monolithic).
fn spike_mirror(
    bin: &std::path::Path,
    from: &str,
    to: &str,
    list: &std::path::Path,
    chunked: bool,
) -> Command {
    let mut c = Command::new(bin);
    c.args(["--from", from, "--to", to]).arg(list);
    if chunked {
        c.arg("--chunked");
    }
    if let Ok(n) = std::env::var("KPROV_BENCH_CONCURRENCY") {
        c.args(["--concurrency", &n]);
    }
    c
}

/// Wall time and peak RSS of one run of a copier.
#[derive(Clone, Copy, Default)]
struct Run {
    secs: f64,
    rss_kib: u64,
    /// HTTP requests the source and target registries served during the run.
    requests: usize,
}

impl Run {
    /// Sequential runs (skopeo copy, one process per reference): times add, peak is the max.
    fn then(self, o: Run) -> Run {
        Run {
            secs: self.secs + o.secs,
            rss_kib: self.rss_kib.max(o.rss_kib),
            requests: self.requests + o.requests,
        }
    }
    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Run `c` to success, measuring its wall time and peak RSS: `/usr/bin/time -v` when present,
/// else `/proc/PID/status` VmHWM polled while it runs.
fn measured(c: Command, what: &str) -> Run {
    let t = Instant::now();
    if std::path::Path::new("/usr/bin/time").exists() {
        let mut tv = Command::new("/usr/bin/time");
        tv.arg("-v").arg(c.get_program()).args(c.get_args());
        // `c`'s environment too (check assets finds its state store there)
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => tv.env(k, v),
                None => tv.env_remove(k),
            };
        }
        let out = tv.output().expect("time -v");
        let secs = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what} failed: {err}");
        let rss_kib = err
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok())
            .expect("time -v prints the maximum RSS");
        return Run {
            secs,
            rss_kib,
            requests: 0,
        };
    }
    let mut c = c;
    let mut child = c.stdout(Stdio::null()).spawn().expect(what);
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{what} failed: {st}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run {
        secs: t.elapsed().as_secs_f64(),
        rss_kib: peak,
        requests: 0,
    }
}

/// `f`'s run with the requests `from` and `to` served meanwhile (their access logs).
fn counted(from: &Registry, to: &Registry, f: impl FnOnce() -> Run) -> Run {
    let before = from.requests() + to.requests();
    let mut r = f();
    r.requests = from.requests() + to.requests() - before;
    r
}

/// `skopeo copy --all --preserve-digests` of reference `r` between two loopback registries.
fn skopeo_copy(from: &str, to: &str, r: &str) -> Command {
    bundle::skopeo_copy_to(format!("docker://{from}/{r}"), format!("docker://{to}/{r}"))
}

fn skopeo_all(from: &str, to: &str, refs: &[&str]) -> Run {
    refs.iter().fold(Run::default(), |acc, r| {
        acc.then(measured(
            skopeo_copy(from, to, r),
            &format!("skopeo copy {r}"),
        ))
    })
}

/// `skopeo sync --all --preserve-digests` of every reference in one process, from a YAML source
/// (`--src yaml`; without `--scoped` images land at `to/LAST-PATH-SEGMENT:TAG` — `--scoped`
/// would prefix the source's `host:port`, which is not a valid repository path).
fn skopeo_sync(from: &str, to: &str, refs: &[&str], dir: &std::path::Path) -> Run {
    let mut yaml = format!("{from}:\n  tls-verify: false\n  images:\n");
    for r in refs {
        let (repo, tag) = r.rsplit_once(':').expect("tag");
        yaml.push_str(&format!("    {repo}:\n      - \"{tag}\"\n"));
    }
    let file = dir.join("sync.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut c = Command::new("skopeo");
    c.args([
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
    .arg(to);
    measured(c, "skopeo sync")
}

/// Byte-identity at the storage level: the target registry holds exactly the blobs (layers,
/// configs, manifests and indexes, by SHA-256) the source holds — nothing missing, nothing
/// extra, so no manifest was re-serialised. Returns how many.
fn assert_same_blobs(up: &Registry, target: &Registry, who: &str) -> usize {
    let (a, b) = (up.committed_blobs(), target.committed_blobs());
    let missing: Vec<_> = a.difference(&b).collect();
    let extra: Vec<_> = b.difference(&a).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{who}: target storage differs from the source: missing {missing:?}, extra {extra:?}"
    );
    a.len()
}

fn line(who: &str, r: Run, total: f64, base: Option<Run>) -> String {
    let vs = base.map_or(String::new(), |k| {
        format!(": kprov is {:.2}x faster", r.secs / k.secs)
    });
    let reqs = match r.requests {
        0 => String::new(), // not counted for this run
        n => format!(", {n} HTTP requests"),
    };
    format!(
        "  {who}: {:.2} s ({:.0} MB/s), peak RSS {:.1} MiB{reqs}{vs}",
        r.secs,
        total / MB / r.secs,
        r.rss_mib()
    )
}

fn main() {
    let t = "bench mirror";
    if peers::require(t, "skopeo").is_none() {
        return;
    }
    let spike = spike_bin();
    let opts = RegistryOptions {
        access_log: true,
        ..Default::default()
    };
    let start = || Registry::start(t, opts.clone());
    let (Some(up), Some(a), Some(b), Some(c), Some(d)) =
        (start(), start(), start(), start(), start())
    else {
        return;
    };
    // The spike's chunked-upload mode gets a registry of its own.
    let e = spike.as_ref().and_then(|_| start());
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

    let k1 = counted(&up, &a, || {
        measured(kprov_mirror(&up.addr, &a.addr, &l), "kprov mirror")
    });
    let s1 = counted(&up, &b, || skopeo_all(&up.addr, &b.addr, K8S_LIKE));
    let y1 = counted(&up, &c, || {
        skopeo_sync(&up.addr, &c.addr, K8S_LIKE, dir.path())
    });
    let o1 = spike.as_ref().map(|bin| {
        counted(&up, &d, || {
            measured(
                spike_mirror(bin, &up.addr, &d.addr, &l, false),
                "oci-client spike",
            )
        })
    });
    let oc = spike.as_ref().zip(e.as_ref()).map(|(bin, e)| {
        counted(&up, e, || {
            measured(
                spike_mirror(bin, &up.addr, &e.addr, &l, true),
                "oci-client spike --chunked",
            )
        })
    });
    let n = skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", a.addr));
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", b.addr));
    // Without --scoped, skopeo sync names each image by its last path segment.
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| {
        format!("{}/{}", c.addr, r.rsplit('/').next().unwrap())
    });
    let mut blobs = assert_same_blobs(&up, &a, "kprov");
    assert_same_blobs(&up, &b, "skopeo copy");
    assert_same_blobs(&up, &c, "skopeo sync");
    if o1.is_some() {
        skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", d.addr));
        blobs = assert_same_blobs(&up, &d, "oci-client spike");
    }
    if let Some(e) = &e {
        skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", e.addr));
        assert_same_blobs(&up, e, "oci-client spike --chunked");
    }
    let copiers = if o1.is_some() {
        "all five"
    } else {
        "all three"
    };
    println!("full mirror ({n} manifests byte-identical and {blobs} stored blobs equal to the source in {copiers}):");
    println!("{}", line("kprov", k1, total, None));
    println!(
        "{} (goal >= 2x)",
        line(
            "skopeo copy --all --preserve-digests (one process per reference)",
            s1,
            total,
            Some(k1)
        )
    );
    println!(
        "{} (goal >= 2x)",
        line(
            "skopeo sync --all --preserve-digests (one process)",
            y1,
            total,
            Some(k1)
        )
    );
    match o1 {
        Some(o) => println!(
            "{}",
            line(
                "oci-client spike (monolithic streamed PUT)",
                o,
                total,
                Some(k1)
            )
        ),
        None => println!(
            "  oci-client spike: not run (KPROV_BENCH_OCI_SPIKE unset; see docs/benchmarks.md)"
        ),
    }
    if let Some(o) = oc {
        println!(
            "{}",
            line(
                "oci-client spike --chunked (PATCH per stream item)",
                o,
                total,
                Some(k1)
            )
        );
    }

    let k2 = counted(&up, &a, || {
        measured(kprov_mirror(&up.addr, &a.addr, &l), "kprov re-mirror")
    });
    let s2 = counted(&up, &b, || skopeo_all(&up.addr, &b.addr, K8S_LIKE));
    let y2 = counted(&up, &c, || {
        skopeo_sync(&up.addr, &c.addr, K8S_LIKE, dir.path())
    });
    let o2 = spike.as_ref().map(|bin| {
        counted(&up, &d, || {
            measured(
                spike_mirror(bin, &up.addr, &d.addr, &l, false),
                "oci-client spike again",
            )
        })
    });
    let req = |r: Run| format!("{:.3} s, {} requests", r.secs, r.requests);
    println!(
        "re-mirror (nothing changed): kprov {}; skopeo copy {}: kprov is {:.1}x faster; skopeo sync {}: kprov is {:.1}x faster (goal >= 5x){}",
        req(k2),
        req(s2),
        s2.secs / k2.secs,
        req(y2),
        y2.secs / k2.secs,
        o2.map_or(String::new(), |o| format!(
            "; oci-client spike {}: kprov is {:.1}x faster",
            req(o),
            o.secs / k2.secs
        ))
    );
    bundle::bundle_vs_skopeo(&up, &set, K8S_LIKE, &l, dir.path(), total, || {
        start().expect("docker-registry")
    });
    bundle::check_vs_skopeo_inspect(&start().expect("docker-registry"), dir.path());
    drop(set);

    // 1 GiB layer, streamed from disk into the upstream, then mirrored by each copier.
    let big_dir = tempfile::tempdir().unwrap();
    let huge = "registry.k8s.io/huge:1.0-single";
    let big = generate(
        &[huge],
        &SetSizes {
            base: 1024,
            unique: 1024 * 1024 * 1024,
            dir: Some(big_dir.path().to_path_buf()),
        },
    );
    rt.block_on(push_set(&up.addr, &big, None));
    let big_total = big.total_bytes() as f64;
    let lb = list(dir.path(), &[huge]);
    let kb = measured(
        kprov_mirror(&up.addr, &a.addr, &lb),
        "kprov mirror (1 GiB layer)",
    );
    let sb = measured(
        skopeo_copy(&up.addr, &b.addr, huge),
        "skopeo copy (1 GiB layer)",
    );
    let ob = spike.as_ref().map(|bin| {
        measured(
            spike_mirror(bin, &up.addr, &d.addr, &lb, false),
            "oci-client spike (1 GiB layer)",
        )
    });
    assert_same_blobs(&up, &a, "kprov (1 GiB layer)");
    assert_same_blobs(&up, &b, "skopeo copy (1 GiB layer)");
    if ob.is_some() {
        assert_same_blobs(&up, &d, "oci-client spike (1 GiB layer)");
    }
    println!("1 GiB layer (stored blobs equal to the source):");
    println!(
        "{} (goal < 100 MiB)",
        line("kprov mirror", kb, big_total, None)
    );
    println!("{}", line("skopeo copy", sb, big_total, Some(kb)));
    if let Some(o) = ob {
        println!("{}", line("oci-client spike", o, big_total, Some(kb)));
    }
}

//! Beyond the fixed corpus (`tests/cli/bad_input.rs`): valid inputs mutated at random — cluster
//! specs for `kprov create -f`, image lists for `kprov mirror --from-file`, bundle manifests
//! (`kprov-bundle.json`) for `kprov mirror --from-bundle` — must each be either accepted, and
//! then read back as the same thing, or refused with a message naming where (file:line:column,
//! the list's line, the bundle entry); never a panic, a hang, or an exit other than 0 or 2.
//!
//! Most cases call the library in-process (cheap); a sample runs the real binary for the exit
//! codes and the end-to-end round trip (`create -f` then `get cluster NAME -o yaml`; `mirror
//! --dry-run`). Every run prints its seed; `PROPTEST_RNG_SEED=N` repeats a run exactly and
//! `PROPTEST_CASES=N` changes the number of in-process cases. A failure prints the seed and the
//! shrunk case (its mutations and the input text).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_yaml::Value;

use kprov::cli::mirror::parse_image_list;
use kprov::mirror::bundle::{OpenBundle, INDEX_ENTRY};
use kprov::mirror::{ImageRef, MirrorError};
use kprov::spec::load::{parse_cluster, Documents, LoadedSpec};
use kprov::spec::{self, ClusterConfig, SpecErrors, Where};

use kprov_testkit::mutate::{self, Case, Text};

use crate::KPROV;

/// A case in-process longer than this is a hang: the test prints it and aborts.
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// A binary run longer than this is a hang (it is killed).
const RUN_LIMIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ running and bounding

/// The case now running in-process and since when, for the watchdog.
static CURRENT: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// Abort (after printing the case) if one in-process case runs longer than [`CASE_LIMIT`]:
/// a hang must fail the test, not stall CI until its global timeout.
fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(500));
            let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((since, what)) = cur.as_ref() {
                if since.elapsed() > CASE_LIMIT {
                    eprintln!("HANG: one case ran longer than {CASE_LIMIT:?}:\n{what}");
                    std::process::abort();
                }
            }
        });
    });
}

/// Run `f` on `input` under the watchdog.
fn bounded<T>(label: &str, input: &str, f: impl FnOnce() -> T) -> T {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((Instant::now(), format!("{label}:\n{input}")));
    let out = f();
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    out
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a number"))
    })
}

/// Run a property over `cases` cases of `strategy`, with a printed, repeatable seed.
fn check<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: Debug,
{
    start_watchdog();
    // CI runs one fixed seed, so it is deterministic; `PROPTEST_RNG_SEED=random` explores new
    // inputs (a random seed once found errors located one line past a truncated file: open).
    let seed = match std::env::var("PROPTEST_RNG_SEED").as_deref() {
        Ok("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        _ => env_num("PROPTEST_RNG_SEED").unwrap_or(20261206),
    };
    let started = Instant::now();
    eprintln!("{name}: seed {seed}, {cases} cases (repeat with PROPTEST_RNG_SEED={seed})");
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |v| test(v).map_err(TestCaseError::fail)) {
        panic!("{name}: {e}\nrepeat with: PROPTEST_RNG_SEED={seed} cargo test --locked --test cli input_props::{name}");
    }
    eprintln!(
        "{name}: {cases} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// In-process cases: `PROPTEST_CASES` or `default`.
fn cases(default: u32) -> u32 {
    env_num("PROPTEST_CASES")
        .map(|n| n as u32)
        .unwrap_or(default)
}

/// What a real `kprov` run did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run kprov in `dir` against the file store `dir/state`, bounded by [`RUN_LIMIT`].
fn kprov(dir: &Path, args: &[&str]) -> Run {
    let out = KPROV
        .isolated(&dir.join("state"))
        .current_dir(dir)
        .args(args)
        .timeout(RUN_LIMIT)
        .output()
        .expect("kprov runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The exit code must be 0 or 2, with no panic and no raw debug dump.
fn sane(r: &Run, what: &str) -> Result<i32, String> {
    let code = r.code.ok_or_else(|| {
        format!(
            "{what}: killed after {RUN_LIMIT:?} (a hang) or by a signal; stderr:\n{}",
            r.stderr
        )
    })?;
    if r.stderr.contains("panicked") || r.stderr.contains("RUST_BACKTRACE") {
        return Err(format!("{what}: panicked:\n{}", r.stderr));
    }
    if code != 0 && code != 2 {
        return Err(format!(
            "{what}: exit {code} (expected 0 or 2):\n{}",
            r.stderr
        ));
    }
    Ok(code)
}

/// A fresh directory per binary case (its own store), under one temporary root.
fn case_dir(root: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = root.join(format!(
        "case-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ------------------------------------------------------------------ cluster specs

const SPEC_FILE: &str = "props.yaml";

fn spec_bases() -> Vec<Vec<Value>> {
    ["zstack", "aws", "libvirt"]
        .iter()
        .map(|p| {
            let path = format!("{}/tests/data/props/{p}.yaml", env!("CARGO_MANIFEST_DIR"));
            mutate::documents(&std::fs::read_to_string(&path).expect("base spec"))
        })
        .collect()
}

/// What `kprov create -f` decides for a text (computed in-process).
#[derive(Debug)]
enum Decision {
    /// Stored: this is what `get cluster -o yaml` must show.
    Accepted(Box<ClusterConfig>),
    /// Refused: stderr must contain this location.
    Refused(String),
}

/// Every error names a real line of the file (or a field), the field, what and how to fix.
fn located(errs: &SpecErrors, text: &str) -> Result<String, String> {
    let lines = text.lines().count() + 1;
    if errs.0.is_empty() {
        return Err("an empty error list".into());
    }
    for e in &errs.0 {
        match &e.at {
            Where::File { file, line, column }
                if file == SPEC_FILE && (1..=lines).contains(line) && *column >= 1 => {}
            other => {
                return Err(format!(
                    "error located at {other:?} (file has {lines} lines): {e}"
                ))
            }
        }
        if e.field.is_empty() || e.problem.is_empty() || e.fix.is_empty() {
            return Err(format!("error without field, problem or fix: {e:?}"));
        }
    }
    Ok(errs.0[0].at.to_string())
}

/// The in-process twin of `create_from_file`: the same loader and validator, no store.
fn decide(text: &str) -> Result<Decision, String> {
    if text.trim().is_empty() {
        return Ok(Decision::Refused(SPEC_FILE.into()));
    }
    let Documents { clusters, groups } = match spec::load_documents(SPEC_FILE, text) {
        Ok(d) => d,
        Err(errs) => return located(&errs, text).map(Decision::Refused),
    };
    if clusters.len() != 1 {
        // No Cluster (groups for an existing one, absent from the empty store) or several.
        return Ok(Decision::Refused(SPEC_FILE.into()));
    }
    let (cluster, cluster_src) = clusters.into_iter().next().expect("one");
    let (groups, group_srcs) = groups.into_iter().unzip();
    let mut loaded = LoadedSpec {
        config: ClusterConfig { cluster, groups },
        cluster_src,
        group_srcs,
    };
    match spec::validate(&mut loaded) {
        Ok(()) => Ok(Decision::Accepted(Box::new(loaded.config))),
        Err(errs) => located(&errs, text).map(Decision::Refused),
    }
}

/// What is stored reads back, and validates, as the same spec.
fn round_trip(cfg: &ClusterConfig) -> Result<(), String> {
    let stored = cfg.to_yaml();
    match parse_cluster("stored.yaml", &stored) {
        Ok(back) if back == *cfg => Ok(()),
        Ok(back) => Err(format!(
            "stored spec reads back different:\n{stored}\n--- read back as:\n{}",
            back.to_yaml()
        )),
        Err(e) => Err(format!("stored spec does not read back:\n{stored}\n{e}")),
    }
}

fn spec_in_process(bases: &[Vec<Value>], c: &Case) -> Result<(String, Decision), String> {
    let text = mutate::build(bases, c);
    let d = bounded("spec", &text, || {
        let d = decide(&text)?;
        if let Decision::Accepted(cfg) = &d {
            round_trip(cfg)?;
        }
        Ok::<_, String>(d)
    })
    .map_err(|e| format!("{e}\n--- input:\n{text}"))?;
    Ok((text, d))
}

/// Documents of a YAML stream as values, without the store's `metadata.generation`.
fn without_generation(yaml: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(yaml) {
        let mut v = Value::deserialize(d).map_err(|e| format!("{e}: {yaml}"))?;
        if let Some(Value::Mapping(m)) = v.get_mut("metadata") {
            m.remove("generation");
        }
        docs.push(v);
    }
    Ok(docs)
}

fn spec_binary(root: &Path, text: &str, d: &Decision) -> Result<(), String> {
    let dir = case_dir(root);
    std::fs::write(dir.join(SPEC_FILE), text).unwrap();
    let r = kprov(&dir, &["create", "-f", SPEC_FILE]);
    let code = sane(&r, "create -f")?;
    match d {
        Decision::Refused(at) if code == 2 && r.stderr.contains(at.as_str()) => Ok(()),
        Decision::Refused(at) => Err(format!(
            "expected a refusal naming {at}, got exit {code}:\n{}",
            r.stderr
        )),
        Decision::Accepted(_) if code != 0 => {
            Err(format!("valid in-process, refused by kprov:\n{}", r.stderr))
        }
        Decision::Accepted(cfg) => {
            let g = kprov(&dir, &["get", "cluster", cfg.name(), "-o", "yaml"]);
            if sane(&g, "get cluster -o yaml")? != 0 {
                return Err(format!("get cluster failed:\n{}", g.stderr));
            }
            let (got, want) = (
                without_generation(&g.stdout)?,
                without_generation(&cfg.to_yaml())?,
            );
            if got != want {
                return Err(format!(
                    "get cluster -o yaml differs from the spec:\n{}\n--- expected:\n{}",
                    g.stdout,
                    cfg.to_yaml()
                ));
            }
            Ok(())
        }
    }
}

#[test]
fn mutated_specs_are_accepted_and_read_back_or_refused_with_a_location() {
    let bases = spec_bases();
    // The bases themselves are valid: otherwise "accepted" would never be exercised.
    for base in 0..bases.len() {
        let c = Case {
            base,
            tree: vec![],
            text: vec![],
        };
        match spec_in_process(&bases, &c) {
            Ok((_, Decision::Accepted(_))) => {}
            other => panic!("base spec {} is not valid: {other:?}", c.base),
        }
    }
    let accepted = std::cell::Cell::new(0u32);
    check(
        "specs in-process",
        cases(1500),
        mutate::case(bases.len()),
        |c| {
            let (_, d) = spec_in_process(&bases, &c)?;
            accepted.set(accepted.get() + matches!(d, Decision::Accepted(_)) as u32);
            Ok(())
        },
    );
    eprintln!("specs in-process: {} accepted", accepted.get());
    let root = tempfile::tempdir().unwrap();
    check("specs through kprov", 20, mutate::case(bases.len()), |c| {
        let (text, d) = spec_in_process(&bases, &c)?;
        spec_binary(root.path(), &text, &d).map_err(|e| format!("{e}\n--- input:\n{text}"))
    });
}

// ------------------------------------------------------------------ image lists

const LIST_FILE: &str = "images.txt";

const LIST_BASES: &[&str] = &[
    "# kprov mirror --from-file\nregistry.k8s.io/pause:3.10\nregistry.k8s.io/coredns/coredns:v1.11.3  # dns\n\n\
     docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    "quay.io/calico/node:v3.28.0\nghcr.io/flannel-io/flannel:v0.25.6\n127.0.0.1:5000/a/b/c:tag@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\n",
    "busybox\nlocalhost:5000/x\nlibrary/alpine:3.20\n",
];

/// One line of an image list: pieces of a reference, valid and not.
fn reference() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just(""),
        Just("registry.k8s.io/"),
        Just("127.0.0.1:5000/"),
        Just("localhost/"),
        Just("[::1]:5000/"),
        Just("HOST:99999/"),
        Just("/"),
    ];
    let path = prop_oneof![
        Just("pause"),
        Just("a/b/c"),
        Just(""),
        Just("x//y"),
        Just("UP/per")
    ];
    let tag = prop_oneof![
        Just(""),
        Just(":3.10"),
        Just(":"),
        Just(":a:b"),
        Just(":t@")
    ];
    let digest = prop_oneof![
        Just("".to_string()),
        Just(format!("@sha256:{}", "a".repeat(64))),
        Just("@sha256:short".to_string()),
        Just(format!("@sha512:{}", "b".repeat(128))),
        Just("@".to_string()),
    ];
    prop_oneof![
        4 => (host, path, tag, digest).prop_map(|(h, p, t, d)| format!("{h}{p}{t}{d}")),
        1 => mutate::any_text(),
    ]
}

/// A list case: base, replaced lines, textual mutations.
fn list_case() -> impl Strategy<Value = (usize, Vec<(usize, String)>, Vec<Text>)> {
    (
        0..LIST_BASES.len(),
        proptest::collection::vec((any::<usize>(), reference()), 0..3),
        prop_oneof![2 => Just(vec![]), 1 => proptest::collection::vec(mutate::text(), 1..3)],
    )
}

fn build_list(c: &(usize, Vec<(usize, String)>, Vec<Text>)) -> String {
    let mut lines: Vec<String> = LIST_BASES[c.0].lines().map(str::to_string).collect();
    for (i, r) in &c.1 {
        let n = lines.len();
        lines[i % n] = r.clone();
    }
    mutate::apply_text(lines.join("\n"), &c.2)
}

/// The list's references, or the line its refusal names.
fn list_in_process(text: &str) -> Result<Result<Vec<ImageRef>, String>, String> {
    type Decided = Result<Result<Vec<ImageRef>, String>, String>;
    bounded("image list", text, || -> Decided {
        let names = kprov::mirror::Naming {
            source: None,
            target: Some(mirror_assets()),
        };
        match parse_image_list(LIST_FILE, text, &names) {
            Ok(list) => {
                let mut refs = Vec::new();
                for r in &list {
                    let parsed = ImageRef::parse(r).map_err(|e| format!("accepted {r:?}: {e}"))?;
                    // What is accepted reads back the same from its printed form ...
                    let back = ImageRef::parse(&parsed.to_string())
                        .map_err(|e| format!("{parsed} (from {r:?}) does not parse back: {e}"))?;
                    if back != parsed {
                        return Err(format!("{r:?} → {parsed} → {back:?}"));
                    }
                    // ... and has a place in the mirror the copy will parse.
                    let to = kprov::assets::image_ref(r, &mirror_assets());
                    ImageRef::parse(&to).map_err(|e| format!("{r:?} maps to {to:?}: {e}"))?;
                    refs.push(parsed);
                }
                Ok(Ok(refs))
            }
            Err(MirrorError::Usage(m)) => {
                let at = match m.split_once(&format!("{LIST_FILE}:")) {
                    Some((_, rest)) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                        format!("{LIST_FILE}:{n}")
                    }
                    _ if m.contains("no image references") => LIST_FILE.to_string(),
                    _ => return Err(format!("refusal without the list's line: {m}")),
                };
                Ok(Err(at))
            }
            Err(e) => Err(format!("not a usage error: {e:?}")),
        }
    })
}

fn mirror_assets() -> spec::Assets {
    spec::Assets {
        container_registry: Some("127.0.0.1:5000".into()),
        ..Default::default()
    }
}

fn list_binary(
    root: &Path,
    text: &str,
    want: &Result<Vec<ImageRef>, String>,
) -> Result<(), String> {
    let dir = case_dir(root);
    std::fs::write(dir.join(LIST_FILE), text).unwrap();
    let r = kprov(
        &dir,
        &[
            "mirror",
            "--from-file",
            LIST_FILE,
            "--to",
            "127.0.0.1:5000",
            "--dry-run",
            "--no-progress",
        ],
    );
    let code = sane(&r, "mirror --from-file --dry-run")?;
    match want {
        Err(at) if code == 2 && r.stderr.contains(at.as_str()) => Ok(()),
        Err(at) => Err(format!(
            "expected a refusal naming {at}, got exit {code}:\n{}",
            r.stderr
        )),
        Ok(refs) if code == 0 => {
            let sources: Vec<ImageRef> = r
                .stdout
                .lines()
                .map(|l| ImageRef::parse(l.split(" -> ").next().unwrap_or("")))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("dry-run printed an unparsable source: {e}\n{}", r.stdout))?;
            if sources != *refs {
                return Err(format!("dry-run plan {sources:?} is not the list {refs:?}"));
            }
            Ok(())
        }
        Ok(_) => Err(format!(
            "valid in-process, refused by kprov (exit {code}):\n{}",
            r.stderr
        )),
    }
}

#[test]
fn mutated_image_lists_are_accepted_as_written_or_refused_with_their_line() {
    for b in LIST_BASES {
        assert!(
            matches!(list_in_process(b), Ok(Ok(_))),
            "base list {b:?} is not valid"
        );
    }
    check("image lists in-process", cases(2000), list_case(), |c| {
        let text = build_list(&c);
        list_in_process(&text)
            .map(|_| ())
            .map_err(|e| format!("{e}\n--- input:\n{text}"))
    });
    let root = tempfile::tempdir().unwrap();
    check("image lists through kprov", 30, list_case(), |c| {
        let text = build_list(&c);
        let want = list_in_process(&text)?;
        list_binary(root.path(), &text, &want).map_err(|e| format!("{e}\n--- input:\n{text}"))
    });
}

// ------------------------------------------------------------------ bundle manifests

/// Entries of a small valid bundle (all but its index) and the index, as JSON.
struct BundleBase {
    entries: Vec<(String, Vec<u8>)>,
    index: Value,
}

fn sha(bytes: &[u8]) -> String {
    kprov::mirror::sha256_digest(bytes)
}

fn bundle_base() -> BundleBase {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"not really gzip, but a blob all the same".to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let file = b"#!/bin/sh\necho kubeadm\n".to_vec();
    let file_sha = sha(&file).trim_start_matches("sha256:").to_string();
    let blob = |b: &[u8], mt: Option<&str>| {
        let mut v = serde_json::json!({"digest": sha(b), "size": b.len()});
        if let Some(mt) = mt {
            v["media_type"] = mt.into();
        }
        v
    };
    let multi = format!("quay.io/x/multi@sha256:{}", "c".repeat(64));
    let idx = serde_json::json!({
        "version": 1,
        "cluster": "props",
        "images": [
            {"upstream": "registry.k8s.io/pause:3.10",
             "manifest": blob(&manifest, Some("application/vnd.oci.image.manifest.v1+json")),
             "children": [], "blobs": [blob(&config, None), blob(&layer, None)]},
            {"upstream": multi,
             "manifest": blob(&index, Some("application/vnd.oci.image.index.v1+json")),
             "children": [blob(&manifest, None)], "blobs": [blob(&config, None), blob(&layer, None)]},
        ],
        "files": [{"name": "kubeadm", "upstream_url": "https://dl.k8s.io/release/v1.33.13/bin/linux/amd64/kubeadm",
                   "sha256": file_sha, "arch": "amd64", "size": file.len(),
                   "entry": "files/dl.k8s.io/release/v1.33.13/bin/linux/amd64/kubeadm"}],
    });
    let mut entries = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    for b in [&config, &layer, &manifest, &index] {
        entries.push((
            format!("blobs/sha256/{}", sha(b).trim_start_matches("sha256:")),
            b.clone(),
        ));
    }
    entries.push((
        "files/dl.k8s.io/release/v1.33.13/bin/linux/amd64/kubeadm".into(),
        file,
    ));
    BundleBase {
        entries,
        index: serde_yaml::to_value(&idx).unwrap(),
    }
}

/// Write a bundle tar: the (mutated) index first, then the base's entries.
fn write_bundle(path: &Path, index: &[u8], base: &BundleBase) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in std::iter::once((INDEX_ENTRY, index))
        .chain(base.entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
    {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
}

fn build_index(base: &BundleBase, c: &Case) -> String {
    let mut docs = vec![base.index.clone()];
    mutate::apply_tree(&mut docs, &c.tree);
    let json = docs
        .first()
        .map(|d| {
            serde_json::to_string_pretty(d)
                .unwrap_or_else(|e| format!("{{\"unrenderable\": \"{e}\"}}"))
        })
        .unwrap_or_default();
    mutate::apply_text(json, &c.text)
}

/// Accepted: the images and files; refused: the entry the message names.
type BundleDecision = Result<(Vec<String>, usize), String>;

fn bundle_in_process(path: &Path, index: &str) -> Result<BundleDecision, String> {
    bounded(
        "bundle index",
        index,
        || -> Result<BundleDecision, String> {
            match OpenBundle::check(path) {
                Ok(b) => {
                    let text = serde_json::to_string(&b.index).map_err(|e| e.to_string())?;
                    let back: kprov::mirror::bundle::BundleIndex = serde_json::from_str(&text)
                        .map_err(|e| format!("index does not read back: {e}"))?;
                    if back != b.index {
                        return Err(format!("index reads back different: {text}"));
                    }
                    for i in &b.index.images {
                        let to = kprov::assets::image_ref(&i.upstream, &mirror_assets());
                        ImageRef::parse(&to)
                            .map_err(|e| format!("{} maps to {to:?}: {e}", i.upstream))?;
                    }
                    Ok(Ok((
                        b.index.images.iter().map(|i| i.upstream.clone()).collect(),
                        b.index.files.len(),
                    )))
                }
                Err(MirrorError::Bundle {
                    bundle,
                    entry,
                    problem,
                }) => {
                    if bundle != path.display().to_string() || problem.is_empty() {
                        return Err(format!(
                            "refusal names bundle {bundle:?}, problem {problem:?}"
                        ));
                    }
                    Ok(Err(format!("entry {entry}")))
                }
                Err(e) => Err(format!("refused without naming the entry: {e:?}")),
            }
        },
    )
}

fn bundle_binary(dir: &Path, want: &BundleDecision) -> Result<(), String> {
    let r = kprov(
        dir,
        &[
            "mirror",
            "--from-bundle",
            "b.tar",
            "--to",
            "127.0.0.1:5000",
            "--files-to",
            "file:///nonexistent/kprov-props",
            "--dry-run",
            "--no-progress",
        ],
    );
    let code = sane(&r, "mirror --from-bundle --dry-run")?;
    match want {
        Err(at) if code == 2 && r.stderr.contains(at.as_str()) => Ok(()),
        Err(at) => Err(format!(
            "expected a refusal naming {at}, got exit {code}:\n{}",
            r.stderr
        )),
        Ok((images, files)) if code == 0 => {
            let lines: Vec<&str> = r.stdout.lines().collect();
            let printed: Vec<String> = lines
                .iter()
                .take(images.len())
                .map(|l| l.split(" -> ").next().unwrap_or("").to_string())
                .collect();
            if printed != *images || lines.len() != images.len() + files {
                return Err(format!(
                    "dry-run plan {lines:?} is not images {images:?} + {files} files"
                ));
            }
            Ok(())
        }
        Ok(_) => Err(format!(
            "valid in-process, refused by kprov (exit {code}):\n{}",
            r.stderr
        )),
    }
}

#[test]
fn mutated_bundle_manifests_are_accepted_as_written_or_refused_naming_the_entry() {
    let base = bundle_base();
    let root = tempfile::tempdir().unwrap();
    let plain = Case {
        base: 0,
        tree: vec![],
        text: vec![],
    };
    let path = root.path().join("b.tar");
    write_bundle(&path, build_index(&base, &plain).as_bytes(), &base);
    assert!(
        matches!(bundle_in_process(&path, ""), Ok(Ok(_))),
        "the base bundle is not valid"
    );
    check(
        "bundle manifests in-process",
        cases(1000),
        mutate::case(1),
        |c| {
            let index = build_index(&base, &c);
            write_bundle(&path, index.as_bytes(), &base);
            bundle_in_process(&path, &index)
                .map(|_| ())
                .map_err(|e| format!("{e}\n--- index:\n{index}"))
        },
    );
    check("bundle manifests through kprov", 20, mutate::case(1), |c| {
        let dir = case_dir(root.path());
        let path = dir.join("b.tar");
        let index = build_index(&base, &c);
        write_bundle(&path, index.as_bytes(), &base);
        let want = bundle_in_process(&path, &index)?;
        bundle_binary(&dir, &want).map_err(|e| format!("{e}\n--- index:\n{index}"))
    });
}

/// Regression: a file entry outside the bundle (`..`, absolute) was extracted by import to
/// `STAGING/ENTRY`, i.e. anywhere; it is refused when the bundle is opened.
#[test]
fn a_bundle_file_entry_outside_the_bundle_is_refused() {
    let base = bundle_base();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    for bad in ["../escape", "/etc/kprov-escape", "files/../../escape"] {
        let mut index = base.index.clone();
        index["files"][0]["entry"] = bad.into();
        let text = serde_json::to_string(&index).unwrap();
        write_bundle(&path, text.as_bytes(), &base);
        match OpenBundle::open(&path) {
            Err(MirrorError::Bundle { entry, problem, .. }) => {
                assert_eq!(entry, bad);
                assert!(
                    problem.contains("not a relative path inside the bundle"),
                    "{bad}: {problem}"
                );
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

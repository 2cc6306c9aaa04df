//! The bad-input corpus (`tests/data/invalid/`, format in its README.md): spec files, flags,
//! environment, state stores, mirrors and wrong cloud answers. Every case runs the real `kprov`
//! binary and must exit with its expected non-zero code, print a message naming where, what and
//! how to fix (the `.expect` lines; each case names its fix hint in a `fix:` line), never panic or
//! dump a raw error, never print a secret, leave the state store byte-identical (lock files
//! included) and create nothing in the cloud (asked of the ZStack simulator
//! or moto themselves, never of kprov).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kprov_testkit::aws;
use kprov_testkit::moto::Moto;
use kprov_zstack_sim::{FaultRule, Inventory, SimConfig, SimHandle, Simulator};

use crate::KPROV;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid")
}

/// `kprov` with a clean environment: nothing from the developer's own cloud or kprov setup.
fn kprov(state: &Path) -> Command {
    let mut c = KPROV.isolated_command(state);
    c.stdin(Stdio::null());
    c
}

/// Every file under `dir` (lock files included) with its bytes and mode; directories with their
/// mode (a regular file is its own snapshot).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    if dir.is_file() {
        let meta = std::fs::metadata(dir).unwrap();
        out.insert(
            dir.to_path_buf(),
            (std::fs::read(dir).unwrap(), meta.permissions().mode()),
        );
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                out.insert(p.clone(), (Vec::new(), meta.permissions().mode()));
                stack.push(p);
            } else {
                // Lock files too: a failed command must not leave one behind.
                out.insert(
                    p.clone(),
                    (std::fs::read(&p).unwrap(), meta.permissions().mode()),
                );
            }
        }
    }
    out
}

fn seed_cluster(state: &Path) {
    let out = kprov(state)
        .args([
            "create",
            "cluster",
            "existing",
            "--provider",
            "zstack",
            "--zstack-endpoint",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seeding the store failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a case expects: exit code, lines stderr must contain, the fix hints it must contain,
/// strings it must not contain.
struct Expect {
    exit: i32,
    lines: Vec<String>,
    fixes: Vec<String>,
    absent: Vec<String>,
}

fn parse_expect(text: &str) -> Expect {
    let mut e = Expect {
        exit: 2,
        lines: Vec::new(),
        fixes: Vec::new(),
        absent: Vec::new(),
    };
    for l in text.lines() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(code) = l.strip_prefix("exit: ") {
            e.exit = code.trim().parse().expect("`exit: N` takes a number");
        } else if let Some(s) = l.strip_prefix("absent: ") {
            e.absent.push(s.to_string());
        } else if let Some(s) = l.strip_prefix("fix: ") {
            e.fixes.push(s.to_string());
        } else {
            e.lines.push(l.to_string());
        }
    }
    e
}

/// Directives of a `.setup` file (see tests/data/invalid/README.md).
#[derive(Default)]
struct Setup {
    peer: Option<String>,
    sim_remove: Vec<(String, Option<(String, String)>)>,
    sim_faults: Vec<String>,
    store_is_file: bool,
    puts: Vec<(String, String)>,
    files: Vec<(String, String)>,
    copies: Vec<(String, String)>,
    kprov: Vec<String>,
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

fn parse_setup(text: &str) -> Setup {
    let mut s = Setup::default();
    for l in text.lines() {
        let l = l.trim_end();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (word, rest) = l.split_once(' ').unwrap_or((l, ""));
        match word {
            "peer" => s.peer = Some(rest.trim().to_string()),
            "sim-remove" => {
                let mut it = rest.split_whitespace();
                let list = it
                    .next()
                    .expect("sim-remove LIST [FIELD=VALUE]")
                    .to_string();
                let filter = it.next().map(|f| {
                    let (k, v) = f.split_once('=').expect("FIELD=VALUE");
                    (k.to_string(), v.to_string())
                });
                s.sim_remove.push((list, filter));
            }
            "sim-fault" => s.sim_faults.push(rest.to_string()),
            "store-is-file" => s.store_is_file = true,
            "put" | "file" => {
                let (name, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let entry = (name.to_string(), unescape(body));
                if word == "put" {
                    s.puts.push(entry)
                } else {
                    s.files.push(entry)
                }
            }
            "copy" => {
                let (src, dest) = rest.split_once(' ').expect("copy SRC DEST");
                s.copies.push((src.to_string(), dest.trim().to_string()));
            }
            "kprov" => s.kprov.push(rest.to_string()),
            other => panic!("unknown setup directive {other:?} in {l:?}"),
        }
    }
    s
}

/// The simulator's admin password: not a word that messages use, so the secret check means
/// something.
const SIM_PASSWORD: &str = "Sim-Admin-Pw-7f3a9c";

/// A ZStack simulator with the case's seed edits, in-process on 127.0.0.1.
fn start_sim(rt: &tokio::runtime::Runtime, setup: &Setup) -> SimHandle {
    let mut inv = serde_json::to_value(Inventory::default_seed()).unwrap();
    for (list, filter) in &setup.sim_remove {
        let arr = inv
            .get_mut(list)
            .and_then(|v| v.as_array_mut())
            .unwrap_or_else(|| panic!("sim-remove: the seed has no list {list:?}"));
        let before = arr.len();
        arr.retain(|item| match filter {
            None => false,
            Some((k, v)) => item.get(k).and_then(|x| x.as_str()) != Some(v.as_str()),
        });
        assert!(
            arr.len() < before,
            "sim-remove {list} {filter:?} removed nothing"
        );
    }
    let inventory: Inventory = serde_json::from_value(inv).unwrap();
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            inventory,
            job_delay: std::time::Duration::from_millis(10),
            admin_account: ("admin".into(), SIM_PASSWORD.into()),
            ..SimConfig::default()
        }))
        .expect("the ZStack simulator starts");
    for f in &setup.sim_faults {
        let rule: FaultRule =
            serde_json::from_str(f).expect("sim-fault takes a fault rule as JSON");
        sim.add_fault(rule).unwrap();
    }
    sim
}

/// Non-GET calls that change the simulated cloud (logins and session checks do not).
fn sim_mutations(sim: &SimHandle) -> Vec<String> {
    sim.stats()
        .calls
        .into_iter()
        .filter(|(k, n)| {
            *n > 0
                && !k.starts_with("GET ")
                && !k.contains("login")
                && !k.contains("session")
                && !k.contains("/_sim")
        })
        .map(|(k, n)| format!("{k} x{n}"))
        .collect()
}

/// What kprov left in moto: instances, key pairs, volumes, non-default VPCs, subnets and
/// security groups (read with the SDK, not through kprov).
fn moto_resources(rt: &tokio::runtime::Runtime, endpoint: &str) -> Vec<String> {
    let (c, _) = aws::clients(endpoint);
    rt.block_on(async {
        let mut left = Vec::new();
        let inst = c.describe_instances().send().await.unwrap();
        for i in inst.reservations().iter().flat_map(|r| r.instances()) {
            left.push(format!("instance {}", i.instance_id().unwrap_or_default()));
        }
        for k in c.describe_key_pairs().send().await.unwrap().key_pairs() {
            left.push(format!("key-pair {}", k.key_name().unwrap_or_default()));
        }
        for v in c.describe_vpcs().send().await.unwrap().vpcs() {
            if v.is_default() != Some(true) {
                left.push(format!("vpc {}", v.vpc_id().unwrap_or_default()));
            }
        }
        for s in c.describe_subnets().send().await.unwrap().subnets() {
            if s.default_for_az() != Some(true) {
                left.push(format!("subnet {}", s.subnet_id().unwrap_or_default()));
            }
        }
        for g in c
            .describe_security_groups()
            .send()
            .await
            .unwrap()
            .security_groups()
        {
            if g.group_name() != Some("default") {
                left.push(format!(
                    "security-group {}",
                    g.group_id().unwrap_or_default()
                ));
            }
        }
        for v in c.describe_volumes().send().await.unwrap().volumes() {
            left.push(format!("volume {}", v.volume_id().unwrap_or_default()));
        }
        left
    })
}

/// Bound and dropped: nothing listens there afterwards.
fn closed_port() -> u16 {
    kprov_testkit::free_port()
}

struct Peers {
    rt: tokio::runtime::Runtime,
    moto: Option<Option<Moto>>,
}

impl Peers {
    /// moto, started once; `None` when it is missing and `KPROV_SKIP_PEERS=1` (otherwise a
    /// missing moto panics naming `bash tests/peers/install.sh`).
    fn moto(&mut self) -> Option<&Moto> {
        self.moto
            .get_or_insert_with(|| Moto::start("the bad-input corpus's AWS cases"))
            .as_ref()
    }
}

struct Outcome {
    problems: Vec<String>,
    stderr: String,
    skipped: bool,
}

fn run_case(stem: &str, shared_store: &Path, peers: &mut Peers) -> Outcome {
    let corpus = corpus_dir();
    let read = |ext: &str| std::fs::read_to_string(corpus.join(format!("{stem}.{ext}"))).ok();
    let expect = parse_expect(&read("expect").unwrap());
    let setup = read("setup").map(|t| parse_setup(&t));
    let tmp = tempfile::tempdir().unwrap();
    let own_store;
    let store: PathBuf = match &setup {
        None => shared_store.to_path_buf(),
        Some(s) => {
            own_store = tmp.path().join("state");
            if s.store_is_file {
                std::fs::write(&own_store, b"not a directory\n").unwrap();
            } else {
                std::fs::create_dir(&own_store).unwrap();
            }
            own_store.clone()
        }
    };
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("DATA", corpus.display().to_string());
    vars.insert("TMP", tmp.path().display().to_string());
    vars.insert("STORE", store.display().to_string());
    vars.insert("CLOSED_PORT", closed_port().to_string());

    let mut sim = None;
    let mut moto_endpoint = None;
    let mut env: Vec<(String, Option<String>)> = Vec::new();
    if let Some(s) = &setup {
        match s.peer.as_deref() {
            None => {}
            Some("zstack") => {
                let h = start_sim(&peers.rt, s);
                vars.insert("ZSTACK", h.endpoint());
                env.push(("ZSTACK_ACCOUNT".into(), Some("admin".into())));
                env.push(("ZSTACK_PASSWORD".into(), Some(SIM_PASSWORD.into())));
                sim = Some(h);
            }
            Some("moto") => {
                let Some(m) = peers.moto() else {
                    return Outcome {
                        problems: Vec::new(),
                        stderr: String::new(),
                        skipped: true,
                    };
                };
                m.reset();
                let ep = m.endpoint();
                vars.insert("MOTO", ep.clone());
                let cfg = tmp.path().join("no-aws-config");
                std::fs::write(&cfg, "").unwrap();
                for (k, v) in [
                    ("AWS_ENDPOINT_URL", ep.clone()),
                    ("AWS_ACCESS_KEY_ID", aws::KEY_ID.to_string()),
                    ("AWS_SECRET_ACCESS_KEY", aws::SECRET.to_string()),
                    ("AWS_CONFIG_FILE", cfg.display().to_string()),
                    ("AWS_SHARED_CREDENTIALS_FILE", cfg.display().to_string()),
                ] {
                    env.push((k.into(), Some(v)));
                }
                moto_endpoint = Some(ep);
            }
            Some(other) => panic!("{stem}: unknown peer {other:?} (zstack or moto)"),
        }
    }
    let expand = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &vars {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    };
    if let Some(text) = read("env") {
        for l in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if let Some(k) = l.strip_prefix('-') {
                env.push((k.to_string(), None));
            } else {
                let (k, v) = l.split_once('=').expect("env lines are KEY=VALUE or -KEY");
                env.push((k.to_string(), Some(expand(v))));
            }
        }
    }
    let cmd_for = |args: &[String]| {
        let mut c = kprov(&store);
        c.current_dir(&corpus).args(args);
        for (k, v) in &env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    };
    if let Some(s) = &setup {
        for (name, body) in &s.files {
            std::fs::write(tmp.path().join(name), expand(body)).unwrap();
        }
        for (src, dest) in &s.copies {
            let text = std::fs::read_to_string(corpus.join(src))
                .unwrap_or_else(|e| panic!("{stem}: copy {src}: {e}"));
            std::fs::write(tmp.path().join(dest), expand(&text)).unwrap();
        }
        for line in &s.kprov {
            let args: Vec<String> = line.split_whitespace().map(expand).collect();
            // Setup commands run without the case's env (which may be what breaks kprov).
            let mut c = kprov(&store);
            c.current_dir(&corpus).args(&args);
            for (k, v) in &env {
                if k.starts_with("ZSTACK_") || k.starts_with("AWS_") {
                    if let Some(v) = v {
                        c.env(k, v);
                    }
                }
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{stem}: setup `kprov {line}` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (key, body) in &s.puts {
            let p = store.join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, expand(body)).unwrap();
        }
    }
    // what setup made in the cloud (a cluster to roll); the run must add nothing to it
    let (vms_before, attached_before) = match &sim {
        Some(h) => {
            h.reset_stats();
            let attached = h
                .pci_devices()
                .iter()
                .filter(|d| d.vm_instance_uuid.is_some())
                .count();
            (h.vm_count(), attached)
        }
        None => (0, 0),
    };

    let args: Vec<String> = if corpus.join(format!("{stem}.yaml")).exists() {
        vec!["create".into(), "-f".into(), format!("{stem}.yaml")]
    } else {
        read("args")
            .unwrap_or_else(|| panic!("{stem}: needs a .yaml or .args file"))
            .lines()
            .map(expand)
            .collect()
    };
    let before = snapshot(&store);
    let out = cmd_for(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut problems = Vec::new();
    if out.status.code() != Some(expect.exit) {
        problems.push(format!(
            "exit code {:?}, want {}",
            out.status.code(),
            expect.exit
        ));
    }
    for bad in ["panicked", "RUST_BACKTRACE", "Os { code", "Custom { kind"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr has {bad:?} (a panic or a raw debug dump)"));
        }
    }
    for want in &expect.lines {
        let want = expand(want);
        if !stderr.contains(&want) {
            problems.push(format!("stderr lacks {want:?}"));
        }
    }
    // How to fix it: the case names the hint it expects, and stderr must carry it.
    if expect.fixes.is_empty() {
        problems.push(format!(
            "{stem}.expect names no fix: add a `fix: TEXT` line with the hint kprov prints"
        ));
    }
    for fix in &expect.fixes {
        let fix = expand(fix);
        if !stderr.contains(&fix) {
            problems.push(format!("stderr lacks the fix {fix:?}"));
        }
    }
    // Secrets: the case's own `absent:` lines and every password/secret the run was given.
    let mut secrets: Vec<String> = expect.absent.iter().map(|s| expand(s)).collect();
    for (k, v) in &env {
        if let Some(v) = v {
            if (k.contains("PASSWORD") || k.contains("SECRET")) && v.len() >= 4 {
                secrets.push(v.clone());
            }
        }
    }
    for s in &secrets {
        if stderr.contains(s) || stdout.contains(s) {
            problems.push(format!("output shows the secret {s:?}"));
        }
    }
    if snapshot(&store) != before {
        problems.push("the state store changed".into());
    }
    if let Some(h) = &sim {
        if h.vm_count() != vms_before {
            problems.push(format!(
                "the simulator has {} VMs ({vms_before} after setup)",
                h.vm_count()
            ));
        }
        let attached = h
            .pci_devices()
            .iter()
            .filter(|d| d.vm_instance_uuid.is_some())
            .count();
        if attached != attached_before {
            problems.push(format!("{attached} PCI devices attached in the simulator"));
        }
        let m = sim_mutations(h);
        if !m.is_empty() {
            problems.push(format!("calls that change the simulated cloud: {m:?}"));
        }
    }
    if let Some(ep) = &moto_endpoint {
        let left = moto_resources(&peers.rt, ep);
        if !left.is_empty() {
            problems.push(format!("moto holds resources: {left:?}"));
        }
    }
    if let Some(h) = sim {
        peers.rt.block_on(h.shutdown());
    }
    Outcome {
        problems,
        stderr,
        skipped: false,
    }
}

#[test]
fn bad_input_corpus() {
    let corpus = corpus_dir();
    let only = std::env::var("KPROV_CASE").ok();
    let mut cases: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "expect"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    cases.sort();
    assert!(cases.len() >= 65, "corpus has only {} cases", cases.len());
    if let Some(o) = &only {
        cases.retain(|c| c.contains(o.as_str()));
    }
    let shared = tempfile::tempdir().unwrap();
    seed_cluster(shared.path());
    let mut peers = Peers {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        moto: None,
    };
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for stem in &cases {
        let o = run_case(stem, shared.path(), &mut peers);
        if o.skipped {
            skipped.push(stem.clone());
        } else if !o.problems.is_empty() {
            failures.push(format!(
                "{stem}: {}\n--- stderr:\n{}",
                o.problems.join("; "),
                o.stderr
            ));
        } else if only.is_some() {
            println!("{stem}:\n{}", o.stderr);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    if !skipped.is_empty() {
        eprintln!(
            "\n*** SKIPPED (KPROV_SKIP_PEERS=1, moto missing): {} cases did NOT run: {} ***\n",
            skipped.len(),
            skipped.join(", ")
        );
    }
    println!("{} bad-input cases passed", cases.len() - skipped.len());
}

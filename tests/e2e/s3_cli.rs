//! The `s3://` state store through the real `kprov` binary against a real moto server:
//! two `update --yes` racing on one bucket (exactly one proceeds, the other exits 3 naming the
//! holder), `--force-unlock` of a dead run's lease, and `kprov state copy` both ways.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kprov_testkit::aws;
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;
use kprov_testkit::raw_http;
use kprov_zstack_sim::{FaultRule, SimConfig, Simulator};

use crate::KPROV;

/// The simulator's admin password: distinctive, so the suite's leak scan
/// (tests/peers/leakscan.py) can search every output for it.
const ZSTACK_PASSWORD: &str = "S3cli-Zs-Pw-a83f20";

/// A simulator whose admin logs in with [`ZSTACK_PASSWORD`].
fn sim_config(job_delay_ms: u64) -> SimConfig {
    SimConfig {
        job_delay: Duration::from_millis(job_delay_ms),
        admin_account: ("admin".into(), ZSTACK_PASSWORD.into()),
        ..SimConfig::default()
    }
}

fn kprov(state: &str, moto: &Moto) -> Command {
    let mut c = KPROV.command();
    c.env("KPROV_STATE_STORE", state)
        .env("AWS_ENDPOINT_URL_S3", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", aws::SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("ZSTACK_ACCOUNT", "admin")
        .env("ZSTACK_PASSWORD", ZSTACK_PASSWORD)
        .env("NO_COLOR", "1")
        .env_remove("KPROV_CLUSTER_NAME")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_locks_between_processes_and_copies_clusters() {
    let Some(moto) = Moto::start("the s3 CLI test") else {
        return;
    };
    let (status, body) = raw_http::request(moto.port, "PUT", "/kprov-state", "").unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let sim = Simulator::start(sim_config(300)).await.unwrap();
    let s3 = "s3://kprov-state/team-a";

    let mut c = kprov(s3, &moto);
    c.args([
        "create",
        "cluster",
        "demo",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        &sim.endpoint(),
        "--arch",
        "arm64",
        "--node-count",
        "2",
    ]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));

    // Two writers at once: exactly one proceeds, the other exits 3 naming the holder.
    let spawn = || {
        kprov(s3, &moto)
            .args(["update", "--yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = tokio::task::spawn_blocking(move || {
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(3)),
        "codes {codes:?}\n{}\n{}",
        text(&a),
        text(&b)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    assert!(
        text(loser).contains("locked by") && text(loser).contains("pid"),
        "{}",
        text(loser)
    );
    assert_eq!(sim.vm_count(), 3);

    // A run killed while holding the lease: the next run is refused until --force-unlock.
    let rule = sim
        .add_fault(FaultRule::latency(60_000, 0).nth(2).times(1))
        .unwrap();
    let mut slow = kprov(s3, &moto)
        .args(["delete", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !sim.fault_log().iter().any(|e| e.rule_id == rule) {
        assert!(
            std::time::Instant::now() < until,
            "delete never reached the hanging call"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.clear_faults();
    slow.kill().unwrap();
    slow.wait().unwrap();
    let mut c = kprov(s3, &moto);
    c.args(["update", "--yes"]);
    let refused = run(c).await;
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    let mut c = kprov(s3, &moto);
    c.args(["update", "--yes", "--force-unlock"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Broke the lock"), "{}", text(&out));

    // state copy s3 → file and back into a second prefix.
    let dir = tempfile::tempdir().unwrap();
    let file = format!("file://{}", dir.path().display());
    let mut c = kprov(s3, &moto);
    c.args(["state", "copy", s3, &file]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("demo/config.yaml").is_file());
    assert!(
        dir.path().join("demo/pki/ca.key").is_file(),
        "secrets travel with the cluster"
    );
    assert!(!dir.path().join("demo/lock").exists(), "the lease does not");
    let mut c = kprov(&file, &moto);
    c.args(["get", "instancegroups", "demo"]);
    let out = run(c).await;
    assert!(
        out.status.success() && text(&out).contains("arm64"),
        "{}",
        text(&out)
    );
    let s3b = "s3://kprov-state/team-b";
    let mut c = kprov(&file, &moto);
    c.args(["state", "copy", &file, s3b]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut c = kprov(s3b, &moto);
    c.args(["get", "clusters", "-o", "json"]);
    let out = run(c).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(v[0]["name"], "demo", "{}", text(&out));
    // copying onto an existing cluster is refused
    let mut c = kprov(&file, &moto);
    c.args(["state", "copy", &file, s3b]);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let mut c = kprov(s3, &moto);
    c.args(["delete", "--yes"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sim.vm_count(), 0);
}

/// Read `key` below `s3://kprov-state/PREFIX` straight from moto (not through kprov or the
/// proxy), with the state crate's own S3 client.
async fn s3_object(moto: &Moto, prefix: &str, key: &str) -> Option<String> {
    use kprov_state::s3::{Credentials, S3Options, S3Store};
    use kprov_state::StateStore;
    let store = S3Store::open(
        &format!("s3://kprov-state/{prefix}"),
        S3Options {
            endpoint: Some(moto.endpoint()),
            force_path_style: true,
            region: Some("us-east-1".into()),
            credentials: Some(Credentials::new(
                "testing",
                aws::SECRET,
                None,
                None,
                "kprov-static",
            )),
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    store
        .get(key)
        .await
        .unwrap()
        .map(|o| String::from_utf8_lossy(&o.bytes).to_string())
}

/// The state store is cut (every S3 request dropped by the fault proxy) while `update --yes`
/// is creating VMs: the run fails with a message naming the store, the cloud work it did is not
/// lost, and once the store is back a re-run (after the dead run's short lease expired, without
/// --force-unlock) converges; config.yaml and the journal in the bucket are readable JSON/YAML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_cut_mid_apply_fails_clearly_and_a_rerun_converges() {
    let Some(moto) = Moto::start("the s3 state-fault test") else {
        return;
    };
    let proxy = FaultProxy::start(&moto);
    let (status, body) = raw_http::request(moto.port, "PUT", "/kprov-state", "").unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let sim = Simulator::start(sim_config(50)).await.unwrap();
    let s3 = "s3://kprov-state/cut";
    let via_proxy = |c: &mut Command| {
        c.env("AWS_ENDPOINT_URL_S3", proxy.endpoint());
    };
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    c.args([
        "create",
        "cluster",
        "demo",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        &sim.endpoint(),
        "--arch",
        "arm64",
        "--node-count",
        "2",
    ]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));

    // The last VM create waits 1.5 s in the cloud: the store is cut while it waits.
    let rule = sim
        .add_fault(
            FaultRule::latency(1500, 0)
                .method("POST")
                .path("^/zstack/v1/vm-instances$")
                .nth(3)
                .times(1),
        )
        .unwrap();
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    let child = c
        .args(["update", "--yes", "--lock-ttl", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !sim.fault_log().iter().any(|e| e.rule_id == rule) {
        assert!(
            std::time::Instant::now() < until,
            "update never reached the VM creates"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set_rules(r#"[{"service":"s3","mode":"drop"}]"#);
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    let t = text(&out);
    println!(
        "store cut mid-apply: update --yes exited {:?} after {took:?}:\n{}",
        out.status.code(),
        t.lines()
            .filter(|l| l.starts_with("error") || l.starts_with("Warning"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        t.contains("the cloud changes of cluster demo were made"),
        "the failure says what was done: {t}"
    );
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error:") && (t.contains("kprov-state") || t.contains("state store")),
        "the failure names the store: {t}"
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(proxy.state()["hits"]
        .as_object()
        .is_some_and(|h| !h.is_empty()));

    // The store is back.
    proxy.clear();
    sim.clear_faults();
    // The dead run's lease (3 s) has expired by now or expires soon: no --force-unlock needed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    c.args(["update", "--yes"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sim.vms().iter().filter(|v| v.state != "Destroyed").count(),
        3,
        "exactly the desired VMs"
    );
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    c.args(["update"]);
    let out = run(c).await;
    assert!(text(&out).contains("No changes needed"), "{}", text(&out));
    // The bucket is consistent: config.yaml parses and names the cluster; the journal of the
    // last run is JSON; no lock is left.
    let cfg = s3_object(&moto, "cut", "demo/config.yaml")
        .await
        .expect("config.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&cfg).expect("config.yaml is YAML");
    assert!(cfg.contains("demo"), "{doc:?}");
    // The cut run's journal (the re-run had nothing to do, so it wrote none) is still JSON.
    let journal = match s3_object(&moto, "cut", "demo/journal/current.json").await {
        Some(j) => j,
        None => s3_object(&moto, "cut", "demo/journal/last.json")
            .await
            .expect("a journal"),
    };
    let j: serde_json::Value = serde_json::from_str(&journal).expect("journal is JSON");
    assert!(j["tasks"].is_object(), "{j}");
    assert!(
        s3_object(&moto, "cut", "demo/lock").await.is_none(),
        "the re-run released its lock"
    );
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    c.args(["get", "cluster", "demo", "-o", "yaml"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut c = kprov(s3, &moto);
    via_proxy(&mut c);
    c.args(["delete", "--yes"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sim.vm_count(), 0);
}

/// A run killed while holding the lease: while the lease is live the next run exits 3 naming
/// the holder; once it expired (short --lock-ttl) the next run takes it over by itself, without
/// --force-unlock, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_of_a_killed_run_is_taken_over_without_force_unlock() {
    let Some(moto) = Moto::start("the s3 lease-expiry test") else {
        return;
    };
    let (status, body) = raw_http::request(moto.port, "PUT", "/kprov-state", "").unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let sim = Simulator::start(sim_config(50)).await.unwrap();
    let s3 = "s3://kprov-state/lease";
    let mut c = kprov(s3, &moto);
    c.args([
        "create",
        "cluster",
        "demo",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        &sim.endpoint(),
        "--arch",
        "arm64",
        "--node-count",
        "1",
    ]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    let rule = sim.add_fault(FaultRule::hang(false).nth(3)).unwrap();
    let mut dead = kprov(s3, &moto)
        .args(["update", "--yes", "--lock-ttl", "6"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !sim.fault_log().iter().any(|e| e.rule_id == rule) {
        assert!(std::time::Instant::now() < until, "update never hung");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dead.kill().unwrap(); // SIGKILL: the lease stays until it expires
    dead.wait().unwrap();
    let killed_at = std::time::Instant::now();
    sim.clear_faults();
    // Renewed at most 2 s before the kill, so it is live for ≥ 4 s more.
    let mut c = kprov(s3, &moto);
    c.args(["update", "--yes"]);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("locked by") && text(&out).contains("update cluster demo --yes"),
        "{}",
        text(&out)
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(4),
        "the refusal came while the lease was surely live"
    );
    tokio::time::sleep(
        Duration::from_secs(6).saturating_sub(killed_at.elapsed()) + Duration::from_millis(500),
    )
    .await;
    let mut c = kprov(s3, &moto);
    c.args(["update", "--yes"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("took over the expired lock"),
        "{}",
        text(&out)
    );
    assert_eq!(
        sim.vms().iter().filter(|v| v.state != "Destroyed").count(),
        2
    );
    let mut c = kprov(s3, &moto);
    c.args(["delete", "--yes"]);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sim.vm_count(), 0);
}

//! The `s3://` state store through the real `kprov` binary against a real moto server:
//! two `update --yes` racing on one bucket (exactly one proceeds, the other exits 3 naming the
//! holder), `--force-unlock` of a dead run's lease, and `kprov state copy` both ways.

#[path = "support_aws/mod.rs"]
mod support_aws;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kprov_zstack_sim::{FaultRule, SimConfig, Simulator};
use support_aws::{http, Moto};

fn kprov(state: &str, moto: &Moto) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kprov"));
    c.env("KPROV_STATE_STORE", state)
        .env("AWS_ENDPOINT_URL_S3", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("ZSTACK_ACCOUNT", "admin")
        .env("ZSTACK_PASSWORD", "password")
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
    let (status, body) = http(moto.port, "PUT", "/kprov-state", "").unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let sim = Simulator::start(SimConfig {
        job_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
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

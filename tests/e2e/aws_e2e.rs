//! The whole job against a real moto server (EC2 + ELBv2), driving the real `kprov` binary with a
//! `file://` state store: create → update --yes → no-op → delete; kill -9 at many API calls and
//! re-run; lost responses and throttling through the fault proxy; plan-time errors. The cloud is
//! always checked with describe-* calls through the SDK, never through kprov's own view.
#![cfg(feature = "aws")]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kprov_testkit::aws::{self, clients, duplicates, live_instances, tagged_resources, SSH_KEY};
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;

use crate::KPROV;

macro_rules! moto {
    () => {
        match Moto::start("the AWS end-to-end tests") {
            Some(m) => m,
            None => return,
        }
    };
}

/// 1 amd64 control plane, 2 arm64 workers, 1 arm64 GPU worker (g5g.xlarge: NVIDIA T4G),
/// on moto's built-in Amazon Linux 2023 images picked by owner + name.
pub(crate) fn spec(name: &str, region: &str) -> String {
    format!(
        r#"apiVersion: kprov.io/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  provider:
    aws:
      region: {region}
      amiOwner: amazon
      amiName: "al2023-ami-2023*-kernel-6.1-*"
      apiAccess: ["198.51.100.0/24"]
      sshAccess: ["203.0.113.0/24"]
  kubernetesVersion: 1.33.13
  sshPublicKey: "{SSH_KEY}"
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: control-plane}}
spec: {{role: control-plane, count: 1, arch: amd64, flavor: t3.medium, rootDisk: 30Gi}}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: arm}}
spec: {{role: node, count: 2, arch: arm64, flavor: m6g.large}}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: gpu}}
spec: {{role: node, count: 1, arch: arm64, flavor: g5g.xlarge, gpu: {{count: 1, vendor: nvidia}}}}
"#
    )
}

pub(crate) struct Env {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Env {
    pub(crate) fn new(endpoint: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        // Empty (not missing) files, so the SDK neither reads the user's nor warns.
        std::fs::write(dir.path().join("no-aws-config"), "").unwrap();
        std::fs::write(dir.path().join("no-aws-credentials"), "").unwrap();
        Env {
            dir,
            endpoint: endpoint.into(),
        }
    }

    fn state(&self) -> String {
        format!("file://{}", self.dir.path().join("state").display())
    }

    /// A kprov command pointed at `endpoint` with dummy credentials; nothing from the user's own
    /// AWS setup (profiles, instance metadata) can leak in.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = KPROV.command();
        c.arg("--state")
            .arg(self.state())
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", aws::SECRET)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .env("NO_COLOR", "1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("KPROV_CLUSTER_NAME")
            .env_remove("KPROV_STATE_STORE")
            .stdin(Stdio::null());
        c
    }

    async fn run_cmd(mut c: Command) -> Output {
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        Self::run_cmd(self.cmd(args)).await
    }

    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let text = text(&out);
        assert!(out.status.success(), "kprov {args:?} failed:\n{text}");
        text
    }

    pub(crate) async fn create(&self, yaml: &str) {
        let f = self.dir.path().join("cluster.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["create", "-f", f.to_str().unwrap()]).await;
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The live instances of `cluster`, checked: exactly 4 with the right types and arches, and no
/// instance-id tag twice.
async fn assert_cluster(moto: &str, cluster: &str, when: &str) {
    let (ec2, _) = clients(moto);
    let live = live_instances(&ec2, cluster).await;
    assert!(
        duplicates(&live).is_empty(),
        "{when}: duplicate instances {:?}\n{live:?}",
        duplicates(&live)
    );
    assert_eq!(live.len(), 4, "{when}: {live:?}");
    let mut shapes: Vec<(String, String)> =
        live.iter().map(|i| (i.2.clone(), i.3.clone())).collect();
    shapes.sort();
    assert_eq!(
        shapes,
        vec![
            ("g5g.xlarge".into(), "arm64".into()),
            ("m6g.large".into(), "arm64".into()),
            ("m6g.large".into(), "arm64".into()),
            ("t3.medium".into(), "x86_64".into())
        ],
        "{when}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_mixed_arch_and_gpu_cluster() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let env = Env::new(&proxy.endpoint());
    env.create(&spec("demo", "us-east-1")).await;
    assert_eq!(proxy.total(), 0, "create writes the spec only");

    let plan = env.ok(&["update", "cluster", "demo"]).await;
    assert!(
        plan.contains("Will create resources:") && plan.contains("demo-gpu-0"),
        "{plan}"
    );
    assert!(plan.contains("Must specify --yes"), "{plan}");
    assert!(
        live_instances(&clients(&moto.endpoint()).0, "demo")
            .await
            .is_empty(),
        "a plan changes nothing"
    );

    proxy.clear();
    let applied = env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert!(applied.contains("4 created"), "{applied}");
    let create_calls = proxy.state();
    assert_cluster(&moto.endpoint(), "demo", "after apply").await;
    let (ec2, _) = clients(&moto.endpoint());
    // User-data went through base64 intact (moto round-trips it).
    let live = live_instances(&ec2, "demo").await;
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(&live[0].0)
        .attribute(kprov_providers::aws::aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    assert!(
        attr.user_data()
            .and_then(|u| u.value())
            .is_some_and(|v| !v.is_empty()),
        "user-data set"
    );

    proxy.clear();
    let noop = env.ok(&["update", "--yes"]).await;
    assert!(noop.contains("No changes needed"), "{noop}");
    let noop_calls = proxy.total();
    assert!(
        noop_calls <= 3,
        "a no-op update costs a constant few calls, took {noop_calls}: {}",
        proxy.state()
    );

    // A rolling update on AWS: the arm group's instance type changes; `update` keeps the
    // instances (NeedsUpdate), `rolling-update --cloudonly` makes each replacement (its
    // ClientToken from slot + spec) before the old instance goes.
    let resized = spec("demo", "us-east-1").replace("flavor: m6g.large", "flavor: m6g.xlarge");
    let f = env.dir.path().join("resized.yaml");
    std::fs::write(&f, resized).unwrap();
    env.ok(&["create", "-f", f.to_str().unwrap(), "--replace"])
        .await;
    let kept = env.ok(&["update", "cluster", "demo", "--yes"]).await;
    assert!(kept.contains("2 instances need a rolling update"), "{kept}");
    assert_eq!(live_instances(&ec2, "demo").await.len(), 4);
    let rolled = env
        .ok(&["rolling-update", "cluster", "demo", "--yes", "--cloudonly"])
        .await;
    assert!(
        rolled.contains("2 replacement(s) created, 2 old instance(s) deleted"),
        "{rolled}"
    );
    let live = live_instances(&ec2, "demo").await;
    assert!(duplicates(&live).is_empty(), "{live:?}");
    let mut types: Vec<&str> = live.iter().map(|i| i.2.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        ["g5g.xlarge", "m6g.xlarge", "m6g.xlarge", "t3.medium"],
        "{live:?}"
    );
    let noop = env.ok(&["update", "cluster", "demo"]).await;
    assert!(
        noop.contains("No changes needed") && !noop.contains("rolling update"),
        "{noop}"
    );

    let preview = env.ok(&["delete", "cluster", "demo"]).await;
    assert!(
        preview.contains("Must specify --yes")
            && preview.contains("Instance")
            && preview.contains("Network"),
        "{preview}"
    );
    assert_eq!(
        live_instances(&ec2, "demo").await.len(),
        4,
        "delete without --yes deletes nothing"
    );

    proxy.clear();
    let deleted = env.ok(&["delete", "cluster", "demo", "--yes"]).await;
    assert!(deleted.contains("Deleted cluster demo"), "{deleted}");
    let delete_calls = proxy.total();
    let left = tagged_resources(&moto.endpoint(), "demo").await;
    assert!(left.is_empty(), "left after delete: {left:?}");
    println!(
        "API calls: create {} ({}), no-op update {noop_calls}, delete {delete_calls}",
        create_calls["total"], create_calls["counts"]
    );
}

/// Wait until rule 0 of the proxy fired (kprov is then blocked in that call) and kill -9 it.
pub(crate) async fn kill_when_fired(proxy: &FaultProxy, child: &mut std::process::Child) -> bool {
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        if proxy.fired(0) > 0 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("kprov neither reached the fault nor exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_many_api_calls_then_rerun_converges() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let mut killed_at = Vec::new();
    let mut n = 1;
    while n < 200 {
        moto.reset();
        proxy.clear();
        // A new cluster name per point: a call held by the proxy never reaches moto (the rule
        // drops it), and even if one did it could not touch the next point's cluster.
        let name = format!("k{n}");
        let env = Env::new(&proxy.endpoint());
        env.create(&spec(&name, "us-east-1")).await;
        // The nth AWS call of this run hangs, then is dropped unanswered; kprov is killed while
        // it waits.
        proxy.set_rules(&format!(
            r#"[{{"skip":{},"times":1,"delay_ms":30000,"mode":"drop"}}]"#,
            n - 1
        ));
        let mut child = env
            .cmd(&["update", "cluster", &name, "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let killed = kill_when_fired(&proxy, &mut child).await;
        let calls = proxy.total();
        proxy.clear();
        if !killed {
            println!(
                "update --yes finished before API call {n} ({calls} calls): every point covered"
            );
            break;
        }
        killed_at.push(n);
        let rerun = env
            .ok(&["update", "cluster", &name, "--yes", "--force-unlock"])
            .await;
        assert!(
            rerun.contains("up to date"),
            "after kill at call {n}: {rerun}"
        );
        assert_cluster(&moto.endpoint(), &name, &format!("after kill at call {n}")).await;
        let again = env.ok(&["update", "cluster", &name]).await;
        assert!(
            again.contains("No changes needed"),
            "after kill at call {n}: {again}"
        );
        env.ok(&["delete", "cluster", &name, "--yes"]).await;
        let left = tagged_resources(&moto.endpoint(), &name).await;
        assert!(
            left.is_empty(),
            "after kill at call {n}, delete left {left:?}"
        );
        n += if n < 24 { 1 } else { 3 };
    }
    println!(
        "KILL POINTS aws update: {} distinct API calls {killed_at:?}",
        killed_at.len()
    );
    assert!(
        killed_at.len() >= 15,
        "only {} kill points reached: {killed_at:?}",
        killed_at.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_and_throttling_bursts_still_converge_without_duplicates() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let env = Env::new(&proxy.endpoint());
    env.create(&spec("demo", "us-east-1")).await;
    proxy.set_rules(
        r#"[
        {"service":"ec2","action":"RunInstances","mode":"after","status":500,"code":"InternalError","times":1},
        {"service":"ec2","action":"RunInstances","mode":"after_drop","times":1},
        {"service":"ec2","action":"RunInstances","status":503,"code":"RequestLimitExceeded","times":3},
        {"service":"ec2","action":"CreateSubnet","status":503,"code":"RequestLimitExceeded","times":2},
        {"service":"ec2","action":"DescribeInstances","status":503,"code":"RequestLimitExceeded","times":2},
        {"service":"ec2","action":"CreateSecurityGroup","mode":"after","status":503,"code":"ServiceUnavailable","times":1}
    ]"#,
    );
    let out = env.ok(&["update", "--yes"]).await;
    assert!(out.contains("4 created"), "{out}");
    assert!(out.contains("calls retried"), "the executor retried: {out}");
    let st = proxy.state();
    for (i, rule) in st["rules"].as_array().unwrap().iter().enumerate() {
        assert!(
            rule["fired"].as_u64().unwrap_or(0) > 0,
            "rule {i} fired: {rule}"
        );
    }
    proxy.clear();
    assert_cluster(&moto.endpoint(), "demo", "after faults").await;
    let (ec2, _) = clients(&moto.endpoint());
    let sgs = ec2
        .describe_security_groups()
        .filters(
            kprov_providers::aws::aws_sdk_ec2::types::Filter::builder()
                .name("tag:kprov.io/cluster")
                .values("demo")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        sgs.security_groups().len(),
        1,
        "a CreateSecurityGroup whose answer was lost is not repeated"
    );
    env.ok(&["delete", "--yes"]).await;
    let left = tagged_resources(&moto.endpoint(), "demo").await;
    assert!(left.is_empty(), "{left:?}");
}

/// `update --yes` of `yaml` must exit 2 mentioning every `needles`, with nothing tagged after.
async fn refused(moto: &Moto, yaml: &str, needles: &[&str]) {
    let env = Env::new(&moto.endpoint());
    env.create(yaml).await;
    let out = env.run(&["update", "--yes"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    for n in needles {
        assert!(t.contains(n), "{n:?} in:\n{t}");
    }
    let left = tagged_resources(&moto.endpoint(), "bad").await;
    assert!(
        left.is_empty(),
        "nothing may exist after a refused plan: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_exists() {
    let moto = moto!();
    let base = spec("bad", "us-east-1");
    // Instance type of the other architecture.
    let arch = base.replace(
        "arch: amd64, flavor: t3.medium",
        "arch: amd64, flavor: m6g.large",
    );
    refused(
        &moto,
        &arch,
        &[
            "m6g.large runs arm64",
            "arch is amd64",
            "nothing was changed",
        ],
    )
    .await;
    // An explicit AMI of the other architecture.
    let (ec2, _) = clients(&moto.endpoint());
    let arm_ami = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            kprov_providers::aws::aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("al2023-ami-2023*-kernel-6.1-arm64")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let ami = base.replace(
        "flavor: t3.medium, rootDisk: 30Gi",
        &format!("flavor: t3.medium, image: {arm_ami}"),
    );
    refused(&moto, &ami, &[&arm_ami, "is arm64", "arch is amd64"]).await;
    // A GPU group on a type without GPUs.
    let gpu = base.replace(
        "arch: arm64, flavor: g5g.xlarge",
        "arch: amd64, flavor: m5.large",
    );
    refused(&moto, &gpu, &["m5.large has no GPUs", "g4dn.xlarge"]).await;
    // User-data that cannot fit EC2's 16 KiB even gzipped: calico and every add-on on the first
    // control plane. Refused by the plan, before anything exists.
    let big = base.replace(
        "  kubernetesVersion: 1.33.13",
        "  networking: {cni: calico}\n  addons: {dashboard: {}, metallb: {addressPools: [{name: lb, addresses: [172.20.9.0/28]}]}, nfsProvisioner: {server: nfs.example, path: /srv/nfs}}\n  kubernetesVersion: 1.33.13",
    );
    refused(&moto, &big, &["16384", "user-data", "nothing was changed"]).await;
    // A region that looks right but does not exist.
    refused(
        &moto,
        &spec("bad", "us-east-7"),
        &["\"us-east-7\"", "us-east-1"],
    )
    .await;
    // A region that is not even shaped like one is refused by `create`.
    let env = Env::new(&moto.endpoint());
    let f = env.dir.path().join("typo.yaml");
    std::fs::write(&f, spec("bad", "us-esat-1")).unwrap();
    let out = env.run(&["create", "-f", f.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("region"), "{}", text(&out));
    // No credentials anywhere.
    let env = Env::new(&moto.endpoint());
    env.create(&base).await;
    let mut c = env.cmd(&["update", "--yes"]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = Env::run_cmd(c).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("no AWS credentials") && t.contains("AWS_ACCESS_KEY_ID"),
        "{t}"
    );
    assert!(!t.contains(aws::SECRET), "no secret echoed: {t}");
    let left = tagged_resources(&moto.endpoint(), "bad").await;
    assert!(left.is_empty(), "{left:?}");
}

/// An HA cluster (3 control planes behind a network load balancer + 1 worker), so that delete
/// has every kind of resource to remove: instances, NLB, target group, SG, key pair, subnets,
/// route table, IGW, VPC.
fn ha_spec(name: &str) -> String {
    spec(name, "us-east-1")
        .replace(
            "role: control-plane, count: 1, arch: amd64, flavor: t3.medium, rootDisk: 30Gi",
            "role: control-plane, count: 3, arch: amd64, flavor: t3.medium",
        )
        .replace(
            "role: node, count: 2, arch: arm64, flavor: m6g.large",
            "role: node, count: 1, arch: arm64, flavor: m6g.large",
        )
        .replace(
            "---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {name: gpu}\nspec: {role: node, count: 1, arch: arm64, flavor: g5g.xlarge, gpu: {count: 1, vendor: nvidia}}\n",
            "",
        )
}

/// Run two `update --yes` at once: exactly one proceeds, the other exits 3 naming the holder.
async fn two_updates_at_once(env: &Env, name: &str) {
    let spawn = || {
        env.cmd(&["update", "cluster", name, "--yes"])
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
        text(loser).contains("locked by")
            && text(loser).contains(&format!("update cluster {name} --yes"))
            && text(loser).contains("pid"),
        "{}",
        text(loser)
    );
}

/// kill -9 of `delete cluster --yes` at many distinct AWS calls (the nth call from the start of
/// the delete never gets an answer; kprov is killed while it waits), then a re-run of the
/// delete: no instance, NLB, target group, SG, key pair, subnet, route table, IGW or VPC tagged
/// with the cluster is left, read from moto with describe-* calls. The first cluster is made by
/// two racing `update --yes` (exactly one proceeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_many_delete_calls_then_rerun_leaves_nothing_tagged() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let mut killed_at = Vec::new();
    let mut n = 1;
    loop {
        assert!(n < 400, "delete never finished before its nth call");
        moto.reset();
        proxy.clear();
        let name = format!("d{n}");
        let env = Env::new(&proxy.endpoint());
        env.create(&ha_spec(&name)).await;
        if n == 1 {
            two_updates_at_once(&env, &name).await;
        } else {
            env.ok(&["update", "cluster", &name, "--yes"]).await;
        }
        let (_, elb) = clients(&moto.endpoint());
        assert_eq!(
            elb.describe_load_balancers()
                .send()
                .await
                .unwrap()
                .load_balancers()
                .len(),
            1,
            "the HA cluster has its NLB"
        );
        proxy.clear();
        proxy.set_rules(&format!(
            r#"[{{"skip":{},"times":1,"mode":"hang"}}]"#,
            n - 1
        ));
        let mut child = env
            .cmd(&["delete", "cluster", &name, "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let killed = kill_when_fired(&proxy, &mut child).await;
        let calls = proxy.total();
        proxy.clear();
        let left = tagged_resources(&moto.endpoint(), &name).await;
        if !killed {
            assert!(left.is_empty(), "complete delete left {left:?}");
            println!(
                "delete --yes finished before API call {n} ({calls} calls): every point covered"
            );
            break;
        }
        killed_at.push(n);
        let rerun = env
            .ok(&["delete", "cluster", &name, "--yes", "--force-unlock"])
            .await;
        assert!(
            rerun.contains("Deleted cluster"),
            "after kill at delete call {n}: {rerun}"
        );
        let left = tagged_resources(&moto.endpoint(), &name).await;
        assert!(
            left.is_empty(),
            "after kill at delete call {n}, the re-run left {left:?}"
        );
        n += if n < 10 { 1 } else { 10 };
    }
    println!(
        "KILL POINTS aws delete: {} distinct API calls {killed_at:?}",
        killed_at.len()
    );
    assert!(
        killed_at.len() >= 12,
        "only {} delete kill points reached: {killed_at:?}",
        killed_at.len()
    );
}

/// The per-call timeout of the hang tests: short, but well above what a warm moto needs.
const HANG_TIMEOUT: &str = "2s";

/// moto builds some answers (regions, instance types, images) on first use, which can take
/// longer than [`HANG_TIMEOUT`] on a loaded machine: ask once before the timing matters.
async fn warm_up(moto: &Moto) {
    let (ec2, _) = clients(&moto.endpoint());
    ec2.describe_regions()
        .all_regions(true)
        .send()
        .await
        .unwrap();
    ec2.describe_instance_types().send().await.unwrap();
    ec2.describe_images().owners("amazon").send().await.unwrap();
}

/// Calls that never answer (the proxy holds them open, silent): with a 2 s per-call timeout
/// kprov abandons a hung DescribeInstances (retried) and a RunInstances that moto performed but
/// whose answer never came (found again by tag, not run twice); the apply finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_calls_are_abandoned_after_the_call_timeout_and_apply_finishes() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let env = Env::new(&proxy.endpoint());
    env.create(&spec("demo", "us-east-1")).await;
    warm_up(&moto).await;
    proxy.set_rules(
        r#"[
        {"service":"ec2","action":"DescribeInstances","mode":"hang","times":1},
        {"service":"ec2","action":"RunInstances","skip":1,"mode":"after_hang","times":1}
    ]"#,
    );
    let started = Instant::now();
    let mut c = env.cmd(&["update", "--yes"]);
    c.env("KPROV_AWS_CALL_TIMEOUT", HANG_TIMEOUT);
    let out = Env::run_cmd(c).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("4 created"), "{t}");
    let st = proxy.state();
    for (i, rule) in st["rules"].as_array().unwrap().iter().enumerate() {
        assert_eq!(rule["fired"].as_u64(), Some(1), "rule {i} fired: {rule}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    proxy.clear();
    assert_cluster(&moto.endpoint(), "demo", "after hung calls").await;
}

/// RunInstances hangs every time: the apply fails within a bounded time with a message naming
/// the call and the endpoint; nothing is half-made that a re-run cannot finish, and the re-run
/// converges without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_always_hangs_fails_in_bounded_time_naming_call_and_endpoint() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let env = Env::new(&proxy.endpoint());
    env.create(&spec("demo", "us-east-1")).await;
    warm_up(&moto).await;
    proxy.set_rules(r#"[{"service":"ec2","action":"RunInstances","mode":"hang"}]"#);
    let started = Instant::now();
    let mut c = env.cmd(&["update", "--yes"]);
    c.env("KPROV_AWS_CALL_TIMEOUT", HANG_TIMEOUT);
    let out = Env::run_cmd(c).await;
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!(
        "a call that always hangs: update --yes failed after {took:?}:\n{}",
        err.lines()
            .skip_while(|l| !l.starts_with("error:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(120), "took {took:?}: {err}");
    for needle in [
        "RunInstances",
        proxy.endpoint().as_str(),
        "no answer within",
        "demo-control-plane-0",
    ] {
        assert!(err.contains(needle), "{needle:?} in:\n{err}");
    }
    proxy.clear();
    let live = live_instances(&clients(&moto.endpoint()).0, "demo").await;
    assert!(live.is_empty(), "no instance was launched: {live:?}");
    let again = env.ok(&["update", "--yes"]).await;
    assert!(again.contains("4 created"), "{again}");
    assert_cluster(&moto.endpoint(), "demo", "after the hang cleared").await;
}

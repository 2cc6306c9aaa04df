//! The AWS adapter against a real moto server (EC2 + ELBv2), with the fault proxy in front where
//! a test needs faults. Each test starts its own moto on a free loopback port (moto keeps all
//! state in one process), and results are checked with describe-* calls through the SDK.
#![cfg(feature = "aws")]

use std::collections::BTreeMap;
use std::time::Duration;

use kprov_providers::aws::{AwsCloud, AwsConfig, Credentials};
use kprov_providers::{
    instance_id, Arch, Cloud, CloudError, GpuMode, GpuRequest, InstanceRequest, MachineSize,
    NetworkRequest, Resource, ResourceKind, Role, TAG_CLUSTER, TAG_INDEX, TAG_INSTANCE_GROUP,
    TAG_INSTANCE_ID, TAG_ROLE, TAG_SPEC_HASH,
};
use kprov_testkit::aws::{clients, duplicates, live_instances, tagged_resources, SSH_KEY};
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;

macro_rules! moto {
    () => {
        match Moto::start("the AWS adapter tests") {
            Some(m) => m,
            None => return,
        }
    };
}

fn config(endpoint: &str) -> AwsConfig {
    let mut c = AwsConfig::new("us-east-1");
    c.endpoint_url = Some(endpoint.into());
    c.credentials = Some(Credentials::new(
        "testing",
        "testing",
        None,
        None,
        "kprov-static",
    ));
    c.ami_owner = Some("amazon".into());
    c.ami_name = Some("al2023-ami-2023*-kernel-6.1-*".into());
    c.ssh_public_key = Some(SSH_KEY.into());
    c.ssh_access = vec!["203.0.113.0/24".into()];
    c.api_access = vec!["198.51.100.0/24".into()];
    c
}

fn req(
    cluster: &str,
    ig: &str,
    index: u32,
    role: Role,
    arch: Arch,
    size: MachineSize,
) -> InstanceRequest {
    let id = instance_id(cluster, ig, index);
    InstanceRequest {
        cluster: cluster.into(),
        name: format!("{cluster}-{ig}-{index}"),
        id: id.clone(),
        instance_group: ig.into(),
        index,
        role,
        arch,
        size,
        image: None,
        root_disk_gib: Some(20),
        gpu: None,
        network_id: None,
        user_data: b"#cloud-config\nhostname: x\n".to_vec(),
        tags: BTreeMap::from([
            (TAG_CLUSTER.to_string(), cluster.to_string()),
            (TAG_INSTANCE_GROUP.to_string(), ig.to_string()),
            (TAG_ROLE.to_string(), role.as_str().to_string()),
            (TAG_INDEX.to_string(), index.to_string()),
            (TAG_SPEC_HASH.to_string(), "abc123".to_string()),
            (TAG_INSTANCE_ID.to_string(), id),
        ]),
    }
}

fn net(cluster: &str) -> NetworkRequest {
    NetworkRequest {
        cluster: cluster.into(),
        tags: BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.to_string())]),
    }
}

/// What the executor's `delete_all` does: kind by kind, retrying retryable errors, in passes.
async fn delete_everything(cloud: &AwsCloud, cluster: &str) -> usize {
    let mut deleted = 0;
    for _pass in 0..40 {
        let found = cloud.list_resources(cluster).await.unwrap();
        let Some(kind) = found.iter().map(|r| r.kind).min() else {
            return deleted;
        };
        let batch: Vec<&Resource> = found.iter().filter(|r| r.kind == kind).collect();
        for r in batch {
            for attempt in 0..20 {
                match cloud.delete_resource(r).await {
                    Ok(()) => {
                        deleted += 1;
                        break;
                    }
                    Err(e) if e.is_retryable() && attempt < 19 => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("delete {} {}: {e}", r.kind, r.id),
                }
            }
        }
    }
    panic!(
        "resources left after 40 passes: {:?}",
        cloud.list_resources(cluster).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_instances_are_idempotent_and_delete_leaves_nothing() {
    let moto = moto!();
    let cloud = AwsCloud::new(config(&moto.endpoint())).await.unwrap();
    let n1 = cloud.ensure_network(&net("c1")).await.unwrap();
    let calls = cloud.stats().total();
    let n2 = cloud.ensure_network(&net("c1")).await.unwrap();
    assert_eq!(n1, n2, "a second ensure_network finds the same network");
    assert!(
        n1.owned && n1.cidr.as_deref() == Some("172.20.0.0/16"),
        "{n1:?}"
    );
    let second = cloud.stats().total() - calls;
    let again = cloud.stats().by_action();
    assert!(
        !again.contains_key("CreateVpc") || again["CreateVpc"] == 1,
        "{again:?}"
    );
    println!("ensure_network: first {calls} calls, second {second} calls");

    let (ec2, _) = clients(&moto.endpoint());
    let subnets = ec2
        .describe_subnets()
        .filters(support_aws_filter("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(subnets.subnets().len(), 3, "one subnet per zone");
    assert!(subnets
        .subnets()
        .iter()
        .all(|s| s.map_public_ip_on_launch() == Some(true)));
    let sgs = ec2
        .describe_security_groups()
        .filters(support_aws_filter("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(sgs.security_groups().len(), 1);
    let perms = sgs.security_groups()[0].ip_permissions();
    let has = |port: i32, cidr: &str| {
        perms.iter().any(|p| {
            p.from_port() == Some(port) && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr))
        })
    };
    assert!(
        has(6443, "198.51.100.0/24") && has(6443, "172.20.0.0/16") && has(22, "203.0.113.0/24"),
        "{perms:?}"
    );
    assert!(
        perms
            .iter()
            .any(|p| p.ip_protocol() == Some("-1") && !p.user_id_group_pairs().is_empty()),
        "node-to-node rule: {perms:?}"
    );

    let cp = req(
        "c1",
        "control-plane",
        0,
        Role::ControlPlane,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    let arm = req(
        "c1",
        "nodes",
        0,
        Role::Node,
        Arch::Arm64,
        MachineSize::Flavor("m6g.large".into()),
    );
    assert!(cloud
        .check(&[cp.clone(), arm.clone()])
        .await
        .unwrap()
        .is_empty());
    let a = cloud.create_instance(&cp).await.unwrap();
    let b = cloud.create_instance(&cp).await.unwrap();
    assert_eq!(a.id, b.id, "create_instance is idempotent by req.id");
    assert!(a.address.is_some(), "the private address is known at once");
    let w = cloud.create_instance(&arm).await.unwrap();
    let live = live_instances(&ec2, "c1").await;
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(
        live.iter()
            .any(|i| i.0 == w.id && i.2 == "m6g.large" && i.3 == "arm64"),
        "{live:?}"
    );
    let listed = cloud.list_instances("c1").await.unwrap();
    assert_eq!(listed.len(), 2);
    // Root volume: tagged, sized and deleted with the instance.
    let vols = ec2
        .describe_volumes()
        .filters(support_aws_filter("c1"))
        .send()
        .await
        .unwrap();
    assert!(
        !vols.volumes().is_empty(),
        "volumes are tagged through TagSpecifications"
    );
    let inst = ec2
        .describe_instances()
        .instance_ids(&a.id)
        .send()
        .await
        .unwrap();
    let i = &inst.reservations()[0].instances()[0];
    assert!(i
        .block_device_mappings()
        .iter()
        .all(|m| m.ebs().and_then(|e| e.delete_on_termination()) == Some(true)));
    assert_eq!(i.key_name(), Some("kprov-c1"));

    let kinds: Vec<ResourceKind> = cloud
        .list_resources("c1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.kind)
        .collect();
    for k in [
        ResourceKind::Instance,
        ResourceKind::SecurityGroup,
        ResourceKind::KeyPair,
        ResourceKind::Subnet,
        ResourceKind::RouteTable,
        ResourceKind::Gateway,
        ResourceKind::Network,
    ] {
        assert!(kinds.contains(&k), "{k} listed: {kinds:?}");
    }
    let n = delete_everything(&cloud, "c1").await;
    assert!(n >= 10, "deleted {n}");
    let left = tagged_resources(&moto.endpoint(), "c1").await;
    assert!(left.is_empty(), "left after delete: {left:?}");
}

fn support_aws_filter(cluster: &str) -> kprov_providers::aws::aws_sdk_ec2::types::Filter {
    kprov_providers::aws::aws_sdk_ec2::types::Filter::builder()
        .name("tag:kprov.io/cluster")
        .values(cluster)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_run_instances_responses_never_duplicate() {
    let moto = moto!();
    let proxy = FaultProxy::start(&moto);
    let cloud = AwsCloud::new(config(&proxy.endpoint())).await.unwrap();
    cloud.ensure_network(&net("c2")).await.unwrap();
    let (ec2, _) = clients(&moto.endpoint());

    // Forwarded to moto, then a 500: the instance exists but the answer was an error.
    proxy.set_rules(r#"[{"service":"ec2","action":"RunInstances","mode":"after","status":500,"code":"InternalError","times":1}]"#);
    let r0 = req(
        "c2",
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    let got = cloud
        .create_instance(&r0)
        .await
        .expect("found after the lost answer");
    assert_eq!(proxy.fired(0), 1);
    // Forwarded, then the connection closed without an answer.
    proxy.set_rules(r#"[{"service":"ec2","action":"RunInstances","mode":"after_drop","times":1}]"#);
    let r1 = req(
        "c2",
        "nodes",
        1,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    let got1 = cloud
        .create_instance(&r1)
        .await
        .expect("found after the dropped connection");
    assert_eq!(proxy.fired(0), 1);
    // Throttled (not applied): retryable, and the retry creates exactly one.
    proxy.set_rules(r#"[{"service":"ec2","action":"RunInstances","status":503,"code":"RequestLimitExceeded","times":1}]"#);
    let r2 = req(
        "c2",
        "nodes",
        2,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    let err = cloud.create_instance(&r2).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::Transient { code, .. } if code == "RequestLimitExceeded"),
        "{err}"
    );
    let got2 = cloud.create_instance(&r2).await.unwrap();
    // Reads are retried by the SDK through a throttling burst.
    proxy.set_rules(r#"[{"service":"ec2","action":"DescribeInstances","status":503,"code":"RequestLimitExceeded","times":2}]"#);
    assert_eq!(cloud.list_instances("c2").await.unwrap().len(), 3);
    proxy.clear();

    let live = live_instances(&ec2, "c2").await;
    assert_eq!(live.len(), 3, "exactly one instance per request: {live:?}");
    assert!(duplicates(&live).is_empty());
    let ids: Vec<&str> = live.iter().map(|i| i.0.as_str()).collect();
    for g in [&got, &got1, &got2] {
        assert!(ids.contains(&g.id.as_str()));
    }
    // The SDK never retried RunInstances itself: 3 faults + 3 successful sends... at most one
    // RunInstances per attempt.
    let runs = cloud
        .stats()
        .by_action()
        .get("RunInstances")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        runs, 4,
        "one RunInstances per create attempt (after, after_drop, throttled + retry)"
    );
    delete_everything(&cloud, "c2").await;
    assert!(tagged_resources(&moto.endpoint(), "c2").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_arch_gpu_type_and_region_problems() {
    let moto = moto!();
    let cloud = AwsCloud::new(config(&moto.endpoint())).await.unwrap();
    let mismatch = req(
        "c3",
        "arm",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("m6g.large".into()),
    );
    let mut gpu = req(
        "c3",
        "gpu",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("m5.large".into()),
    );
    gpu.gpu = Some(GpuRequest {
        count: 1,
        vendor: Some("nvidia".into()),
        model: None,
        mode: GpuMode::Passthrough,
    });
    let mut ok_gpu = req(
        "c3",
        "t4",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("g4dn.xlarge".into()),
    );
    ok_gpu.gpu = Some(GpuRequest {
        count: 1,
        vendor: Some("nvidia".into()),
        model: Some("T4".into()),
        mode: GpuMode::Passthrough,
    });
    let mut arm_gpu = req(
        "c3",
        "t4g",
        0,
        Role::Node,
        Arch::Arm64,
        MachineSize::Flavor("g5g.xlarge".into()),
    );
    arm_gpu.gpu = Some(GpuRequest {
        count: 1,
        vendor: None,
        model: None,
        mode: GpuMode::Passthrough,
    });
    let unknown = req(
        "c3",
        "bogus",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("m99.huge".into()),
    );
    let mut wrong_ami = req(
        "c3",
        "ami",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    wrong_ami.image = Some("al2023-ami-2023*-kernel-6.1-arm64".into());
    let shape = req(
        "c3",
        "shape",
        0,
        Role::Node,
        Arch::Arm64,
        MachineSize::Shape {
            cpus: 2,
            memory_mib: 4096,
        },
    );

    let problems = cloud
        .check(&[mismatch, gpu, ok_gpu, arm_gpu, unknown, wrong_ami, shape])
        .await
        .unwrap();
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {} / {}", p.instance_group, p.problem, p.fix))
        .collect();
    println!("{}", text.join("\n"));
    let about = |ig: &str| {
        text.iter()
            .filter(|t| t.starts_with(&format!("{ig}:")))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        about("arm")
            .iter()
            .any(|t| t.contains("m6g.large runs arm64") && t.contains("amd64")),
        "{text:?}"
    );
    assert!(
        about("gpu")
            .iter()
            .any(|t| t.contains("m5.large has no GPUs")),
        "{text:?}"
    );
    assert!(
        about("t4").is_empty() && about("t4g").is_empty(),
        "GPU types with the GPUs pass: {text:?}"
    );
    assert!(
        about("bogus")
            .iter()
            .any(|t| t.contains("m99.huge") && t.contains("does not exist")),
        "{text:?}"
    );
    assert!(
        about("ami")
            .iter()
            .any(|t| t.contains("no x86_64 image") || t.contains("is arm64")),
        "{text:?}"
    );
    assert!(
        about("shape").is_empty(),
        "a 2 vCPU / 4 GiB arm64 type exists: {text:?}"
    );
    assert_eq!(problems.len(), 4, "{text:?}");

    let mut typo = config(&moto.endpoint());
    typo.region = "us-east-7".into();
    let e = AwsCloud::new(typo)
        .await
        .err()
        .expect("an unknown region is refused when connecting");
    let msg = e.to_string();
    assert!(
        !e.is_retryable() && msg.contains("\"us-east-7\"") && msg.contains("us-east-1"),
        "{msg}"
    );
    let (ec2, _) = clients(&moto.endpoint());
    assert!(
        live_instances(&ec2, "c3").await.is_empty(),
        "check creates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_pick_the_smallest_current_generation_type() {
    let moto = moto!();
    let cloud = AwsCloud::new(config(&moto.endpoint())).await.unwrap();
    cloud.ensure_network(&net("c4")).await.unwrap();
    let amd = req(
        "c4",
        "small",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Shape {
            cpus: 2,
            memory_mib: 4096,
        },
    );
    let arm = req(
        "c4",
        "big",
        0,
        Role::Node,
        Arch::Arm64,
        MachineSize::Shape {
            cpus: 4,
            memory_mib: 16384,
        },
    );
    assert!(cloud
        .check(&[amd.clone(), arm.clone()])
        .await
        .unwrap()
        .is_empty());
    cloud.create_instance(&amd).await.unwrap();
    cloud.create_instance(&arm).await.unwrap();
    let (ec2, _) = clients(&moto.endpoint());
    let live = live_instances(&ec2, "c4").await;
    let ty = |ig_id: &str| {
        live.iter()
            .find(|i| i.1 == ig_id)
            .map(|i| i.2.clone())
            .unwrap()
    };
    println!(
        "2 vCPU/4 GiB amd64 -> {}, 4 vCPU/16 GiB arm64 -> {}",
        ty(&amd.id),
        ty(&arm.id)
    );
    assert_eq!(
        ty(&amd.id),
        "t8i.medium",
        "burstable before compute, newest generation first"
    );
    assert_eq!(
        ty(&arm.id),
        "m9g.xlarge",
        "newest general-purpose generation of that size in moto's catalog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_control_plane_gets_a_network_load_balancer() {
    let moto = moto!();
    let mut cfg = config(&moto.endpoint());
    cfg.control_plane_count = 3;
    let cloud = AwsCloud::new(cfg).await.unwrap();
    cloud.ensure_network(&net("c5")).await.unwrap();
    for i in 0..3 {
        cloud
            .create_instance(&req(
                "c5",
                "control-plane",
                i,
                Role::ControlPlane,
                Arch::Amd64,
                MachineSize::Flavor("t3.medium".into()),
            ))
            .await
            .unwrap();
    }
    let ep = cloud
        .api_endpoint("c5")
        .await
        .unwrap()
        .expect("an NLB endpoint");
    assert!(
        ep.contains("elb.amazonaws.com") && ep.ends_with(":6443"),
        "{ep}"
    );
    let (_, elb) = clients(&moto.endpoint());
    let tg = elb
        .describe_target_groups()
        .names("kprov-c5-api")
        .send()
        .await
        .unwrap();
    let arn = tg.target_groups()[0].target_group_arn().unwrap();
    let health = elb
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.target_health_descriptions().len(),
        3,
        "every control plane is a target"
    );
    // A run that died between creating a control plane and registering it: the next plan
    // shows the repair, and applying it registers the instance again.
    let victim = health.target_health_descriptions()[0]
        .target()
        .unwrap()
        .clone();
    elb.deregister_targets()
        .target_group_arn(arn)
        .targets(victim.clone())
        .send()
        .await
        .unwrap();
    let live = cloud.list_instances("c5").await.unwrap();
    let repairs = cloud.pending_repairs("c5", &live).await.unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert!(repairs[0].contains(victim.id().unwrap()), "{repairs:?}");
    cloud.repair("c5", &live).await.unwrap();
    assert!(cloud.pending_repairs("c5", &live).await.unwrap().is_empty());
    let health = elb
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(health.target_health_descriptions().len(), 3, "repaired");
    let lbs = elb
        .describe_load_balancers()
        .names("kprov-c5-api")
        .send()
        .await
        .unwrap();
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lbs.load_balancers()[0].load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    assert_eq!(listeners.listeners()[0].port(), Some(6443));
    // A second ensure_network creates nothing new.
    cloud.ensure_network(&net("c5")).await.unwrap();
    assert_eq!(
        cloud.stats().by_action().get("CreateLoadBalancer").copied(),
        Some(1)
    );
    delete_everything(&cloud, "c5").await;
    let left = tagged_resources(&moto.endpoint(), "c5").await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_vpc_is_reused_and_never_deleted() {
    let moto = moto!();
    let (ec2, _) = clients(&moto.endpoint());
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.9.1.0/24")
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    let mut cfg = config(&moto.endpoint());
    cfg.vpc_id = Some(vpc.clone());
    cfg.subnet_ids = vec![subnet.clone()];
    let cloud = AwsCloud::new(cfg).await.unwrap();
    let n = cloud.ensure_network(&net("c6")).await.unwrap();
    assert!(!n.owned && n.id == vpc, "{n:?}");
    let inst = cloud
        .create_instance(&req(
            "c6",
            "nodes",
            0,
            Role::Node,
            Arch::Amd64,
            MachineSize::Flavor("t3.medium".into()),
        ))
        .await
        .unwrap();
    let d = ec2
        .describe_instances()
        .instance_ids(&inst.id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.reservations()[0].instances()[0].subnet_id(),
        Some(subnet.as_str())
    );
    delete_everything(&cloud, "c6").await;
    assert!(tagged_resources(&moto.endpoint(), "c6").await.is_empty());
    let still = ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert_eq!(still.vpcs().len(), 1, "the user's VPC stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_user_data_is_refused_before_any_call() {
    let moto = moto!();
    let cloud = AwsCloud::new(config(&moto.endpoint())).await.unwrap();
    cloud.ensure_network(&net("c7")).await.unwrap();
    let mut r = req(
        "c7",
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("t3.medium".into()),
    );
    r.user_data = vec![b'#'; 16 * 1024 + 1];
    let e = cloud.create_instance(&r).await.unwrap_err();
    assert!(!e.is_retryable() && e.to_string().contains("16384"), "{e}");
    assert_eq!(
        cloud.stats().by_action().get("RunInstances"),
        None,
        "moto would have accepted it"
    );
}

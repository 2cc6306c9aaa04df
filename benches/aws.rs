//! Benchmark: the AWS adapter creating 100 instances against moto, through the fault proxy,
//! which counts every request.
//!
//! Prints the API calls of a create (kprov's executor: network + 100 instances), of a no-op
//! update (list + diff) and of a delete (`delete_all`), with wall times, and the wall time of a
//! sequential loop of the same calls made directly with the SDK (same network step, then one
//! tag lookup + one `RunInstances` per instance), as a ratio. moto is one single-threaded Python
//! process, so parallelism buys little here; the figure that matters is calls per instance.
//!
//! Run: `cargo bench --bench aws` (needs moto: `bash tests/peers/install.sh`; with
//! `KPROV_SKIP_PEERS=1` and no moto it prints SKIPPED).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kprov::apply::{self, Journal, Progress, RenderContext, Settings};
use kprov::plan::{diff, Desired};
use kprov_providers::aws::aws_sdk_ec2::types::{
    Filter, InstanceType, ResourceType, Tag, TagSpecification,
};
use kprov_providers::aws::{AwsCloud, AwsConfig, Credentials};
use kprov_providers::{
    instance_id, Arch, Cloud, InstanceRequest, MachineSize, NetworkRequest, Role, TAG_CLUSTER,
    TAG_INDEX, TAG_INSTANCE_GROUP, TAG_INSTANCE_ID, TAG_ROLE, TAG_SPEC_HASH,
};
use kprov_testkit::aws::clients;
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;

const N: u32 = 100;
const CLUSTER: &str = "bench";

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
    c
}

fn desired() -> Desired {
    let instances = (0..N)
        .map(|i| {
            let (ig, role, index) = if i == 0 {
                ("control-plane", Role::ControlPlane, 0)
            } else {
                ("nodes", Role::Node, i - 1)
            };
            let id = instance_id(CLUSTER, ig, index);
            InstanceRequest {
                cluster: CLUSTER.into(),
                name: format!("{CLUSTER}-{ig}-{index}"),
                id: id.clone(),
                instance_group: ig.into(),
                index,
                role,
                arch: Arch::Amd64,
                size: MachineSize::Flavor("t3.medium".into()),
                image: None,
                root_disk_gib: Some(20),
                gpu: None,
                network_id: None,
                user_data: Vec::new(),
                tags: BTreeMap::from([
                    (TAG_CLUSTER.to_string(), CLUSTER.to_string()),
                    (TAG_INSTANCE_GROUP.to_string(), ig.to_string()),
                    (TAG_ROLE.to_string(), role.as_str().to_string()),
                    (TAG_INDEX.to_string(), index.to_string()),
                    (TAG_SPEC_HASH.to_string(), "bench".to_string()),
                    (TAG_INSTANCE_ID.to_string(), id),
                ]),
            }
        })
        .collect();
    Desired {
        network: NetworkRequest {
            cluster: CLUSTER.into(),
            tags: BTreeMap::from([(TAG_CLUSTER.to_string(), CLUSTER.to_string())]),
        },
        instances,
        endpoint: None,
        api_port: 6443,
        api_load_balancer: None,
    }
}

fn calls(proxy: &FaultProxy) -> (u64, String) {
    let st = proxy.state();
    let mut counts: Vec<(String, u64)> = st["counts"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.trim_start_matches("ec2:").to_string(),
                        v.as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = counts
        .iter()
        .take(if std::env::var_os("KPROV_BENCH_ALL_CALLS").is_some() {
            usize::MAX
        } else {
            6
        })
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    (st["total"].as_u64().unwrap_or(0), top)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(moto) = Moto::start("the AWS benchmark") else {
        return;
    };
    let proxy = FaultProxy::start(&moto);
    let user_data: Arc<dyn apply::UserData> = Arc::new(|r: &InstanceRequest, _: &RenderContext| {
        Ok(format!("#cloud-config\nhostname: {}\n", r.name).into_bytes())
    });

    // 1. kprov: plan + apply through the executor (default concurrency 8).
    proxy.clear();
    let cloud: Arc<AwsCloud> = Arc::new(
        AwsCloud::new(config(&proxy.endpoint()))
            .await
            .expect("adapter"),
    );
    let d = desired();
    let t = Instant::now();
    let observed = cloud.list_instances(CLUSTER).await.unwrap();
    let plan = diff(&d, &observed);
    let problems = cloud.check(&d.instances).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let settings = Settings {
        concurrency: cloud.default_concurrency(),
        deadline: Duration::from_secs(600),
        ..Default::default()
    };
    let out = apply::apply(
        cloud.clone(),
        &plan,
        user_data.clone(),
        &settings,
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .expect("apply");
    let create_wall = t.elapsed();
    assert_eq!(out.created.len(), N as usize);
    let (create_calls, create_top) = calls(&proxy);

    // 2. No-op update: list + diff.
    proxy.clear();
    let t = Instant::now();
    let observed = cloud.list_instances(CLUSTER).await.unwrap();
    let noop = diff(&d, &observed);
    let noop_wall = t.elapsed();
    assert!(noop.is_empty(), "converged");
    let (noop_calls, _) = calls(&proxy);

    // 3. Delete everything by tag.
    proxy.clear();
    let t = Instant::now();
    let deleted = apply::delete_all(
        cloud.clone(),
        CLUSTER,
        &settings,
        Duration::from_secs(600),
        &Progress::hidden(),
    )
    .await
    .expect("delete");
    let delete_wall = t.elapsed();
    let (delete_calls, delete_top) = calls(&proxy);

    // 4. Baseline: the same calls in a plain sequential loop on a fresh moto.
    moto.reset();
    proxy.clear();
    let base = AwsCloud::new(config(&proxy.endpoint())).await.unwrap();
    let (ec2, _) = clients(&proxy.endpoint());
    let t = Instant::now();
    base.check(&d.instances[..1]).await.unwrap();
    base.ensure_network(&d.network).await.unwrap();
    let subnet = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("tag:kprov.io/cluster")
                .values(CLUSTER)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnets()[0].subnet_id().unwrap().to_string();
    let ami = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("name")
                .values("al2023-ami-2023*-kernel-6.1-x86_64")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .images()[0]
        .image_id()
        .unwrap()
        .to_string();
    for r in &d.instances {
        ec2.describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:kprov.io/instance-id")
                    .values(&r.id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let tags: Vec<Tag> = r
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        ec2.run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from("t3.medium"))
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .user_data("I2Nsb3VkLWNvbmZpZwo=")
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let seq_wall = t.elapsed();
    let (seq_calls, _) = calls(&proxy);

    let per = |c: u64| c as f64 / f64::from(N);
    println!("AWS adapter benchmark: {N} instances against moto (one process) through the counting proxy");
    println!(
        "  create  : {create_calls:>5} API calls ({:.2}/instance) in {:>7.2} s   [{create_top}]",
        per(create_calls),
        create_wall.as_secs_f64()
    );
    println!("  no-op   : {noop_calls:>5} API calls                   in {:>7.3} s   (+1 DescribeRegions when the CLI connects)", noop_wall.as_secs_f64());
    println!("  delete  : {delete_calls:>5} API calls ({:.2}/resource) in {:>7.2} s   ({deleted} resources) [{delete_top}]", delete_calls as f64 / deleted.max(1) as f64, delete_wall.as_secs_f64());
    println!(
        "  sequential loop of the same calls: {seq_calls} calls in {:.2} s",
        seq_wall.as_secs_f64()
    );
    println!(
        "  ratio kprov create / sequential loop: {:.2}",
        create_wall.as_secs_f64() / seq_wall.as_secs_f64()
    );
}

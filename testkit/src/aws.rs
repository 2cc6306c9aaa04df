//! The AWS adapter's tests read the cloud (moto's EC2 and ELBv2) directly through the SDK,
//! never through kprov's own view: clients with dummy credentials, live instances, and every
//! resource still tagged with a cluster.

use kprov_providers::aws::aws_sdk_ec2 as ec2;
use kprov_providers::aws::aws_sdk_elasticloadbalancingv2 as elb;

/// Dummy credentials moto accepts.
pub const KEY_ID: &str = "testing";
/// Dummy secret (not a secret: moto accepts anything).
pub const SECRET: &str = "kprov-moto-test-secret-7f3a";
/// A valid Ed25519 public key (moto's ImportKeyPair parses the material).
pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIhacE+s/jDwZ7a8HdkGsMogSfrYwb3N0j+EyAq9eiuI kprov-test";

/// SDK clients straight at `endpoint` (never a real AWS endpoint), with dummy credentials.
pub fn clients(endpoint: &str) -> (ec2::Client, elb::Client) {
    let creds = ec2::config::Credentials::new(KEY_ID, SECRET, None, None, "test");
    let e = ec2::Config::builder()
        .behavior_version(ec2::config::BehaviorVersion::latest())
        .region(ec2::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds.clone())
        .build();
    let l = elb::Config::builder()
        .behavior_version(elb::config::BehaviorVersion::latest())
        .region(elb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    (ec2::Client::from_conf(e), elb::Client::from_conf(l))
}

fn by_cluster(cluster: &str) -> ec2::types::Filter {
    ec2::types::Filter::builder()
        .name("tag:kprov.io/cluster")
        .values(cluster)
        .build()
}

/// One live instance as read from EC2: (EC2 id, `kprov.io/instance-id` tag, instance type,
/// architecture, state).
pub type LiveInstance = (String, String, String, String, String);

/// Live (not terminated / shutting-down) instances tagged with `cluster`, by instance-id tag.
pub async fn live_instances(c: &ec2::Client, cluster: &str) -> Vec<LiveInstance> {
    let out = c
        .describe_instances()
        .filters(by_cluster(cluster))
        .filters(
            ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let t = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string()
            };
            (
                i.instance_id().unwrap_or_default().to_string(),
                t("kprov.io/instance-id"),
                i.instance_type()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
                i.architecture()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    v
}

/// Every resource tagged with `cluster` that still exists, read with describe-* calls:
/// `kind id` strings (empty = nothing left).
pub async fn tagged_resources(endpoint: &str, cluster: &str) -> Vec<String> {
    let (c, l) = clients(endpoint);
    let mut left = Vec::new();
    for (id, _, _, _, _) in live_instances(&c, cluster).await {
        left.push(format!("instance {id}"));
    }
    let shutting = c
        .describe_instances()
        .filters(by_cluster(cluster))
        .filters(
            ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("shutting-down")
                .build(),
        )
        .send()
        .await
        .unwrap();
    for i in shutting.reservations().iter().flat_map(|r| r.instances()) {
        left.push(format!(
            "instance(shutting-down) {}",
            i.instance_id().unwrap_or_default()
        ));
    }
    for v in c
        .describe_volumes()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .volumes()
    {
        left.push(format!(
            "volume {} {:?}",
            v.volume_id().unwrap_or_default(),
            v.state()
        ));
    }
    for g in c
        .describe_security_groups()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .security_groups()
    {
        left.push(format!(
            "security-group {}",
            g.group_id().unwrap_or_default()
        ));
    }
    for s in c
        .describe_subnets()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .subnets()
    {
        left.push(format!("subnet {}", s.subnet_id().unwrap_or_default()));
    }
    for r in c
        .describe_route_tables()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .route_tables()
    {
        left.push(format!(
            "route-table {}",
            r.route_table_id().unwrap_or_default()
        ));
    }
    for g in c
        .describe_internet_gateways()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .internet_gateways()
    {
        left.push(format!(
            "igw {}",
            g.internet_gateway_id().unwrap_or_default()
        ));
    }
    for v in c
        .describe_vpcs()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .vpcs()
    {
        left.push(format!("vpc {}", v.vpc_id().unwrap_or_default()));
    }
    for k in c.describe_key_pairs().send().await.unwrap().key_pairs() {
        let name = k.key_name().unwrap_or_default();
        let tagged = k
            .tags()
            .iter()
            .any(|t| t.key() == Some("kprov.io/cluster") && t.value() == Some(cluster));
        if tagged || name == format!("kprov-{cluster}") {
            left.push(format!("key-pair {name}"));
        }
    }
    let lbs = l.describe_load_balancers().send().await.unwrap();
    let tgs = l.describe_target_groups().send().await.unwrap();
    let arns: Vec<String> = lbs
        .load_balancers()
        .iter()
        .filter_map(|x| x.load_balancer_arn())
        .chain(
            tgs.target_groups()
                .iter()
                .filter_map(|x| x.target_group_arn()),
        )
        .map(str::to_string)
        .collect();
    for chunk in arns.chunks(20) {
        let d = l
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        for td in d.tag_descriptions() {
            if td
                .tags()
                .iter()
                .any(|t| t.key() == Some("kprov.io/cluster") && t.value() == Some(cluster))
            {
                left.push(format!("elb {}", td.resource_arn().unwrap_or_default()));
            }
        }
    }
    left
}

/// `instance-id` tags that appear on more than one live instance.
pub fn duplicates(live: &[LiveInstance]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for i in live {
        *seen.entry(i.1.as_str()).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, n)| format!("{k} x{n}"))
        .collect()
}

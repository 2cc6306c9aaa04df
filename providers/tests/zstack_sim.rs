//! The ZStack adapter against the in-process ZStack simulator (`kprov-zstack-sim`).
//!
//! Every test starts its own simulator on a loopback port. Faults are injected through the
//! simulator's control API (`POST /_sim/faults`) and outcomes are checked through its REST API
//! (`/zstack/v1/...` with an admin session), not through the adapter under test.

#![cfg(feature = "zstack")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kprov_providers::zstack::{ZStackCloud, ZStackConfig, ZStackCredentials};
use kprov_providers::{
    instance_id, Arch, Cloud, CloudError, GpuMode, GpuRequest, InstanceRequest, MachineSize,
    NetworkRequest, ResourceKind, Role, TAG_CLUSTER, TAG_INDEX, TAG_INSTANCE_GROUP,
    TAG_INSTANCE_ID, TAG_ROLE, TAG_SPEC_HASH,
};
use kprov_zstack_sim::{SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};

const CLUSTER: &str = "demo";

async fn start() -> SimHandle {
    Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts")
}

fn config(endpoint: &str) -> ZStackConfig {
    let mut cfg = ZStackConfig::new(
        endpoint,
        ZStackCredentials::Account {
            name: "admin".into(),
            password: "password".into(),
        },
    );
    cfg.poll_interval = Duration::from_millis(20);
    cfg.max_poll_interval = Duration::from_millis(200);
    cfg.job_timeout = Duration::from_secs(30);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

fn cloud(sim: &SimHandle) -> ZStackCloud {
    ZStackCloud::new(config(&sim.endpoint())).expect("adapter")
}

fn a100(count: u32) -> GpuRequest {
    GpuRequest {
        count,
        vendor: Some("nvidia".into()),
        model: Some("A100".into()),
        mode: GpuMode::Passthrough,
    }
}

fn request(
    ig: &str,
    index: u32,
    role: Role,
    arch: Arch,
    size: MachineSize,
    gpu: Option<GpuRequest>,
) -> InstanceRequest {
    let id = instance_id(CLUSTER, ig, index);
    let tags: BTreeMap<String, String> = [
        (TAG_CLUSTER, CLUSTER.to_string()),
        (TAG_INSTANCE_GROUP, ig.to_string()),
        (TAG_ROLE, role.as_str().to_string()),
        (TAG_INDEX, index.to_string()),
        (TAG_SPEC_HASH, format!("hash-{ig}")),
        (TAG_INSTANCE_ID, id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    InstanceRequest {
        cluster: CLUSTER.into(),
        name: format!("{CLUSTER}-{ig}-{index}"),
        id,
        instance_group: ig.into(),
        index,
        role,
        arch,
        size,
        image: None,
        root_disk_gib: Some(40),
        gpu,
        network_id: None,
        user_data: format!("#cloud-config\nhostname: {CLUSTER}-{ig}-{index}\n").into_bytes(),
        tags,
    }
}

/// 1 amd64 control plane + 3 arm64 workers with 2 A100 each.
fn cluster_requests() -> Vec<InstanceRequest> {
    let mut v = vec![request(
        "control-plane",
        0,
        Role::ControlPlane,
        Arch::Amd64,
        MachineSize::Flavor("medium".into()),
        None,
    )];
    for i in 0..3 {
        v.push(request(
            "gpu-workers",
            i,
            Role::Node,
            Arch::Arm64,
            MachineSize::Shape {
                cpus: 8,
                memory_mib: 32768,
            },
            Some(a100(2)),
        ));
    }
    v
}

/// A minimal admin client of the simulator's REST API, independent of the adapter.
struct Rest {
    http: reqwest::Client,
    endpoint: String,
    session: String,
}

impl Rest {
    async fn login(endpoint: &str) -> Rest {
        use sha2::Digest;
        let http = reqwest::Client::new();
        let pw = hex::encode(sha2::Sha512::digest(b"password"));
        let r: Value = http
            .put(format!("{endpoint}/zstack/v1/accounts/login"))
            .json(&json!({"logInByAccount": {"accountName": "admin", "password": pw}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Rest {
            http,
            endpoint: endpoint.to_string(),
            session: r["inventory"]["uuid"]
                .as_str()
                .expect("session")
                .to_string(),
        }
    }

    /// All inventories of a query (`q` conditions given raw, encoded here).
    async fn query(&self, path: &str, conds: &[&str]) -> Vec<Value> {
        let mut url = reqwest::Url::parse(&format!("{}/zstack/v1{path}", self.endpoint)).unwrap();
        {
            let mut qp = url.query_pairs_mut();
            for c in conds {
                qp.append_pair("q", c);
            }
            qp.append_pair("limit", "1000");
        }
        let r = self
            .http
            .get(url)
            .header("Authorization", format!("OAuth {}", self.session))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "query {path}");
        let v: Value = r.json().await.unwrap();
        v["inventories"].as_array().cloned().unwrap_or_default()
    }

    /// Submit an async API and wait for its result.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}/zstack/v1{path}", self.endpoint))
            .header("Authorization", format!("OAuth {}", self.session));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 202, "{path} is async");
        let loc: Value = r.json().await.unwrap();
        let loc = loc["location"].as_str().unwrap().to_string();
        for _ in 0..500 {
            let r = self.http.get(&loc).send().await.unwrap();
            let status = r.status().as_u16();
            if status != 202 {
                let text = r.text().await.unwrap();
                return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job of {path} did not finish");
    }

    async fn vms(&self) -> Vec<Value> {
        self.query("/vm-instances", &[]).await
    }

    async fn kprov_user_tags(&self) -> Vec<Value> {
        self.query("/user-tags", &["tag~=kprov::%"]).await
    }

    async fn attached_gpus(&self) -> Vec<Value> {
        self.query("/pci-device/pci-devices", &["vmInstanceUuid not null"])
            .await
    }
}

/// How many times faults of `kind` fired so far.
fn fired(sim: &SimHandle, kind: &str) -> usize {
    sim.fault_log().iter().filter(|e| e.kind == kind).count()
}

async fn add_fault(sim: &SimHandle, rule: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.endpoint()))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "fault {rule} refused: {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn discover_shows_arm64_cluster_and_gpus() {
    let sim = start().await;
    let c = cloud(&sim);
    let inv = c.discover().await.unwrap();
    assert!(
        inv.arches.contains(&Arch::Arm64) && inv.arches.contains(&Arch::Amd64),
        "{:?}",
        inv.arches
    );
    assert_eq!(inv.zones, ["zone-1"]);
    assert!(
        inv.images.iter().any(|i| i.arch == Some(Arch::Arm64)),
        "{:?}",
        inv.images
    );
    assert!(inv
        .flavors
        .iter()
        .any(|f| f.name == "medium" && f.cpus == 4 && f.memory_mib == 8192));
    let net = inv
        .networks
        .iter()
        .find(|n| n.name == "k8s-net")
        .expect("k8s-net");
    assert_eq!(net.cidr.as_deref(), Some("172.20.0.0/22"));
    assert!(!net.owned);
    let a100s: Vec<_> = inv
        .gpus
        .iter()
        .filter(|g| g.model.contains("A100"))
        .collect();
    assert_eq!(a100s.len(), 8, "{:?}", inv.gpus);
    assert!(a100s
        .iter()
        .all(|g| g.arch == Some(Arch::Arm64) && g.attached_to.is_none()));
    let hosts: std::collections::BTreeSet<&str> = a100s.iter().map(|g| g.host.as_str()).collect();
    assert_eq!(
        hosts.into_iter().collect::<Vec<_>>(),
        ["arm-host-1", "arm-host-2"]
    );
    // vGPU slices are listed too, the split T4s themselves are not (they cannot be passed through)
    assert!(
        inv.gpus.iter().any(|g| g.model.starts_with("GRID T4-4Q")),
        "{:?}",
        inv.gpus
    );
    let net = c
        .ensure_network(&NetworkRequest {
            cluster: CLUSTER.into(),
            tags: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(net.name, "k8s-net");
    assert!(!net.owned);
    sim.shutdown().await;
}

#[tokio::test]
async fn create_concurrently_recreate_list_and_delete_everything() {
    let sim = start().await;
    let rest = Rest::login(&sim.endpoint()).await;
    let c = cloud(&sim);
    let reqs = cluster_requests();
    assert_eq!(
        c.check(&reqs).await.unwrap(),
        [],
        "a feasible cluster has no problems"
    );

    // concurrent creates
    let created = futures::future::join_all(reqs.iter().map(|r| c.create_instance(r))).await;
    let created: Vec<_> = created.into_iter().map(|r| r.expect("create")).collect();
    for (r, i) in reqs.iter().zip(&created) {
        assert_eq!(i.id, r.id);
        assert_eq!(i.name, r.name);
        assert_eq!(i.state, "Running");
        assert!(
            i.address
                .as_deref()
                .is_some_and(|a| a.starts_with("172.20.")),
            "{i:?}"
        );
    }
    assert_eq!(rest.vms().await.len(), 4);
    let attached = rest.attached_gpus().await;
    assert_eq!(attached.len(), 6, "3 workers × 2 A100");
    let mut per_vm: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &attached {
        per_vm
            .entry(d["vmInstanceUuid"].as_str().unwrap().to_string())
            .or_default()
            .push(d["hostUuid"].as_str().unwrap().to_string());
    }
    for r in &reqs[1..] {
        let hosts = &per_vm[&r.id];
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0], hosts[1], "a VM's GPUs are on one host");
    }
    let vm_json = rest
        .query(&format!("/vm-instances/{}", reqs[1].id), &[])
        .await;
    assert_eq!(vm_json[0]["architecture"], "aarch64");
    let sys_tags = rest
        .query("/system-tags", &[&format!("resourceUuid={}", reqs[1].id)])
        .await;
    let tag_texts: Vec<&str> = sys_tags.iter().filter_map(|t| t["tag"].as_str()).collect();
    assert!(
        tag_texts.contains(&"hostname::demo-gpu-workers-0"),
        "{tag_texts:?}"
    );
    assert!(
        tag_texts.iter().any(|t| t.starts_with("userdata::")),
        "{tag_texts:?}"
    );

    // creating again is a no-op that returns the same VMs
    sim.reset_stats();
    for r in &reqs {
        let again = c.create_instance(r).await.unwrap();
        assert_eq!(again.id, r.id);
        assert_eq!(again.tags, r.tags);
    }
    assert_eq!(sim.stats().count("POST", "/zstack/v1/vm-instances"), 0);
    assert_eq!(rest.vms().await.len(), 4);

    // list maps tags back, at a constant cost
    sim.reset_stats();
    let listed = c.list_instances(CLUSTER).await.unwrap();
    assert_eq!(
        sim.stats().total,
        2,
        "a no-op list is one VM query + one tag query: {:?}",
        sim.stats()
    );
    assert_eq!(listed.len(), 4);
    for r in &reqs {
        let i = listed.iter().find(|i| i.id == r.id).expect("listed");
        assert_eq!(i.tags, r.tags);
        assert_eq!(i.instance_group(), Some(r.instance_group.as_str()));
        assert_eq!(i.index(), Some(r.index));
    }
    assert!(c.list_instances("other-cluster").await.unwrap().is_empty());

    // delete everything the cluster owns
    let resources = c.list_resources(CLUSTER).await.unwrap();
    assert_eq!(
        resources
            .iter()
            .filter(|r| r.kind == ResourceKind::Instance)
            .count(),
        4
    );
    let deleted = futures::future::join_all(resources.iter().map(|r| c.delete_resource(r))).await;
    for d in deleted {
        d.expect("delete");
    }
    assert!(rest.vms().await.is_empty(), "zero VMs");
    assert!(rest.kprov_user_tags().await.is_empty(), "zero kprov tags");
    assert!(rest.attached_gpus().await.is_empty(), "all GPUs free");
    let all_gpus = rest
        .query("/pci-device/pci-devices", &["type=GPU_3D_Controller"])
        .await;
    assert!(all_gpus
        .iter()
        .all(|d| d["vmInstanceUuid"].is_null() && d["status"] != "Attached"));
    assert!(c.list_resources(CLUSTER).await.unwrap().is_empty());
    // deleting again succeeds
    for r in &resources {
        c.delete_resource(r).await.unwrap();
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn no_op_list_cost_does_not_grow_with_the_cluster() {
    let sim = start().await;
    let c = cloud(&sim);
    let small = |i| {
        request(
            "nodes",
            i,
            Role::Node,
            Arch::Amd64,
            MachineSize::Flavor("small".into()),
            None,
        )
    };
    for i in 0..2 {
        c.create_instance(&small(i)).await.unwrap();
    }
    sim.reset_stats();
    assert_eq!(c.list_instances(CLUSTER).await.unwrap().len(), 2);
    let two = sim.stats().total;
    let reqs: Vec<_> = (2..12).map(small).collect();
    for r in futures::future::join_all(reqs.iter().map(|r| c.create_instance(r))).await {
        r.unwrap();
    }
    sim.reset_stats();
    assert_eq!(c.list_instances(CLUSTER).await.unwrap().len(), 12);
    assert_eq!(sim.stats().total, two);
    assert_eq!(two, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn check_reports_gpu_shortage_and_missing_arch_image() {
    let mut cfg = SimConfig::default();
    cfg.inventory.images.retain(|i| i.architecture != "aarch64");
    let sim = Simulator::start(cfg).await.unwrap();
    let c = cloud(&sim);
    let mut desired: Vec<InstanceRequest> = (0..3)
        .map(|i| {
            request(
                "gpu",
                i,
                Role::Node,
                Arch::Arm64,
                MachineSize::Flavor("large".into()),
                Some(a100(4)),
            )
        })
        .collect();
    desired.push(request(
        "cp",
        0,
        Role::ControlPlane,
        Arch::Amd64,
        MachineSize::Flavor("huge".into()),
        None,
    ));
    let problems = c.check(&desired).await.unwrap();
    let gpu: Vec<_> = problems
        .iter()
        .filter(|p| p.instance_group == "gpu")
        .collect();
    let shortage = gpu
        .iter()
        .find(|p| p.problem.contains("not enough free GPUs"))
        .expect("GPU shortage");
    for part in [
        "1 of 3 new instance(s)",
        "4 × GPU vendor~nvidia model~A100",
        "8 matching on arm64 hosts, 8 free",
        "arm-host-1: 4 free of 4",
        "arm-host-2: 4 free of 4",
    ] {
        assert!(
            shortage.problem.contains(part),
            "`{part}` missing in: {}",
            shortage.problem
        );
    }
    let image = gpu
        .iter()
        .find(|p| p.problem.contains("image"))
        .expect("image problem");
    assert!(
        image.problem.contains("no Ready arm64 (aarch64) image"),
        "{}",
        image.problem
    );
    assert!(
        image.problem.contains("amd64: ubuntu-22.04-amd64"),
        "{}",
        image.problem
    );
    assert!(image.fix.contains("aarch64"), "{}", image.fix);
    let cp: Vec<_> = problems
        .iter()
        .filter(|p| p.instance_group == "cp")
        .collect();
    assert_eq!(cp.len(), 1, "{cp:?}");
    assert!(
        cp[0].problem.contains("`huge` not found")
            && cp[0].problem.contains("medium (4 vCPU, 8192 MiB)"),
        "{}",
        cp[0].problem
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn session_expiry_mid_run_is_transparent() {
    let sim = start().await;
    let c = cloud(&sim);
    c.discover().await.unwrap();
    assert_eq!(c.stats().logins, 1);
    add_fault(&sim, json!({"kind": "expire_sessions"})).await;
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    c.create_instance(&r).await.unwrap();
    assert_eq!(c.stats().logins, 2);
    // an async job rejected with ID.1001 (the session died between submit and run)
    add_fault(
        &sim,
        json!({"kind": "job_fails", "code": "ID.1001", "method": "POST", "path": "^/zstack/v1/vm-instances$"}),
    )
    .await;
    let r2 = request(
        "nodes",
        1,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    c.create_instance(&r2).await.unwrap();
    assert_eq!(c.stats().logins, 3);
    add_fault(&sim, json!({"kind": "expire_sessions"})).await;
    assert_eq!(c.list_instances(CLUSTER).await.unwrap().len(), 2);
    assert_eq!(Rest::login(&sim.endpoint()).await.vms().await.len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn unavailable_burst_is_retried_then_reported_retryable() {
    let sim = start().await;
    let c = cloud(&sim);
    add_fault(&sim, json!({"kind": "unavailable", "times": 3})).await;
    add_fault(&sim, json!({"kind": "internal_error", "times": 1})).await;
    c.discover()
        .await
        .expect("a short burst is absorbed by the adapter's retries");
    assert_eq!(fired(&sim, "unavailable"), 3);
    assert_eq!(fired(&sim, "internal_error"), 1);
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    add_fault(
        &sim,
        json!({"kind": "unavailable", "method": "POST", "times": 2}),
    )
    .await;
    c.create_instance(&r)
        .await
        .expect("create survives a 503 burst");
    assert_eq!(fired(&sim, "unavailable"), 5);
    assert_eq!(Rest::login(&sim.endpoint()).await.vms().await.len(), 1);

    let mut cfg = config(&sim.endpoint());
    cfg.max_retries = 1;
    let impatient = ZStackCloud::new(cfg).unwrap();
    add_fault(&sim, json!({"kind": "unavailable", "duration_secs": 30})).await;
    let e = impatient.list_instances(CLUSTER).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        matches!(&e, CloudError::Transient { code, .. } if code == "SYS.1012"),
        "{e:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn job_that_never_finishes_times_out_naming_the_job() {
    let sim = start().await;
    let mut cfg = config(&sim.endpoint());
    cfg.job_timeout = Duration::from_millis(1500);
    let c = ZStackCloud::new(cfg).unwrap();
    c.discover().await.unwrap();
    add_fault(
        &sim,
        json!({"kind": "job_never_finishes", "method": "POST", "path": "^/zstack/v1/vm-instances$"}),
    )
    .await;
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    let started = Instant::now();
    let e = c.create_instance(&r).await.unwrap_err();
    let took = started.elapsed();
    match &e {
        CloudError::Timeout { what, after, .. } => {
            assert_eq!(*after, Duration::from_millis(1500));
            assert!(what.contains("CreateVmInstance"), "{what}");
            let job = what.split_whitespace().nth(2).unwrap_or_default();
            assert!(
                job.len() == 32 && job.chars().all(|c| c.is_ascii_hexdigit()),
                "job id in {what}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(fired(&sim, "job_never_finishes") >= 1);
    assert!(e.to_string().contains("CreateVmInstance"));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn lost_202_creates_no_duplicate_vm() {
    let sim = start().await;
    let rest = Rest::login(&sim.endpoint()).await;
    let c = cloud(&sim);
    add_fault(
        &sim,
        json!({"kind": "drop_response", "method": "POST", "path": "^/zstack/v1/vm-instances$"}),
    )
    .await;
    let reqs = cluster_requests();
    let created = c
        .create_instance(&reqs[1])
        .await
        .expect("create despite the lost answer");
    assert_eq!(created.id, reqs[1].id);
    assert_eq!(fired(&sim, "drop_response"), 1);
    assert_eq!(
        sim.stats().count("POST", "/zstack/v1/vm-instances"),
        1,
        "not submitted twice"
    );
    assert_eq!(rest.vms().await.len(), 1);
    assert_eq!(rest.attached_gpus().await.len(), 2);
    // a lost answer on a destroy is also harmless
    add_fault(
        &sim,
        json!({"kind": "drop_response", "method": "DELETE", "path": "^/zstack/v1/vm-instances/"}),
    )
    .await;
    for r in c.list_resources(CLUSTER).await.unwrap() {
        c.delete_resource(&r).await.unwrap();
    }
    assert_eq!(fired(&sim, "drop_response"), 2);
    assert!(rest.vms().await.is_empty());
    assert!(rest.attached_gpus().await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn foreign_job_location_is_followed_on_the_configured_endpoint() {
    let sim = start().await;
    let c = cloud(&sim);
    add_fault(&sim, json!({"kind": "foreign_location"})).await;
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Shape {
            cpus: 2,
            memory_mib: 2048,
        },
        None,
    );
    let i = c.create_instance(&r).await.unwrap();
    assert_eq!(i.state, "Running");
    assert!(fired(&sim, "foreign_location") >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn destroyed_vm_is_expunged_and_recreated_and_orphan_tags_are_cleaned() {
    let sim = start().await;
    let rest = Rest::login(&sim.endpoint()).await;
    let c = cloud(&sim);
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    c.create_instance(&r).await.unwrap();
    let (status, _) = rest
        .call(
            reqwest::Method::DELETE,
            &format!("/vm-instances/{}?deleteMode=Permissive", r.id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        c.list_instances(CLUSTER).await.unwrap().is_empty(),
        "destroyed VMs are not listed"
    );
    let res = c.list_resources(CLUSTER).await.unwrap();
    assert_eq!(
        res.len(),
        1,
        "a destroyed VM still needs an expunge: {res:?}"
    );
    let again = c.create_instance(&r).await.unwrap();
    assert_eq!(again.id, r.id);
    assert_eq!(again.state, "Running");
    assert_eq!(rest.vms().await.len(), 1);

    // a kprov tag on something that is not a VM of the cluster is an orphan
    let image = sim.uuid_of("ubuntu-22.04-amd64").unwrap();
    let (status, _) = rest
        .call(
            reqwest::Method::POST,
            "/user-tags",
            Some(json!({"params": {"resourceType": "ImageVO", "resourceUuid": image, "tag": "kprov::kprov.io/cluster::demo"}})),
        )
        .await;
    assert_eq!(status, 200);
    let res = c.list_resources(CLUSTER).await.unwrap();
    let orphan = res
        .iter()
        .find(|r| r.kind == ResourceKind::Tag)
        .expect("orphan tag listed");
    assert_eq!(orphan.name, "kprov::kprov.io/cluster::demo");
    for r in &res {
        c.delete_resource(r).await.unwrap();
    }
    assert!(rest.kprov_user_tags().await.is_empty());
    assert!(rest.vms().await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn access_key_mode_and_bad_credentials() {
    let sim = start().await;
    let mut cfg = config(&sim.endpoint());
    cfg.credentials = ZStackCredentials::AccessKey {
        id: "AKSIMKPROVZSTACK0001".into(),
        secret: "SimSecretKeyForKprovZstackSimulator00001".into(),
    };
    let ak = ZStackCloud::new(cfg).unwrap();
    assert!(!ak.discover().await.unwrap().images.is_empty());
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    assert_eq!(ak.create_instance(&r).await.unwrap().state, "Running");
    assert_eq!(ak.stats().logins, 0);

    let mut cfg = config(&sim.endpoint());
    cfg.credentials = ZStackCredentials::Account {
        name: "admin".into(),
        password: "hunter2-is-not-it".into(),
    };
    let bad = ZStackCloud::new(cfg).unwrap();
    let e = bad.discover().await.unwrap_err();
    assert!(matches!(e, CloudError::Auth { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(
        !format!("{e:?} {e}").contains("hunter2"),
        "no password in errors"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn create_costs_a_lookup_a_submit_and_polls() {
    let sim = start().await;
    let c = cloud(&sim);
    c.discover().await.unwrap(); // login + infrastructure cache
    sim.reset_stats();
    let reqs = cluster_requests();
    c.create_instance(&reqs[1]).await.unwrap();
    let s = sim.stats();
    let polls = s.count("GET", "/zstack/v1/api-jobs/{uuid}");
    assert!(polls >= 1);
    assert_eq!(s.count("GET", "/zstack/v1/vm-instances/{uuid}"), 1, "{s:?}");
    assert_eq!(
        s.count("GET", "/zstack/v1/pci-device/pci-devices"),
        1,
        "{s:?}"
    );
    assert_eq!(s.count("POST", "/zstack/v1/vm-instances"), 1, "{s:?}");
    assert_eq!(s.total, 3 + polls, "nothing else: {s:?}");
    // an existing VM costs a lookup and its tags
    sim.reset_stats();
    c.create_instance(&reqs[1]).await.unwrap();
    let s = sim.stats();
    assert_eq!(s.count("GET", "/zstack/v1/vm-instances/{uuid}"), 1, "{s:?}");
    assert_eq!(s.count("GET", "/zstack/v1/user-tags"), 1, "{s:?}");
    assert_eq!(s.total, 2, "{s:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn gpu_spec_tags_and_mdev_slices() {
    let sim = start().await;
    let rest = Rest::login(&sim.endpoint()).await;
    // passthrough by spec: ZStack picks host and devices
    let mut cfg = config(&sim.endpoint());
    cfg.gpu_attach = kprov_providers::zstack::GpuAttach::SpecTags;
    let by_spec = ZStackCloud::new(cfg).unwrap();
    let w = request(
        "spec",
        0,
        Role::Node,
        Arch::Arm64,
        MachineSize::Flavor("large".into()),
        Some(a100(3)),
    );
    by_spec.create_instance(&w).await.unwrap();
    let attached = rest.attached_gpus().await;
    assert_eq!(attached.len(), 3);
    assert!(attached
        .iter()
        .all(|d| d["vmInstanceUuid"] == w.id.as_str()));
    // vGPU slices, by device uuid (default) and by mdev spec
    let t4 = |ig: &str, n| {
        request(
            ig,
            0,
            Role::Node,
            Arch::Arm64,
            MachineSize::Flavor("medium".into()),
            Some(GpuRequest {
                count: n,
                vendor: Some("nvidia".into()),
                model: Some("T4-4Q".into()),
                mode: GpuMode::Mdev,
            }),
        )
    };
    let c = cloud(&sim);
    let a = t4("vgpu-a", 2);
    let b = t4("vgpu-b", 1);
    c.create_instance(&a).await.unwrap();
    by_spec.create_instance(&b).await.unwrap();
    let slices = rest
        .query("/mdev-devices", &["vmInstanceUuid not null"])
        .await;
    let owners: Vec<&str> = slices
        .iter()
        .filter_map(|d| d["vmInstanceUuid"].as_str())
        .collect();
    assert_eq!(
        owners.iter().filter(|o| **o == a.id).count(),
        2,
        "{slices:?}"
    );
    assert_eq!(
        owners.iter().filter(|o| **o == b.id).count(),
        1,
        "{slices:?}"
    );
    // check() sees what is left: 5 free slices, 5 A100s
    let too_many = t4("vgpu-c", 6);
    let p = c.check(std::slice::from_ref(&too_many)).await.unwrap();
    assert!(
        p.iter()
            .any(|p| p.problem.contains("not enough free GPUs") && p.problem.contains("5 free")),
        "{p:?}"
    );
    for r in c.list_resources(CLUSTER).await.unwrap() {
        c.delete_resource(&r).await.unwrap();
    }
    assert!(rest.attached_gpus().await.is_empty());
    assert!(rest
        .query("/mdev-devices", &["vmInstanceUuid not null"])
        .await
        .is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn create_whose_job_fails_after_executing_returns_the_vm() {
    let sim = start().await;
    let c = cloud(&sim);
    // the VM is created but its job fails with SYS.1001 (timeout at apiTimeout)
    add_fault(
        &sim,
        json!({"kind": "job_never_finishes", "execute": true, "timeout_ms": 300, "method": "POST", "path": "^/zstack/v1/vm-instances$"}),
    )
    .await;
    let r = request(
        "nodes",
        0,
        Role::Node,
        Arch::Amd64,
        MachineSize::Flavor("small".into()),
        None,
    );
    let i = c
        .create_instance(&r)
        .await
        .expect("the existing VM is returned");
    assert_eq!(i.id, r.id);
    assert_eq!(i.tags, r.tags);
    assert_eq!(fired(&sim, "job_never_finishes"), 1);
    assert_eq!(
        sim.stats().count("POST", "/zstack/v1/vm-instances"),
        1,
        "not resubmitted"
    );
    assert_eq!(sim.vm_count(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn queries_read_every_page() {
    let sim = start().await;
    let mut cfg = config(&sim.endpoint());
    cfg.page_size = 4;
    let c = ZStackCloud::new(cfg).unwrap();
    let inv = c.discover().await.unwrap();
    assert_eq!(
        inv.gpus.iter().filter(|g| g.model.contains("A100")).count(),
        8,
        "8 A100s over 3 pages"
    );
    let s = sim.stats();
    assert_eq!(
        s.count("GET", "/zstack/v1/hosts"),
        2,
        "6 hosts in pages of 4: {s:?}"
    );
    assert_eq!(
        s.count("GET", "/zstack/v1/pci-device/pci-devices"),
        3,
        "10 devices in pages of 4: {s:?}"
    );
    let reqs: Vec<_> = (0..9)
        .map(|i| {
            request(
                "nodes",
                i,
                Role::Node,
                Arch::Amd64,
                MachineSize::Flavor("small".into()),
                None,
            )
        })
        .collect();
    for r in &reqs {
        c.create_instance(r).await.unwrap();
    }
    let listed = c.list_instances(CLUSTER).await.unwrap();
    assert_eq!(listed.len(), 9);
    assert!(listed.iter().zip(&reqs).all(|(i, r)| i.tags == r.tags));
    sim.shutdown().await;
}

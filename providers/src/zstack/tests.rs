//! Unit tests of the ZStack adapter's pure parts: image / offering / L3 choice and capacity
//! ([`super::infra`]), the create body ([`super::cloud`]), GPU choice ([`super::placement`]).

use serde_json::json;

use super::cloud::{error_codes, ZStackCloud};
use super::config::{GpuAttach, ZStackConfig};
use super::infra::{Infra, GIB, MIB};
use super::model::{Cluster, Host, Image, InstanceOffering, L3Network, Zone};
use super::placement::{GpuChoice, GpuDev, Placement};
use crate::{
    instance_id, Arch, GpuMode, GpuRequest, InstanceRequest, MachineSize, Role, TAG_CLUSTER,
    TAG_INDEX, TAG_INSTANCE_GROUP,
};

fn infra() -> Infra {
    serde_json::from_value::<InfraFixture>(json!({
        "zones": [{"uuid": "z1", "name": "zone-1"}],
        "clusters": [
            {"uuid": "c-x86", "name": "x86", "zoneUuid": "z1", "architecture": "x86_64", "state": "Enabled"},
            {"uuid": "c-arm", "name": "arm", "zoneUuid": "z1", "architecture": "aarch64", "state": "Enabled"}
        ],
        "hosts": [
            {"uuid": "h1", "name": "x86-1", "clusterUuid": "c-x86", "zoneUuid": "z1", "state": "Enabled", "status": "Connected",
             "availableCpuCapacity": 32, "availableMemoryCapacity": 68719476736i64},
            {"uuid": "h2", "name": "arm-1", "clusterUuid": "c-arm", "zoneUuid": "z1", "state": "Enabled", "status": "Connected",
             "availableCpuCapacity": 16, "availableMemoryCapacity": 34359738368i64}
        ],
        "images": [
            {"uuid": "i1", "name": "debian-12-amd64", "status": "Ready", "mediaType": "RootVolumeTemplate", "architecture": "x86_64", "state": "Enabled"},
            {"uuid": "i2", "name": "debian-12-arm64", "status": "Downloading", "mediaType": "RootVolumeTemplate", "architecture": "aarch64"}
        ],
        "offerings": [
            {"uuid": "o1", "name": "small", "cpuNum": 1, "memorySize": 1073741824u64},
            {"uuid": "o2", "name": "large", "cpuNum": 8, "memorySize": 17179869184u64}
        ],
        "l3s": [
            {"uuid": "l3a", "name": "mgmt", "system": true, "networkServices": [{"networkServiceType": "Userdata"}]},
            {"uuid": "l3b", "name": "flat", "zoneUuid": "z1", "networkServices": [{"networkServiceType": "DHCP"}, {"networkServiceType": "Userdata"}],
             "ipRanges": [{"networkCidr": "10.0.0.0/24"}]}
        ]
    }))
    .unwrap()
    .into()
}

#[derive(serde::Deserialize)]
struct InfraFixture {
    zones: Vec<Zone>,
    clusters: Vec<Cluster>,
    hosts: Vec<Host>,
    images: Vec<Image>,
    offerings: Vec<InstanceOffering>,
    l3s: Vec<L3Network>,
}

impl From<InfraFixture> for Infra {
    fn from(f: InfraFixture) -> Self {
        Infra {
            zones: f.zones,
            clusters: f.clusters,
            hosts: f.hosts,
            images: f.images,
            offerings: f.offerings,
            l3s: f.l3s,
            pci_specs: Vec::new(),
            mdev_specs: Vec::new(),
        }
    }
}

fn req(arch: Arch, size: MachineSize, role: Role) -> InstanceRequest {
    InstanceRequest {
        cluster: "demo".into(),
        name: "demo-workers-0".into(),
        id: instance_id("demo", "workers", 0),
        instance_group: "workers".into(),
        index: 0,
        role,
        arch,
        size,
        image: None,
        root_disk_gib: Some(40),
        gpu: None,
        network_id: None,
        user_data: b"#cloud-config\n".to_vec(),
        tags: [
            (TAG_CLUSTER.to_string(), "demo".to_string()),
            (TAG_INSTANCE_GROUP.to_string(), "workers".to_string()),
            (TAG_INDEX.to_string(), "0".to_string()),
        ]
        .into(),
    }
}

#[test]
fn image_selection_names_existing_arches() {
    let i = infra();
    let ok = i
        .image_for(&req(
            Arch::Amd64,
            MachineSize::Flavor("small".into()),
            Role::Node,
        ))
        .unwrap();
    assert_eq!(ok.uuid, "i1");
    let (p, f) = i
        .image_for(&req(
            Arch::Arm64,
            MachineSize::Flavor("small".into()),
            Role::Node,
        ))
        .unwrap_err();
    assert!(p.contains("no Ready arm64 (aarch64) image"), "{p}");
    assert!(p.contains("amd64: debian-12-amd64"), "{p}");
    assert!(f.contains("aarch64"), "{f}");
}

#[test]
fn offering_errors_list_offerings() {
    let i = infra();
    let (p, _) = i
        .size_for(&req(
            Arch::Amd64,
            MachineSize::Flavor("huge".into()),
            Role::Node,
        ))
        .unwrap_err();
    assert!(
        p.contains("`huge` not found")
            && p.contains("small (1 vCPU, 1024 MiB)")
            && p.contains("large (8 vCPU, 16384 MiB)"),
        "{p}"
    );
    let (p, _) = i
        .size_for(&req(
            Arch::Amd64,
            MachineSize::Flavor("small".into()),
            Role::ControlPlane,
        ))
        .unwrap_err();
    assert!(p.contains("too small for a control-plane"), "{p}");
    assert_eq!(
        i.size_for(&req(
            Arch::Amd64,
            MachineSize::Shape {
                cpus: 4,
                memory_mib: 8192
            },
            Role::Node
        ))
        .unwrap(),
        (None, 4, 8192)
    );
}

#[test]
fn default_l3_is_the_userdata_one_and_capacity_is_checked() {
    let i = infra();
    assert_eq!(i.l3_for(None).unwrap().uuid, "l3b");
    assert!(i
        .l3_for(Some("nope"))
        .unwrap_err()
        .0
        .contains("flat (l3b, Userdata)"));
    let hosts = i.usable_hosts(Arch::Arm64, Some("z1"));
    assert_eq!(hosts.len(), 1);
    assert!(i.fits_somewhere(&hosts, 8, 8192).unwrap().is_ok());
    let e = i.fits_somewhere(&hosts, 64, 8192).unwrap().unwrap_err();
    assert!(e.contains("arm-1 with 16 vCPU / 32768 MiB"), "{e}");
}

#[test]
fn create_body_has_everything() {
    let mut r = req(
        Arch::Amd64,
        MachineSize::Shape {
            cpus: 2,
            memory_mib: 4096,
        },
        Role::Node,
    );
    r.gpu = Some(GpuRequest {
        count: 1,
        vendor: None,
        model: None,
        mode: GpuMode::Passthrough,
    });
    let p = Placement {
        image: "i1".into(),
        offering: None,
        cpus: 2,
        mem_mib: 4096,
        l3: "l3b".into(),
        cluster: "c-x86".into(),
        host: Some("h1".into()),
        gpu_tags: vec!["pciDevice::d1".into()],
    };
    let b = ZStackCloud::create_body(&r, &p);
    let params = &b["params"];
    assert_eq!(params["resourceUuid"], json!(r.id));
    assert_eq!(params["memorySize"], json!(4096u64 * MIB));
    assert_eq!(params["cpuNum"], json!(2));
    assert_eq!(params["rootDiskSize"], json!(40u64 * GIB));
    assert_eq!(params["hostUuid"], json!("h1"));
    assert_eq!(params["l3NetworkUuids"], json!(["l3b"]));
    let st: Vec<String> = serde_json::from_value(b["systemTags"].clone()).unwrap();
    assert_eq!(st[0], "userdata::I2Nsb3VkLWNvbmZpZwo=");
    assert_eq!(st[1], "hostname::demo-workers-0");
    assert_eq!(st[2], "pciDevice::d1");
    let ut: Vec<String> = serde_json::from_value(b["userTags"].clone()).unwrap();
    assert!(ut.contains(&"kprov::kprov.io/cluster::demo".to_string()));
}

#[test]
fn gpu_choice_is_one_host_spread() {
    let cloud = ZStackCloud::new(ZStackConfig::new(
        "http://127.0.0.1:9",
        super::ZStackCredentials::AccessKey {
            id: "a".into(),
            secret: "b".into(),
        },
    ))
    .unwrap();
    let i = infra();
    let dev = |uuid: &str, host: &str| GpuDev {
        uuid: uuid.into(),
        host: host.into(),
        cluster: Some("c-arm".into()),
        arch: Some(Arch::Arm64),
        vendor: "NVIDIA".into(),
        model: "A100".into(),
        spec: Some("spec-a100".into()),
        attached_to: None,
        free: true,
        mdev: false,
        split: false,
    };
    let devs = [dev("a", "h2"), dev("b", "h2"), dev("c", "h3")];
    let refs: Vec<&GpuDev> = devs.iter().collect();
    let g = GpuRequest {
        count: 1,
        vendor: None,
        model: Some("a100".into()),
        mode: GpuMode::Passthrough,
    };
    match cloud.choose_gpus(&i, &g, &refs) {
        Some(GpuChoice::Devices { host, devices, .. }) => {
            assert_eq!(host, "h2"); // the host with more free devices (spread)
            assert_eq!(devices, ["a"]);
        }
        _ => panic!("expected devices"),
    }
    let g2 = GpuRequest {
        count: 2,
        ..g.clone()
    };
    match cloud.choose_gpus(&i, &g2, &refs) {
        Some(GpuChoice::Devices { host, devices, .. }) => {
            assert_eq!(host, "h2");
            assert_eq!(devices, ["a", "b"]);
        }
        _ => panic!("expected devices"),
    }
    let g3 = GpuRequest {
        count: 3,
        ..g.clone()
    };
    assert!(cloud.choose_gpus(&i, &g3, &refs).is_none());
    let mut spec_cfg = cloud.config.clone();
    spec_cfg.gpu_attach = GpuAttach::SpecTags;
    let spec_cloud = ZStackCloud::new(spec_cfg).unwrap();
    match spec_cloud.choose_gpus(&i, &g2, &refs) {
        Some(GpuChoice::Spec { tag, .. }) => assert_eq!(tag, "pciDeviceSpec::spec-a100::2"),
        _ => panic!("expected a spec tag"),
    }
}

#[test]
fn error_codes_of_bodies() {
    assert_eq!(
        error_codes(r#"{"error":{"code":"SYS.1006","cause":{"code":"VM.1010"}}}"#),
        ["SYS.1006", "VM.1010"]
    );
    assert!(error_codes("not json").is_empty());
}

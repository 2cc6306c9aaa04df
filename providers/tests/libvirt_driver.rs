//! The libvirt adapter against libvirt's in-process `test:///` driver (no daemon, no root): the
//! whole create → list → idempotent re-create → list_resources → delete cycle, the domain XML
//! per architecture, GPU passthrough from the host's PCI node devices (a custom test-driver
//! fixture holds two fake A100s), plan-time GPU checks, and the seed ISO as an ISO tool reads it.
//!
//! The test driver keeps state per connection (and `test:///default` is shared by all
//! connections of one process), so each test keeps one [`LibvirtCloud`] and its own cluster
//! name. It lacks
//! volume upload (the adapter leaves uploaded volumes empty there) and DHCP leases
//! (`domifaddr` fabricates an address for network NICs).
#![cfg(feature = "libvirt")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kprov_providers::libvirt::cloud::{domain_xml, DomainParams, Nic};
use kprov_providers::libvirt::xml::{to_xml, PciAddress};
use kprov_providers::libvirt::{
    BaseImage, DirectBoot, DomainType, LibvirtCloud, LibvirtConfig, NetworkMode,
};
use kprov_providers::*;

/// A host with 2 vCPUs, 8 GiB and two NVIDIA A100 PCI devices (and one NIC that must not match).
const FIXTURE: &str = r#"<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>test</model></cpu>
  <memory>8388608</memory>
  <device><name>pci_0000_3b_00_0</name><parent>computer</parent><capability type='pci'><class>0x030200</class>
    <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
    <product id='0x20b5'>GA100 [A100 PCIe 80GB]</product><vendor id='0x10de'>NVIDIA Corporation</vendor></capability></device>
  <device><name>pci_0000_5e_00_0</name><parent>computer</parent><capability type='pci'><class>0x030200</class>
    <domain>0</domain><bus>94</bus><slot>0</slot><function>0</function>
    <product id='0x20b5'>GA100 [A100 PCIe 80GB]</product><vendor id='0x10de'>NVIDIA Corporation</vendor></capability></device>
  <device><name>pci_0000_01_00_0</name><parent>computer</parent><capability type='pci'><class>0x020000</class>
    <domain>0</domain><bus>1</bus><slot>0</slot><function>0</function>
    <product id='0x1572'>Ethernet Controller X710</product><vendor id='0x8086'>Intel Corporation</vendor></capability></device>
</node>
"#;

struct Env {
    _dir: tempfile::TempDir,
    image: PathBuf,
    fixture: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    // a qcow2 header: magic, version 3, virtual size 2 GiB
    let mut h = vec![0u8; 512];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[24..32].copy_from_slice(&(2u64 << 30).to_be_bytes());
    let image = dir.path().join("base.qcow2");
    std::fs::write(&image, h).unwrap();
    let fixture = dir.path().join("node.xml");
    std::fs::write(&fixture, FIXTURE).unwrap();
    Env {
        _dir: dir,
        image,
        fixture,
    }
}

fn cfg(e: &Env, uri: String, network: NetworkMode) -> LibvirtConfig {
    let mut c = LibvirtConfig::new(uri);
    c.network = network;
    c.images.insert(
        Arch::Amd64,
        BaseImage {
            path: e.image.clone(),
            direct_boot: None,
        },
    );
    c.images.insert(
        Arch::Arm64,
        BaseImage {
            path: e.image.clone(),
            direct_boot: Some(DirectBoot {
                kernel: e.image.clone(),
                initrd: e.image.clone(),
                cmdline: "root=LABEL=root ro console=ttyAMA0".into(),
            }),
        },
    );
    c.address_timeout = std::time::Duration::from_secs(5);
    c
}

fn req(cluster: &str, ig: &str, index: u32, role: Role, arch: Arch) -> InstanceRequest {
    let id = instance_id(cluster, ig, index);
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CLUSTER.to_string(), cluster.to_string());
    tags.insert(TAG_INSTANCE_GROUP.to_string(), ig.to_string());
    tags.insert(TAG_ROLE.to_string(), role.as_str().to_string());
    tags.insert(TAG_INDEX.to_string(), index.to_string());
    tags.insert(TAG_SPEC_HASH.to_string(), "h1".to_string());
    tags.insert(TAG_INSTANCE_ID.to_string(), id.clone());
    InstanceRequest {
        cluster: cluster.into(),
        name: format!("{cluster}-{ig}-{index}"),
        id,
        instance_group: ig.into(),
        index,
        role,
        arch,
        size: MachineSize::Shape {
            cpus: 2,
            memory_mib: 2048,
        },
        image: None,
        root_disk_gib: Some(8),
        gpu: None,
        network_id: None,
        user_data: b"#cloud-config\nruncmd: [echo hi]\n".to_vec(),
        tags,
    }
}

fn net_req(cluster: &str) -> NetworkRequest {
    NetworkRequest {
        cluster: cluster.into(),
        tags: BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.to_string())]),
    }
}

async fn delete_all(cloud: &LibvirtCloud, cluster: &str) {
    let mut res = cloud.list_resources(cluster).await.unwrap();
    res.sort_by_key(|r| r.kind);
    for r in &res {
        cloud
            .delete_resource(r)
            .await
            .unwrap_or_else(|e| panic!("deleting {r:?}: {e}"));
    }
}

#[tokio::test]
async fn create_list_recreate_delete_with_a_nat_network() {
    let e = env();
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Nat { cidr: None },
    ))
    .unwrap();
    assert_eq!(cloud.name(), "libvirt");
    let net = cloud.ensure_network(&net_req("demo")).await.unwrap();
    assert_eq!(net.name, "kprov.demo");
    assert!(net.owned);
    let cidr = net.cidr.clone().expect("cidr");
    assert!(
        cidr.starts_with("192.168.") && cidr.ends_with(".0/24"),
        "{cidr}"
    );
    // ensure_network is idempotent
    assert_eq!(cloud.ensure_network(&net_req("demo")).await.unwrap(), net);

    let cp = req("demo", "control-plane", 0, Role::ControlPlane, Arch::Amd64);
    let w = req("demo", "nodes", 0, Role::Node, Arch::Amd64);
    let a = cloud.create_instance(&cp).await.unwrap();
    let b = cloud.create_instance(&w).await.unwrap();
    assert_eq!(a.name, "demo-control-plane-0");
    assert_eq!(a.state, "Running");
    assert_eq!(a.id.replace('-', ""), cp.id, "domain UUID = instance id");
    assert!(
        a.address.is_some(),
        "test driver fabricates a lease address"
    );
    assert_eq!(
        a.tags.get(TAG_ROLE).map(String::as_str),
        Some("control-plane")
    );
    // another cluster on the same connection is invisible to demo
    let other = req("demo2", "nodes", 0, Role::Node, Arch::Amd64);
    cloud.ensure_network(&net_req("demo2")).await.unwrap();
    cloud.create_instance(&other).await.unwrap();

    let list = cloud.list_instances("demo").await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["demo-control-plane-0", "demo-nodes-0"]
    );
    assert_eq!(list[1].instance_group(), Some("nodes"));
    assert_eq!(list[1].index(), Some(0));
    assert_eq!(
        list[1].tags.get(TAG_SPEC_HASH).map(String::as_str),
        Some("h1")
    );

    // idempotent re-create: same domain, no duplicate
    let again = cloud.create_instance(&w).await.unwrap();
    assert_eq!(again.id, b.id);
    assert_eq!(cloud.list_instances("demo").await.unwrap().len(), 2);

    let res = cloud.list_resources("demo").await.unwrap();
    let count = |k: ResourceKind| res.iter().filter(|r| r.kind == k).count();
    assert_eq!(count(ResourceKind::Instance), 2);
    assert_eq!(count(ResourceKind::StoragePool), 1);
    assert_eq!(count(ResourceKind::Network), 1);
    let vols: Vec<&str> = res
        .iter()
        .filter(|r| r.kind == ResourceKind::Volume)
        .map(|r| r.name.as_str())
        .collect();
    assert!(
        vols.iter().all(|v| v.starts_with("kprov.demo.")),
        "{vols:?}"
    );
    assert!(
        vols.contains(&"kprov.demo.demo-nodes-0.root.qcow2"),
        "{vols:?}"
    );
    assert!(
        vols.contains(&"kprov.demo.demo-nodes-0.seed.iso"),
        "{vols:?}"
    );
    assert_eq!(
        vols.iter()
            .filter(|v| v.contains(".base-amd64-") && v.ends_with(".qcow2"))
            .count(),
        1,
        "base uploaded once: {vols:?}"
    );
    assert_eq!(vols.len(), 6, "{vols:?}");

    delete_all(&cloud, "demo").await;
    assert!(cloud.list_resources("demo").await.unwrap().is_empty());
    assert!(cloud.list_instances("demo").await.unwrap().is_empty());
    // deleting again (all gone) succeeds
    for r in &res {
        cloud.delete_resource(r).await.unwrap();
    }
    // demo2 untouched
    assert_eq!(cloud.list_instances("demo2").await.unwrap().len(), 1);
    delete_all(&cloud, "demo2").await;
    assert!(cloud.list_resources("demo2").await.unwrap().is_empty());
}

#[tokio::test]
async fn user_mode_network_is_restricted_to_loopback_forwards() {
    let e = env();
    let forwards = BTreeMap::from([(8080u16, 41234u16), (5000, 41235)]);
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::User { forwards },
    ))
    .unwrap();
    let net = cloud.ensure_network(&net_req("u")).await.unwrap();
    assert!(!net.owned);
    let r = req("u", "control-plane", 0, Role::ControlPlane, Arch::Amd64);
    let i = cloud.create_instance(&r).await.unwrap();
    assert_eq!(i.address.as_deref(), Some("10.0.2.15"));
    let xml = cloud.render_domain_xml(&r).await.unwrap();
    assert!(xml.contains("user,id=kprovnet,restrict=on"), "{xml}");
    assert!(
        xml.contains("guestfwd=tcp:10.0.2.100:8080-cmd:nc 127.0.0.1 41234"),
        "{xml}"
    );
    assert!(
        xml.contains("guestfwd=tcp:10.0.2.100:5000-cmd:nc 127.0.0.1 41235"),
        "{xml}"
    );
    assert!(!xml.contains("hostfwd"), "no inbound forwards: {xml}");
    assert!(xml.contains("bus=pci.0,addr=0x10"), "{xml}");
    assert!(!xml.contains("<interface"), "{xml}");
    let res = cloud.list_resources("u").await.unwrap();
    assert!(
        res.iter().all(|r| r.kind != ResourceKind::Network),
        "user mode owns no network"
    );
    delete_all(&cloud, "u").await;
    assert!(cloud.list_resources("u").await.unwrap().is_empty());
}

#[tokio::test]
async fn arch_specific_domain_xml() {
    let e = env();
    let r = req("arch", "arm", 0, Role::Node, Arch::Arm64);
    let p = DomainParams {
        req: &r,
        domain_type: "qemu".into(),
        machine_x86: "pc".into(),
        pool: "kprov.demo".into(),
        root_volume: "kprov.demo.demo-arm-0.root.qcow2".into(),
        seed_volume: "kprov.demo.demo-arm-0.seed.iso".into(),
        direct_boot: Some((
            "/p/vmlinuz".into(),
            "/p/initrd".into(),
            "root=LABEL=root console=ttyAMA0".into(),
        )),
        nic: Nic::Network("kprov.demo".into()),
        hostdevs: vec![],
        console_log: Some("/p/log".into()),
    };
    let arm = to_xml(&domain_xml(&p).unwrap()).unwrap();
    for want in [
        "<domain type=\"qemu\">",
        "<type arch=\"aarch64\" machine=\"virt\">hvm</type>",
        "<kernel>/p/vmlinuz</kernel>",
        "<cmdline>root=LABEL=root console=ttyAMA0</cmdline>",
        "<gic version=\"3\"/>",
        "<model fallback=\"forbid\">cortex-a57</model>",
        "<controller type=\"scsi\" model=\"virtio-scsi\"/>",
        "<target dev=\"sda\" bus=\"scsi\"/>",
        "<source pool=\"kprov.demo\" volume=\"kprov.demo.demo-arm-0.root.qcow2\"/>",
        "<vcpu>2</vcpu>",
        "<memory unit=\"MiB\">2048</memory>",
        "xmlns:kprov=\"https://kprov.io/xmlns/libvirt/1\"",
    ] {
        assert!(arm.contains(want), "missing {want} in\n{arm}");
    }
    assert!(!arm.contains("<acpi/>"), "no ACPI without UEFI on aarch64");
    // aarch64 without direct boot: UEFI
    let uefi = to_xml(
        &domain_xml(&DomainParams {
            direct_boot: None,
            ..p.clone()
        })
        .unwrap(),
    )
    .unwrap();
    assert!(
        uefi.contains("<os firmware=\"efi\">") && uefi.contains("<acpi/>"),
        "{uefi}"
    );
    // x86_64 kvm on pc: disk boot, IDE seed, host CPU
    let rx = req("arch", "x", 0, Role::Node, Arch::Amd64);
    let x86 = to_xml(
        &domain_xml(&DomainParams {
            req: &rx,
            domain_type: "kvm".into(),
            direct_boot: None,
            ..p.clone()
        })
        .unwrap(),
    )
    .unwrap();
    for want in [
        "<domain type=\"kvm\">",
        "machine=\"pc\"",
        "<boot dev=\"hd\"/>",
        "<target dev=\"hdc\" bus=\"ide\"/>",
        "<cpu mode=\"host-passthrough\"/>",
        "<acpi/>",
    ] {
        assert!(x86.contains(want), "missing {want} in\n{x86}");
    }
    // q35: seed on virtio-scsi
    let q35 = to_xml(
        &domain_xml(&DomainParams {
            req: &rx,
            machine_x86: "q35".into(),
            direct_boot: None,
            ..p.clone()
        })
        .unwrap(),
    )
    .unwrap();
    assert!(q35.contains("<target dev=\"sda\" bus=\"scsi\"/>"), "{q35}");

    // the test driver accepts and keeps both arches (define + start + dumpxml)
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Nat { cidr: None },
    ))
    .unwrap();
    cloud.ensure_network(&net_req("arch")).await.unwrap();
    cloud.create_instance(&r).await.unwrap();
    cloud.create_instance(&rx).await.unwrap();
    let res = cloud.list_resources("arch").await.unwrap();
    let vols: Vec<&str> = res
        .iter()
        .filter(|r| r.kind == ResourceKind::Volume)
        .map(|r| r.name.as_str())
        .collect();
    assert!(
        vols.iter()
            .any(|v| v.contains(".base-arm64-") && v.ends_with(".vmlinuz")),
        "kernel uploaded as a volume: {vols:?}"
    );
    assert!(
        vols.iter()
            .any(|v| v.contains(".base-arm64-") && v.ends_with(".initrd")),
        "{vols:?}"
    );
    assert_eq!(cloud.list_instances("arch").await.unwrap().len(), 2);
    delete_all(&cloud, "arch").await;
    assert!(cloud.list_resources("arch").await.unwrap().is_empty());
    // auto domain type on the test driver is "test"
    let _ = DomainType::Auto;
}

fn fixture_uri(p: &Path) -> String {
    format!("test://{}", p.display())
}

#[tokio::test]
async fn gpu_passthrough_from_host_pci_devices() {
    let e = env();
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        fixture_uri(&e.fixture),
        NetworkMode::Nat { cidr: None },
    ))
    .unwrap();
    let inv = cloud.discover().await.unwrap();
    let a100: Vec<_> = inv
        .gpus
        .iter()
        .filter(|g| g.model.contains("A100"))
        .collect();
    assert_eq!(a100.len(), 2, "{:?}", inv.gpus);
    assert!(a100.iter().all(|g| g.attached_to.is_none()));

    let gpu = |count| GpuRequest {
        count,
        vendor: Some("nvidia".into()),
        model: Some("A100".into()),
        mode: GpuMode::Passthrough,
    };
    let mut w0 = req("g", "gpu", 0, Role::Node, Arch::Amd64);
    w0.gpu = Some(gpu(1));
    let mut w1 = req("g", "gpu", 1, Role::Node, Arch::Amd64);
    w1.gpu = Some(gpu(1));
    let mut w2 = req("g", "gpu", 2, Role::Node, Arch::Amd64);
    w2.gpu = Some(gpu(1));
    // plan time: 3 × 1 A100 on a host with 2 → one problem naming the group
    let problems = cloud
        .check(&[w0.clone(), w1.clone(), w2.clone()])
        .await
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].instance_group, "gpu");
    assert!(
        problems[0]
            .problem
            .contains("1 instance(s) cannot get 1 free matching PCI device"),
        "{problems:?}"
    );
    assert!(cloud
        .check(&[w0.clone(), w1.clone()])
        .await
        .unwrap()
        .is_empty());
    // the Intel NIC never matches an nvidia filter
    let mut big = w0.clone();
    big.gpu = Some(gpu(3));
    assert_eq!(cloud.check(&[big]).await.unwrap().len(), 1);

    cloud.ensure_network(&net_req("g")).await.unwrap();
    cloud.create_instance(&w0).await.unwrap();
    cloud.create_instance(&w1).await.unwrap();
    // both devices are now taken by g's domains; the check of the same desired set still passes
    assert!(cloud
        .check(&[w0.clone(), w1.clone()])
        .await
        .unwrap()
        .is_empty());
    let inv = cloud.discover().await.unwrap();
    let mut attached: Vec<_> = inv
        .gpus
        .iter()
        .filter_map(|g| g.attached_to.clone())
        .collect();
    attached.sort();
    assert_eq!(attached, ["g-gpu-0", "g-gpu-1"]);
    // a third GPU node fails cleanly at create time too
    let err = cloud.create_instance(&w2).await.unwrap_err();
    assert!(
        err.to_string().contains("not enough free PCI devices"),
        "{err}"
    );
    assert_eq!(cloud.list_instances("g").await.unwrap().len(), 2);
    // and another cluster's check sees them as used
    let mut o = req("other", "gpu", 0, Role::Node, Arch::Amd64);
    o.gpu = Some(gpu(1));
    assert_eq!(cloud.check(&[o]).await.unwrap().len(), 1);

    delete_all(&cloud, "g").await;
    assert!(cloud.list_resources("g").await.unwrap().is_empty());
    assert!(cloud
        .discover()
        .await
        .unwrap()
        .gpus
        .iter()
        .all(|g| g.attached_to.is_none()));
}

#[tokio::test]
async fn hostdev_xml_is_managed_pci_passthrough() {
    let r = req("demo", "gpu", 0, Role::Node, Arch::Amd64);
    let p = DomainParams {
        req: &r,
        domain_type: "kvm".into(),
        machine_x86: "q35".into(),
        pool: "p".into(),
        root_volume: "r".into(),
        seed_volume: "s".into(),
        direct_boot: None,
        nic: Nic::Network("n".into()),
        hostdevs: vec![PciAddress::new(0, 0x3b, 0, 0)],
        console_log: None,
    };
    let x = to_xml(&domain_xml(&p).unwrap()).unwrap();
    assert!(
        x.contains("<hostdev mode=\"subsystem\" type=\"pci\" managed=\"yes\">"),
        "{x}"
    );
    assert!(
        x.contains("<address domain=\"0x0000\" bus=\"0x3b\" slot=\"0x00\" function=\"0x0\"/>"),
        "{x}"
    );
}

#[tokio::test]
async fn plan_time_checks_name_the_missing_image_and_flavors() {
    let e = env();
    let mut c = cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Nat { cidr: None },
    );
    c.images.remove(&Arch::Arm64);
    c.images.insert(
        Arch::Amd64,
        BaseImage {
            path: "/nonexistent/base.qcow2".into(),
            direct_boot: None,
        },
    );
    let cloud = LibvirtCloud::connect(c).unwrap();
    let mut flav = req("c", "nodes", 0, Role::Node, Arch::Amd64);
    flav.size = MachineSize::Flavor("m1.large".into());
    let arm = req("c", "arm", 0, Role::Node, Arch::Arm64);
    let problems = cloud.check(&[flav, arm]).await.unwrap();
    let text = format!("{problems:?}");
    assert!(text.contains("flavor name"), "{text}");
    assert!(text.contains("/nonexistent/base.qcow2"), "{text}");
    assert!(text.contains("no base image for arm64"), "{text}");
}

#[tokio::test]
async fn crashed_leftovers_are_found_and_a_rerun_does_not_duplicate() {
    // A run that died after uploading volumes but before defining the domain leaves volumes
    // only; a run that died after define but before start leaves a stopped domain.
    let e = env();
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Nat { cidr: None },
    ))
    .unwrap();
    cloud.ensure_network(&net_req("k")).await.unwrap();
    let r = req("k", "nodes", 0, Role::Node, Arch::Amd64);
    let first = cloud.create_instance(&r).await.unwrap();
    // stop it behind kprov's back, as if the start never happened
    let stopped = Resource {
        kind: ResourceKind::Instance,
        id: first.id.clone(),
        name: first.name.clone(),
        tags: BTreeMap::new(),
    };
    // (delete + re-create through the same code path checks leftovers of both kinds)
    cloud.delete_resource(&stopped).await.unwrap();
    let leftovers = cloud.list_resources("k").await.unwrap();
    assert!(
        leftovers.iter().any(|r| r.name.ends_with(".root.qcow2")),
        "volumes remain after the domain: {leftovers:?}"
    );
    let again = cloud.create_instance(&r).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(cloud.list_instances("k").await.unwrap().len(), 1);
    delete_all(&cloud, "k").await;
    assert!(cloud.list_resources("k").await.unwrap().is_empty());
}

#[test]
fn seed_iso_reads_back_with_an_iso_tool() {
    let Some(xorriso) = which("xorriso") else {
        let msg = "test peer `xorriso` is missing; install the test peers with `bash tests/peers/install.sh`";
        if std::env::var("KPROV_SKIP_PEERS").is_ok_and(|v| v == "1") {
            eprintln!("\n!!!!! SKIPPED seed_iso_reads_back_with_an_iso_tool: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
            return;
        }
        panic!("{msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    };
    let dir = tempfile::tempdir().unwrap();
    let iso = kprov_providers::libvirt::seed::build_seed_iso(
        b"#cloud-config\nhostname: n1\n",
        &kprov_providers::libvirt::seed::meta_data("iid-1", "n1"),
    )
    .unwrap();
    let path = dir.path().join("seed.iso");
    std::fs::write(&path, &iso).unwrap();
    let out = std::process::Command::new(&xorriso)
        .args(["-indev"])
        .arg(&path)
        .args([
            "-pvd_info",
            "-find",
            "/",
            "-exec",
            "lsdl",
            "--",
            "-osirrox",
            "on",
            "-extract",
            "/user-data",
        ])
        .arg(dir.path().join("ud"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Volume Id    : cidata"), "{text}");
    assert!(
        text.contains("/user-data") && text.contains("/meta-data"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ud")).unwrap(),
        "#cloud-config\nhostname: n1\n"
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn vip_req(cluster: &str, address: Option<&str>) -> EndpointRequest {
    EndpointRequest {
        cluster: cluster.into(),
        tags: BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.to_string())]),
        port: 6443,
        address: address.map(str::to_string),
        kind: "kube-vip".into(),
    }
}

/// The DHCP `<host>` entries of a network, as libvirt holds them (`name ip` each).
fn dhcp_hosts(network: &str) -> Vec<String> {
    let conn = virt::connect::Connect::open(Some("test:///default")).expect("open");
    let xml = conn
        .lookup_network_by_name(network)
        .expect("network")
        .xml_desc(0)
        .expect("xml");
    drop(conn);
    xml.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("<host "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_kube_vip_address_is_reserved_outside_the_dhcp_range_found_again_and_deleted() {
    let e = env();
    let cloud = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Nat {
            cidr: Some("192.168.177.0/24".into()),
        },
    ))
    .unwrap();
    let (c, net) = ("vipdemo", "kprov.vipdemo");
    // before the network exists there is nothing to check yet, and no endpoint
    assert!(cloud
        .check_control_plane_endpoint(&vip_req(c, None))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(cloud.control_plane_endpoint(c).await.unwrap(), None);
    cloud.ensure_network(&net_req(c)).await.unwrap();
    // an address inside kprov's DHCP range (.2-.199) is refused at plan time, naming it
    let p = cloud
        .check_control_plane_endpoint(&vip_req(c, Some("192.168.177.50")))
        .await
        .unwrap();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].problem
            .contains("192.168.177.50 is inside the DHCP range 192.168.177.2-192.168.177.199"),
        "{p:?}"
    );
    let err = cloud
        .ensure_control_plane_endpoint(&vip_req(c, Some("192.168.177.50")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("inside the DHCP range"), "{err}");
    assert!(dhcp_hosts(net).is_empty(), "nothing reserved by a refusal");
    // the default: the highest free address outside the range, reserved once
    let ep = cloud
        .ensure_control_plane_endpoint(&vip_req(c, None))
        .await
        .unwrap();
    assert_eq!(ep, "192.168.177.254:6443");
    assert_eq!(
        dhcp_hosts(net),
        ["<host name='kprov-vipdemo-api' ip='192.168.177.254'/>"]
    );
    assert_eq!(
        cloud
            .ensure_control_plane_endpoint(&vip_req(c, None))
            .await
            .unwrap(),
        ep
    );
    assert_eq!(
        dhcp_hosts(net).len(),
        1,
        "a second ensure reserves nothing new"
    );
    assert_eq!(
        cloud.control_plane_endpoint(c).await.unwrap().as_deref(),
        Some("192.168.177.254")
    );
    // a second cluster's VIP on the same network (an existing network shared by both) skips it
    let shared = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::Existing(net.into()),
    ))
    .unwrap();
    let taken = shared
        .check_control_plane_endpoint(&vip_req("other", Some("192.168.177.254")))
        .await
        .unwrap();
    assert!(
        taken[0]
            .problem
            .contains("already reserved in the network (host kprov-vipdemo-api)"),
        "{taken:?}"
    );
    assert_eq!(
        shared
            .ensure_control_plane_endpoint(&vip_req("other", None))
            .await
            .unwrap(),
        "192.168.177.253:6443"
    );
    // the reservation is a resource of each cluster; deleting one leaves the other's
    let res = shared.list_resources("other").await.unwrap();
    let vips: Vec<&Resource> = res.iter().filter(|r| r.kind == ResourceKind::Vip).collect();
    assert_eq!(vips.len(), 1, "{res:?}");
    assert!(
        res.iter().all(|r| r.kind != ResourceKind::Network),
        "not its network: {res:?}"
    );
    shared.delete_resource(vips[0]).await.unwrap();
    shared.delete_resource(vips[0]).await.unwrap(); // gone already: done
    assert_eq!(
        dhcp_hosts(net),
        ["<host name='kprov-vipdemo-api' ip='192.168.177.254'/>"]
    );
    assert_eq!(shared.control_plane_endpoint("other").await.unwrap(), None);
    // another kind, and user-mode networking, are refused with the fix
    let mut zstack = vip_req(c, None);
    zstack.kind = "zstack".into();
    let p = cloud.check_control_plane_endpoint(&zstack).await.unwrap();
    assert!(p[0].fix.contains("kube-vip"), "{p:?}");
    let user = LibvirtCloud::connect(cfg(
        &e,
        "test:///default".into(),
        NetworkMode::User {
            forwards: BTreeMap::new(),
        },
    ))
    .unwrap();
    let p = user
        .check_control_plane_endpoint(&vip_req(c, None))
        .await
        .unwrap();
    assert!(
        p[0].problem.contains("user-mode networking") && p[0].fix.contains("loadBalancer: none"),
        "{p:?}"
    );
    delete_all(&cloud, c).await;
    assert!(cloud.list_resources(c).await.unwrap().is_empty());
}
